"""A read-only front for Aim's web app: only requests known to be reads reach it.

``aim up --read-only`` refuses deleting and editing runs, but still creates tags, notes,
dashboards, reports, explore states and pinned metrics, and attaches tags to runs. This
ASGI middleware wraps Aim's app in the same process and lets a request through only when
its method and path are on the allow-list below; anything else gets 403 (404 outside the
base path). The list is Aim 3.29's own routes (``aim/web/api/**/views.py``) that read:

- ``GET``/``HEAD`` of the pages and static files (everything outside ``/api`` but
  FastAPI's generated docs), and of the API reads in :data:`READ_GETS`;
- ``POST`` only for the reads in :data:`READ_POSTS`, whose requests carry a list of runs,
  traces or URIs in the body because it would not fit a query string.

No ``PUT``, ``DELETE``, ``PATCH`` or ``OPTIONS`` at all, and no WebSocket. Aim answers
every origin's CORS requests; the front drops those headers, since the UI is served from
the same origin as its API and needs none, so no other web page open in the same browser
can read the repo through it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # starlette comes with Aim; ``sweeper ui`` imports this module without it
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SEGMENT = "[^/]+"  # a run hash, an experiment or tag id: one path segment, as Aim routes it
_SEQUENCES = "(?:images|texts|distributions|audios|figures)"  # Aim's object sequences
_BLOB_SEQUENCES = "(?:images|audios)"  # the ones whose records are fetched by URI

READ_GETS: tuple[str, ...] = (
    "/projects",
    "/projects/activity",
    "/projects/params",
    "/projects/pinned-sequences",
    "/experiments",
    "/experiments/search",
    "/experiments/{id}",
    "/experiments/{id}/runs",
    "/experiments/{id}/activity",
    "/experiments/{id}/note",
    "/experiments/{id}/note/{id}",
    "/runs/search/run",
    "/runs/search/metric",
    "/runs/search/{sequence}",
    "/runs/active",
    "/runs/{id}/info",
    "/runs/{id}/logs",
    "/runs/{id}/log-records",
    "/runs/{id}/note",
    "/runs/{id}/note/{id}",
    "/tags",
    "/tags/search",
    "/tags/{id}",
    "/tags/{id}/runs",
    "/apps",
    "/apps/{id}",
    "/dashboards",
    "/dashboards/{id}",
    "/reports",
    "/reports/{id}",
)
"""API paths (under ``/api``) that ``GET`` and ``HEAD`` may read: every ``GET`` route of
Aim 3.29's API. ``{id}`` is one path segment, ``{sequence}`` one of Aim's object sequences."""

READ_POSTS: dict[str, str] = {
    "/runs/search/metric/align": (
        "metrics explorer, x axis aligned by another metric: reads the named metrics of the "
        "listed runs (run_metric_custom_align_api)"
    ),
    "/runs/{id}/metric/get-batch": (
        "run page, metrics tab: reads the listed metrics of one run (run_metric_batch_api)"
    ),
    "/runs/{id}/{sequence}/get-batch": (
        "run page, images/texts/distributions/audios/figures tabs: reads the listed sequences "
        "of one run (sequence_batch_api)"
    ),
    "/runs/{id}/{sequence}/get-step": (
        "the same tabs, one step (the step slider): reads one step of the listed sequences "
        "(step_of_sequence)"
    ),
    "/runs/{blob_sequence}/get-batch": (
        "images and audios explorers: reads the blobs behind a list of URIs (blobs_batch_api)"
    ),
}
"""API paths that ``POST`` may reach, each a read whose body names what to read, and why
the UI needs it. No write route of Aim's ends in ``align``, ``get-batch`` or ``get-step``."""

_DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # FastAPI's, not the UI's


def _compile(templates: Iterable[str]) -> re.Pattern[str]:
    alternatives = []
    for template in templates:
        pattern = re.escape(template)
        for name, part in (
            ("id", _SEGMENT),
            ("sequence", _SEQUENCES),
            ("blob_sequence", _BLOB_SEQUENCES),
        ):
            pattern = pattern.replace(re.escape("{" + name + "}"), part)
        alternatives.append(pattern)
    return re.compile("/api(?:" + "|".join(alternatives) + ")/?")


_GET = _compile(READ_GETS)
_POST = _compile(READ_POSTS)


def is_read(method: str, path: str) -> bool:
    """Whether ``method`` on ``path`` (relative to the base path) only reads."""
    if method in ("GET", "HEAD"):
        if path == "/api" or path.startswith("/api/"):
            return _GET.fullmatch(path) is not None
        return path.rstrip("/") not in _DOCS
    if method == "POST":
        return _POST.fullmatch(path) is not None
    return False


def normalize_base_path(base_path: str) -> str:
    """``base_path`` the way ``aim up`` writes it: a leading slash, no trailing one."""
    base_path = base_path.strip().rstrip("/")
    return f"/{base_path}" if base_path and not base_path.startswith("/") else base_path


class ReadOnlyFront:
    """ASGI middleware: ``app`` (Aim's web app) sees only the requests that read.

    ``base_path`` is the prefix every page and API route of ``app`` is under; requests
    outside it get 404 and never reach ``app``.
    """

    def __init__(self, app: ASGIApp, base_path: str = "") -> None:
        self.app = app
        self.base_path = normalize_base_path(base_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.responses import JSONResponse

        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a WebSocket: Aim has none, and it is no read
            await send({"type": "websocket.close", "code": 1008})
            return
        path: str = scope["path"]
        method: str = scope["method"]
        base = self.base_path
        if base and path != base and not path.startswith(base + "/"):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        relative = path[len(base) :] or "/"
        if not is_read(method, relative):
            detail = f"this Aim UI is read-only: {method} {relative}"
            refusal = JSONResponse({"message": "read-only", "detail": detail}, status_code=403)
            await refusal(scope, receive, send)
            return

        async def same_origin_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if not name.lower().startswith(b"access-control-")
                    ],
                }
            await send(message)

        await self.app(scope, receive, same_origin_only)


def new_secret() -> str:
    """An unguessable path segment for the UI's public URL (a Modal tunnel): 192 bits."""
    return secrets.token_urlsafe(24)
