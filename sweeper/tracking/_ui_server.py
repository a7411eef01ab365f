"""The process behind :func:`sweeper.tracking._ui.aim_ui`: Aim's UI behind the read-only front.

It does what ``aim up --read-only`` does (upgrade the UI's database, index new runs and
track run status while it serves), except that uvicorn serves Aim's app wrapped in
:class:`~sweeper.tracking._readonly.ReadOnlyFront`, in the worker processes themselves:
there is no second, unguarded server behind a proxy that another local process could
reach. It logs errors only: no access log, no start-up line, since a path holds the secret
of a public URL.

``python -m sweeper.tracking._ui_server --repo PATH --host HOST --port PORT``, with the base
path (the secret) in the environment variable ``SWEEPER_UI_BASE_PATH``, where other users'
``ps`` does not show it; SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sweeper.tracking._readonly import ReadOnlyFront, normalize_base_path

if TYPE_CHECKING:
    from starlette.types import ASGIApp

BASE_PATH_VARIABLE = "SWEEPER_UI_BASE_PATH"
WORKERS = 2  # as ``aim up``: one long search does not hold up the page's other requests


def create_app() -> ASGIApp:
    """Aim's web app behind the front; uvicorn's factory, called in each worker process."""
    from aim.web.api import create_app as aim_app
    from aim.web.configs import AIM_UI_BASE_PATH

    app: ASGIApp = aim_app()  # type: ignore[no-untyped-call]
    return ReadOnlyFront(app, base_path=os.environ.get(AIM_UI_BASE_PATH, ""))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeper.tracking._ui_server")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn
    from aim.cli.utils import build_db_upgrade_command, exec_cmd, get_repo_instance
    from aim.sdk.index_manager import RepoIndexManager
    from aim.sdk.run_status_manager import RunStatusManager
    from aim.web.configs import (
        AIM_ENV_MODE_KEY,
        AIM_READ_ONLY_UI,
        AIM_UI_BASE_PATH,
        AIM_UI_MOUNTED_REPO_PATH,
    )

    # The workers read these, as Aim's app does under ``aim up``.
    os.environ[AIM_ENV_MODE_KEY] = "prod"
    os.environ[AIM_UI_BASE_PATH] = normalize_base_path(os.environ.pop(BASE_PATH_VARIABLE, ""))
    os.environ[AIM_READ_ONLY_UI] = "1"  # Aim's own refusals stay, behind ours
    repo = get_repo_instance(args.repo, True)  # upgrades a repo of an older Aim
    if repo is None:
        raise SystemExit(f"no Aim repo at {args.repo}")
    os.environ[AIM_UI_MOUNTED_REPO_PATH] = repo.path
    upgrade = build_db_upgrade_command()  # type: ignore[no-untyped-call]
    exec_cmd(upgrade, stream_output=True)  # type: ignore[no-untyped-call]  # the UI's tables
    # Both in daemon threads of this process, not of the workers.
    RepoIndexManager.get_index_manager(repo).start()
    RunStatusManager(repo).start()  # type: ignore[no-untyped-call]
    uvicorn.run(
        "sweeper.tracking._ui_server:create_app",  # not __name__: "__main__" here
        factory=True,
        host=args.host,
        port=args.port,
        workers=WORKERS,
        log_level="error",
        access_log=False,
    )


if __name__ == "__main__":
    main()
