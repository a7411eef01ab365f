"""The Aim UI sweeper serves is read-only: every write is refused, every page still reads.

Real servers (``aim_ui``, which ``python -m sweeper ui`` and the Modal tunnel serve) on a
real Aim repo made here with Aim's SDK, asked with a real HTTP client (urllib), with and
without a secret base path. The reads are the requests Aim's UI bundle (aim_ui 3.29, its
``services/api`` and ``modules/core/api``) makes when its pages open.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

aim = pytest.importorskip("aim")
from aim.sdk.index_manager import RepoIndexManager  # noqa: E402
from aim.storage.treeutils import decode_tree  # noqa: E402

from sweeper.tracking._readonly import READ_GETS, READ_POSTS, is_read, new_secret  # noqa: E402
from sweeper.tracking._ui import _stop, aim_ui, free_port  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SECRET = new_secret()
STUDY = "readonly"


@dataclass
class Repo:
    path: Path
    runs: list[str]  # the two trial runs' hashes; the first has a text and an image


@dataclass
class Served:
    base: str  # "" or "/SECRET"
    url: str  # the base URL, http://127.0.0.1:PORT/SECRET
    origin: str  # http://127.0.0.1:PORT
    repo: Repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Two runs the way sweeper writes trials: params, a learning curve, a state tag."""
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("ui") / "aim"
    path.mkdir()
    sdk_repo = aim.Repo.from_path(str(path), init=True)
    hashes = []
    for number, lr in enumerate((0.01, 0.1)):
        run = aim.Run(repo=sdk_repo, experiment=STUDY)
        run.name = f"trial {number}"
        run["hparams"] = {"lr": lr, "layers": number + 1}
        for step in range(5):
            run.track(1.0 / (step + 1) + lr, name="objective", step=step)
            run.track(float(step), name="epoch", step=step)
        if number == 0:
            run.track(aim.Text("a note the objective logged"), name="sample", step=0)
            pixels = np.full((4, 4, 3), 200, dtype=np.uint8)
            run.track(aim.Image(Image.fromarray(pixels)), name="picture", step=0)
        run.add_tag("complete")
        hashes.append(run.hash)
        run.close()
        RepoIndexManager.get_index_manager(sdk_repo).index(run.hash)  # aim 3.29 does not
    return Repo(path, hashes)


@pytest.fixture(scope="module", params=["", f"/{SECRET}"], ids=["no-base-path", "secret-path"])
def served(request: pytest.FixtureRequest, repo: Repo) -> Iterator[Served]:
    with aim_ui(repo.path, "127.0.0.1", 0, base_path=request.param) as url:
        origin = url[: len(url) - len(request.param)]
        yield Served(request.param, url, origin, repo)


def call(method: str, url: str, body: Any = None) -> tuple[int, bytes, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def read(served: Served, path: str, body: Any = None) -> bytes:
    """``path`` (under the base path) answered 200: GET, or POST with ``body``."""
    status, content, _ = call("GET" if body is None else "POST", served.url + path, body)
    assert status == 200, (path, status, content[:300])
    return content


def read_json(served: Served, path: str, body: Any = None) -> Any:
    return json.loads(read(served, path, body))


def read_stream(served: Served, path: str, body: Any = None) -> dict[str, Any]:
    """A streamed answer (runs, metrics, sequences, blobs), decoded as Aim's UI does."""
    content, pairs, at = read(served, path, body), [], 0
    while at < len(content):
        item = []
        for _ in range(2):
            (size,) = struct.unpack_from("I", content, at)
            item.append(content[at + 4 : at + 4 + size])
            at += 4 + size
        pairs.append(tuple(item))
    tree: dict[str, Any] = decode_tree(iter(pairs))
    return {key: value for key, value in tree.items() if not key.startswith("progress_")}


# -- writes ----------------------------------------------------------------------------------

RUN = "{run}"
WRITES: list[tuple[str, str, Any]] = [
    # The five that `aim up --read-only` answers 200/201 (measured; see the canary below).
    ("POST", "/api/tags/", {"name": "injected", "color": "#ff0000"}),
    ("POST", f"/api/runs/{RUN}/tags/new/", {"tag_name": "injected"}),
    ("POST", "/api/dashboards/", {"name": "injected"}),
    ("POST", "/api/reports/", {"name": "injected", "code": "print(1)"}),
    ("POST", f"/api/runs/{RUN}/note/", {"content": "injected"}),
    # The same, as Aim's UI sends them: without the trailing slash.
    ("POST", "/api/tags", {"name": "injected"}),
    ("POST", f"/api/runs/{RUN}/note", {"content": "injected"}),
    # What Aim's own read-only flag refuses too.
    ("DELETE", f"/api/runs/{RUN}/", None),
    ("PUT", f"/api/runs/{RUN}/", {"name": "renamed", "archived": True}),
    ("POST", "/api/runs/delete-batch/", [RUN]),
    ("POST", "/api/runs/archive-batch/?archive=true", [RUN]),
    # Other writes of Aim's API.
    ("POST", "/api/apps/", {"type": "metrics", "state": {}}),
    ("POST", "/api/experiments/", {"name": "injected"}),
    ("POST", "/api/projects/pinned-sequences/", {"sequences": [{"name": "x", "context": {}}]}),
    ("PUT", "/api/tags/{tag}/", {"name": "renamed"}),
    ("DELETE", "/api/tags/{tag}/", None),
    ("DELETE", f"/api/runs/{RUN}/tags/{{tag}}/", None),
    ("PUT", "/api/experiments/{experiment}/", {"name": "renamed"}),
    ("POST", "/api/experiments/{experiment}/note/", {"content": "injected"}),
    # Methods no read uses, on paths that read.
    ("PATCH", f"/api/runs/{RUN}/", {"name": "renamed"}),
    ("OPTIONS", "/api/runs/search/run/", None),  # a CORS preflight
    ("PUT", "/", None),
    ("POST", "/api/runs/search/run/", None),
]


def _ids(served: Served) -> dict[str, str]:
    tags = read_json(served, "/api/tags/")
    experiments = read_json(served, "/api/experiments/")
    return {
        "run": served.repo.runs[0],
        "tag": next(t["id"] for t in tags if t["name"] == "complete"),
        "experiment": next(e["id"] for e in experiments if e["name"] == STUDY),
    }


@pytest.mark.parametrize(
    ("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES]
)
def test_a_write_is_refused(served: Served, method: str, path: str, body: Any) -> None:
    ids = _ids(served)
    path = path.format(**ids)
    body = json.loads(json.dumps(body).replace(RUN, ids["run"])) if body is not None else None
    status, content, headers = call(method, served.url + path, body)
    assert status == 403, (status, content[:300])
    assert len(content) < 200
    refusal = json.loads(content)  # the UI reads a refusal's body as JSON
    assert refusal["message"] == "read-only"
    assert SECRET not in refusal["detail"]
    assert not any(name.lower().startswith("access-control-") for name in headers)


def _state(served: Served) -> dict[str, Any]:
    """Everything the writes above would change, as the API reads it."""
    run = served.repo.runs[0]
    info = read_json(served, f"/api/runs/{run}/info/")
    experiments = read_json(served, "/api/experiments/")
    return {
        "tags": sorted(t["name"] for t in read_json(served, "/api/tags/")),
        "dashboards": read_json(served, "/api/dashboards/"),
        "reports": read_json(served, "/api/reports/"),
        "apps": read_json(served, "/api/apps/"),
        "notes": read_json(served, f"/api/runs/{run}/note/"),
        "pinned": read_json(served, "/api/projects/pinned-sequences/"),
        "experiments": sorted((e["name"], e["run_count"]) for e in experiments),
        "run": {k: info["props"][k] for k in ("name", "archived", "tags")},
    }


def test_the_repo_is_as_it_was_after_every_write(served: Served) -> None:
    before = _state(served)
    for method, path, body in WRITES:
        ids = _ids(served)
        filled = json.loads(json.dumps(body).replace(RUN, ids["run"])) if body else body
        call(method, served.url + path.format(**ids), filled)
    assert _state(served) == before
    assert before["tags"] == ["complete"]
    assert before["dashboards"] == before["reports"] == before["notes"] == []
    assert before["run"]["name"] == "trial 0" and not before["run"]["archived"]
    assert read_stream(served, "/api/runs/search/run/?q=").keys() == set(served.repo.runs)


def test_outside_the_base_path_nothing_is_found(served: Served) -> None:
    if not served.base:
        pytest.skip("no base path")
    for method, path in [
        ("GET", "/"),
        ("GET", "/api/projects/"),
        ("GET", "/static-files/favicon.ico"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/api/tags/"),
        ("DELETE", f"/api/runs/{served.repo.runs[0]}/"),
        ("GET", f"/{SECRET[:-1]}/api/projects/"),  # a near miss
        ("GET", f"/{SECRET}x/api/projects/"),  # a prefix that is not the segment
    ]:
        status, _, _ = call(method, served.origin + path, {} if method == "POST" else None)
        assert status == 404, (method, path, status)


def test_generated_docs_are_not_served(served: Served) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/api/docs", "/api/openapi.json"):
        status, _, _ = call("GET", served.url + path)
        assert status == 403, (path, status)


# -- reads -----------------------------------------------------------------------------------


def test_the_entry_page_and_every_asset_load(served: Served) -> None:
    status, html, headers = call("GET", served.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = html.decode()
    assert f'window.API_BASE_PATH="{served.base}"' in page
    assets = set(re.findall(r'(?:src|href)="([^"]+/static-files/[^"]+)"', page))
    manifest = read_json(served, "/static-files/asset-manifest.json")
    assets |= {
        served.base + file
        for file in manifest["files"].values()
        if file.split("?")[0].endswith((".js", ".css"))
    }
    assert any("/static/js/main.js" in a for a in assets) and len(assets) > 50
    for asset in sorted(assets):
        assert asset.startswith(f"{served.base}/static-files/"), asset
        status, content, _ = call("GET", served.origin + asset)
        assert status == 200 and content, (asset, status)
    # The page routes of the single-page app answer with the same page.
    for route in ("/runs", "/metrics", "/params", f"/runs/{served.repo.runs[0]}", "/tags"):
        status, content, _ = call("GET", served.url + route)
        assert status == 200 and b"static/js/main.js" in content, route
    status, _, _ = call("HEAD", served.url + "/")
    assert status != 403  # let through (Aim answers HEAD on its GET routes with 405)


def test_the_runs_explorer_reads(served: Served) -> None:
    # Every page: the project and the metrics pinned on run pages.
    assert read_json(served, "/api/projects/")["path"] == str(served.repo.path)
    assert read_json(served, "/api/projects/pinned-sequences/") == {"sequences": []}
    assert read_json(served, "/api/projects/activity/")["num_runs"] == 2
    # Its query box suggestions, then the table.
    params = read_json(served, "/api/projects/params/?sequence=metric")
    assert set(params["params"]["hparams"]) == {"lr", "layers"}
    assert "objective" in params["metric"]
    runs = read_stream(served, "/api/runs/search/run/?q=&limit=45")
    assert runs.keys() == set(served.repo.runs)
    first = runs[served.repo.runs[0]]
    assert first["params"]["hparams"] == {"lr": 0.01, "layers": 1}
    assert [t["name"] for t in first["props"]["tags"]] == ["complete"]
    # The home page and the tags page.
    assert [e["run_count"] for e in read_json(served, "/api/experiments/") if e["name"] == STUDY]
    assert [t["name"] for t in read_json(served, "/api/tags/")] == ["complete"]


def test_the_run_page_reads(served: Served) -> None:
    run = served.repo.runs[0]
    info = read_json(served, f"/api/runs/{run}/info/")
    assert info["params"]["hparams"] == {"lr": 0.01, "layers": 1}
    metrics = {t["name"] for t in info["traces"]["metric"]}
    assert {m for m in metrics if not m.startswith("__system__")} == {"objective", "epoch"}
    experiment = info["props"]["experiment"]["id"]
    assert read_json(served, "/api/experiments/")
    assert read_json(served, f"/api/experiments/{experiment}/runs/?limit=10")["runs"]
    # Metrics tab: the learning curve, by POST (the traces are a list in the body).
    batch = read_json(
        served, f"/api/runs/{run}/metric/get-batch", [{"name": "objective", "context": {}}]
    )
    (curve,) = batch
    assert curve["name"] == "objective"
    # Texts tab and its step slider.
    texts = read_stream(
        served, f"/api/runs/{run}/texts/get-batch/", [{"name": "sample", "context": {}}]
    )
    assert "a note the objective logged" in json.dumps(texts, default=str)
    step = read_stream(
        served,
        f"/api/runs/{run}/texts/get-step/?record_step=0",
        [{"name": "sample", "context": {}}],
    )
    assert "a note the objective logged" in json.dumps(step, default=str)
    # Notes, logs and log records tabs (empty here, but answered).
    assert read_json(served, f"/api/runs/{run}/note/") == []
    read(served, f"/api/runs/{run}/logs/?record_range=")
    read(served, f"/api/runs/{run}/log-records/")
    read(served, "/api/runs/active/")  # none running: only progress


def test_the_metrics_explorer_reads(served: Served) -> None:
    query = urllib.parse.quote('((metric.name == "objective"))')
    found = read_stream(served, f"/api/runs/search/metric/?q={query}&p=50")
    assert found.keys() == set(served.repo.runs)
    (trace,) = found[served.repo.runs[1]]["traces"]
    assert trace["name"] == "objective"
    # Aligning the x axis by another metric: the runs and traces go in the body.
    body = {
        "align_by": "epoch",
        "runs": [
            {"run_id": run, "traces": [{"name": "objective", "context": {}, "slice": [0, 5, 1]}]}
            for run in served.repo.runs
        ],
    }
    aligned = read_stream(served, "/api/runs/search/metric/align/", body)
    assert aligned.keys() == set(served.repo.runs)


def test_the_params_explorer_reads(served: Served) -> None:
    read_json(served, "/api/projects/params/?sequence=metric")
    query = urllib.parse.quote("run.hparams.lr > 0.05")
    found = read_stream(served, f"/api/runs/search/run/?q={query}")
    assert found.keys() == {served.repo.runs[1]}
    assert found[served.repo.runs[1]]["params"]["hparams"]["lr"] == 0.1


def test_the_images_explorer_reads(served: Served) -> None:
    found = read_stream(served, "/api/runs/search/images/?q=")
    (trace,) = found[served.repo.runs[0]]["traces"]
    uri = trace["values"][0][0]["blob_uri"]
    blobs = read_stream(served, "/api/runs/images/get-batch", [uri])  # the pixels, by POST
    assert blobs.keys() == {uri}


# -- the list itself, against Aim's routes ---------------------------------------------------


def _aims_routes() -> list[tuple[str, str, str]]:
    """(method, path, operation) for every route of Aim's API, from its OpenAPI schema."""
    from aim.web.api import create_app

    (api,) = [r for r in create_app().routes if getattr(r, "path", None) == "/api"]
    routes = []
    for path, operations in api.app.openapi()["paths"].items():
        for method, operation in operations.items():
            routes.append((method.upper(), path, operation["operationId"]))
    return routes


READ_POST_ENDPOINTS = {
    "run_metric_custom_align_api",
    "run_metric_batch_api",
    "sequence_batch_api",
    "step_of_sequence",
    "blobs_batch_api",
}


def test_every_route_of_aims_api_is_classified() -> None:
    """GETs are reads, and reach Aim; of the rest only the read POSTs do, for every route."""
    routes = _aims_routes()
    assert len(routes) > 60
    allowed_posts = set()
    for method, path, operation in routes:
        sample = "/api" + re.sub(r"\{[^}]+\}", "abc123", path)
        reads = method == "GET" or (
            method == "POST" and any(operation.startswith(e + "_") for e in READ_POST_ENDPOINTS)
        )
        assert is_read(method, sample) is reads, (method, path, operation)
        assert is_read(method, sample + "/") is reads, (method, path, operation)
        if method == "GET":
            assert is_read("HEAD", sample), path
        elif reads:
            allowed_posts.add(operation)
    # Each read POST of the list is one of Aim's routes (five per media sequence and so on).
    assert {e for e in READ_POST_ENDPOINTS if any(o.startswith(e) for o in allowed_posts)} == (
        READ_POST_ENDPOINTS
    )
    assert len(READ_GETS) == len(set(READ_GETS)) and len(READ_POSTS) == 5


def test_the_allow_list_by_hand() -> None:
    assert is_read("GET", "/")
    assert is_read("GET", "/runs/abc")
    assert is_read("GET", "/static-files/static/js/main.js")
    assert is_read("POST", "/api/runs/abc/metric/get-batch")
    assert is_read("POST", "/api/runs/images/get-batch/")
    for method, path in [
        ("POST", "/"),
        ("POST", "/api/runs/abc/tags/new"),
        ("POST", "/api/runs/search/metric/align/extra"),
        ("POST", "/api/runs/a/b/metric/get-batch"),  # a run id is one segment
        ("POST", "/api/runs/abc/metrics/get-batch"),  # no such sequence
        ("POST", "/api/runs/texts/get-batch"),  # texts come with their records, not by URI
        ("GET", "/api/runs/abc/unknown"),
        ("GET", "/api"),
        ("GET", "/api/"),
        ("GET", "/docs/"),
        ("delete", "/api/runs/abc/"),
        ("TRACE", "/"),
    ]:
        assert not is_read(method, path), (method, path)


# -- the secret ------------------------------------------------------------------------------


def test_the_url_secret_has_at_least_128_bits() -> None:
    drawn = {new_secret() for _ in range(1000)}
    assert len(drawn) == 1000
    for secret in drawn:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret), secret  # one URL path segment
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) * 8 >= 128, secret  # token_urlsafe(24): 192 bits from `secrets`


def test_the_server_does_not_print_or_expose_the_secret(served: Served) -> None:
    """The URL is shown once, by whoever calls ``aim_ui``: the server itself never writes the
    secret to its output (no start-up line, no access log), nor shows it in ``ps``."""
    if not served.base:
        pytest.skip("no base path")
    psutil = pytest.importorskip("psutil")
    call("GET", served.url + "/api/projects/")
    call("POST", served.url + "/api/tags/", {"name": "injected"})
    call("GET", served.origin + "/nothing-here")
    port = served.origin.rsplit(":", 1)[1]
    (server,) = [
        p
        for p in psutil.Process().children(recursive=True)
        if "sweeper.tracking._ui_server" in p.cmdline() and port in p.cmdline()
    ]
    assert SECRET not in " ".join(server.cmdline())
    for fd in (1, 2):
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/{server.pid}/fd/{fd}", "rb") as out,
        ):
            assert SECRET.encode() not in out.read()


# -- the canary: what these requests do without the front ------------------------------------


def test_without_the_front_aims_read_only_flag_lets_these_writes_through(
    repo: Repo, tmp_path: Path
) -> None:
    """The five writes above, sent to plain ``aim up --read-only`` on a copy of the repo, do
    write: the refusals above are the front's, not the requests' fault."""
    copy = tmp_path / "aim"
    shutil.copytree(repo.path, copy)
    port = free_port("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}/{SECRET}"
    aim_up = "import sys; from aim.cli.cli import cli_entry_point; sys.exit(cli_entry_point())"
    options = ["--host", "127.0.0.1", "--port", str(port), "--base-path", f"/{SECRET}"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            aim_up,
            "up",
            "--repo",
            str(copy),
            *options,
            "--read-only",
            "--yes",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                if call("GET", base + "/api/projects/")[0] == 200:
                    break
            assert process.poll() is None
            time.sleep(0.25)
        run = repo.runs[0]
        answers = [call(m, base + p.replace(RUN, run), b)[0] for m, p, b in WRITES[:5]]
        assert answers == [200, 200, 201, 201, 201]
        assert call("DELETE", base + f"/api/runs/{run}/")[0] == 403  # Aim's own flag
    finally:
        _stop(process)
