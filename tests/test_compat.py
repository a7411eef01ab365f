"""Plain Optuna files, unmodified, swept with only ``-n`` and ``-p``.

Every file in ``tests/compat/`` is an ordinary Optuna script in a style people copy from
Optuna's documentation and examples (each says which in its docstring). Two things are
proved of each:

- it is a real Optuna file: ``python FILE`` runs its main block to the end;
- ``python -m sweeper run FILE -n N -p 2`` does what its author expects of that file: N
  finished trials, the file's own sampler, pruner and direction, its callbacks run, its
  enqueued trials first, its constraints and artifacts recorded, and so on.

A case that sweeper does not pass yet is marked ``xfail(strict=True)`` with the cause seen;
strict, so that a fix makes the mark fail until it is removed.

The last tests open what a sweep wrote with optuna-dashboard's own storage reader and web
app, as the README's command does.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import wsgiref.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import Project
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeper.study._recovery import RETURNED_KEY

COMPAT = Path(__file__).parent / "compat"
FILES = sorted(COMPAT.glob("*.py"))


# -- (a) each file is a real Optuna script ----------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_runs_under_plain_python(path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# -- (b) each file swept by sweeper -----------------------------------------------------------


@dataclass
class Swept:
    """One ``sweeper run FILE -n N -p 2``, and the study it left."""

    project: Project
    result: subprocess.CompletedProcess[str]
    n: int

    @property
    def header(self) -> str:
        """The sweep's first line: study, storage, workers, sampler, pruner, trials."""
        for line in self.result.stderr.splitlines():
            if "sweeping " in line:
                return line
        raise AssertionError(f"no 'sweeping ...' line on stderr:\n{self.result.stderr[-3000:]}")

    @cached_property
    def storage_url(self) -> str:
        """Where the summary says the study is stored."""
        found = re.search(r"^Stored in (\S+)", self.result.stdout, re.MULTILINE)
        return found.group(1) if found else str(self.project.journal)

    @cached_property
    def storage(self) -> BaseStorage:
        url = self.storage_url
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        return JournalStorage(JournalFileBackend(str(self.project.path / url)))

    @cached_property
    def study(self) -> optuna.Study:
        found = re.search(r"^Study '([^']+)'", self.result.stdout, re.MULTILINE)
        if found:
            name = found.group(1)
        else:
            names = [s.study_name for s in self.storage.get_all_studies()]
            assert len(names) == 1, f"expected one study in {self.storage_url}, found {names}"
            name = names[0]
        return optuna.load_study(study_name=name, storage=self.storage)

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def finished(self, expected: int | range) -> None:
        """Exit 0, no traceback, ``expected`` trials finished (complete or pruned), none failed."""
        result = self.result
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        assert "Traceback" not in result.stderr, result.stderr[-4000:]
        counts: dict[str, int] = {}
        returned = 0
        for trial in self.trials():
            if trial.state == TrialState.WAITING and trial.system_attrs.get(RETURNED_KEY):
                returned += 1  # asked ahead, not started when the sweep stopped early
                continue
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        if returned:
            assert "Stopped early" in result.stdout, result.stdout
            assert f"{returned} trial{'s' if returned > 1 else ''} asked ahead" in result.stdout
        assert counts.get("FAIL", 0) == 0, counts
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        wanted = expected if isinstance(expected, range) else range(expected, expected + 1)
        assert done in wanted and sum(counts.values()) == done, counts


Check = Callable[[Swept], None]
CASES: list[Any] = []  # pytest.param(file, n, check)


def case(
    file: str, n: int = 20, *, name: str | None = None, xfail: str | None = None
) -> Callable[[Check], Check]:
    """Register ``check`` as what a user expects from sweeping ``compat/<file>.py`` -n N."""

    def register(check: Check) -> Check:
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        CASES.append(pytest.param(file, n, check, id=name or file, marks=marks))
        return check

    return register


def _pruned_after(swept: Swept, warmup: int, rounds: int) -> None:
    """Every trial reported each round; none was pruned inside the pruner's warm-up."""
    for trial in swept.trials():
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))), (trial.number, steps)
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == rounds, (trial.number, steps)
        else:
            assert warmup <= steps[-1] < rounds, (trial.number, steps)


@case("sklearn_cv")
def _sklearn_cv(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    assert "TPESampler" in swept.header
    for trial in swept.trials():
        assert 0.5 < trial.value <= 1.0
        assert 5 <= trial.params["n_estimators"] <= 20


@case("sklearn_conditional")
def _sklearn_conditional(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    branches = {"SVC": {"classifier", "svc_c"}, "RandomForest": {"classifier", "rf_max_depth"}}
    seen = set()
    for trial in swept.trials():
        seen.add(trial.params["classifier"])
        assert set(trial.params) == branches[trial.params["classifier"]], trial.params
    assert seen == set(branches)


@case("lightgbm_pruning")
def _lightgbm_pruning(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    assert "MedianPruner" in swept.header
    # LightGBMPruningCallback reported every round; MedianPruner(n_warmup_steps=10) held.
    _pruned_after(swept, warmup=10, rounds=40)


@case("xgboost_pruning")
def _xgboost_pruning(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    assert "MedianPruner" in swept.header
    _pruned_after(swept, warmup=5, rounds=20)
    tree_only = {"subsample", "max_depth", "eta", "gamma", "grow_policy"}
    for trial in swept.trials():
        has_tree_params = tree_only <= set(trial.params)
        assert has_tree_params == (trial.params["booster"] == "gbtree"), trial.params
        if trial.params["booster"] == "gblinear":
            assert not tree_only & set(trial.params), trial.params


@case("pytorch_loop")
def _pytorch_loop(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    assert "HyperbandPruner" in swept.header
    for trial in swept.trials():
        layers = trial.params["n_layers"]
        per_layer = {k for k in trial.params if k.startswith(("n_units_l", "dropout_l"))}
        assert per_layer == {f"{p}_l{i}" for p in ("n_units", "dropout") for i in range(layers)}
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= 5
    assert swept.study.best_value > 0.5


@case("constraints")
def _constraints(swept: Swept) -> None:
    swept.finished(swept.n)
    assert "TPESampler" in swept.header
    for trial in swept.trials(TrialState.COMPLETE):
        # The sampler's constraints_func ran on every trial and Optuna recorded its result.
        assert trial.system_attrs["constraints"] == pytest.approx(trial.user_attrs["constraint"])
    # The summary's best is the best feasible trial, as the file's own last lines compute it.
    feasible = [
        t
        for t in swept.trials(TrialState.COMPLETE)
        if all(c <= 0 for c in t.user_attrs["constraint"])
    ]
    if feasible:
        best = min(feasible, key=lambda t: t.value)
        assert f"from trial {best.number}:" in swept.result.stdout
    else:
        assert "No completed trial meets the sampler's constraints" in swept.result.stdout


@case("multi_objective")
def _multi_objective(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.directions == [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    assert "NSGAIISampler" in swept.header
    generations = set()
    for trial in swept.trials():
        assert len(trial.values) == 2 and trial.values[0] >= 1
        generations.add(trial.system_attrs["NSGAIISampler:generation"])
    # population_size=10: twenty trials make a second generation (the default 50 would not).
    assert max(generations) >= 1
    assert swept.study.best_trials


@case("custom_sampler")
def _custom_sampler(swept: Swept) -> None:
    swept.finished(swept.n)
    assert "SimulatedAnnealingSampler" in swept.header
    # The file's sampler drew every trial that started after one had finished from the
    # neighbourhood (a tenth of each range) of an earlier finished trial; random or TPE
    # samples would land there by chance for a few trials at most.
    trials = swept.trials()
    for trial in trials:
        start = trial.datetime_start
        if not any(t.datetime_complete and t.datetime_complete < start for t in trials):
            continue  # nothing had finished: the sampler falls back to random sampling
        assert any(
            abs(t.params["x"] - trial.params["x"]) <= 2
            and abs(t.params["y"] - trial.params["y"]) <= 1
            for t in trials
            if t.number < trial.number and t.state == TrialState.COMPLETE
        ), (trial.number, trial.params)


@case("enqueue")
def _enqueue(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    first, second = sorted(swept.trials(), key=lambda t: t.number)[:2]
    assert first.number == 0 and second.number == 1
    assert first.params == {"bagging_fraction": 1.0, "bagging_freq": 0, "min_child_samples": 20}
    assert second.params["bagging_fraction"] == 0.75 and second.params["bagging_freq"] == 5


@case("callbacks_max_trials")
def _callbacks_max_trials(swept: Swept) -> None:
    # MaxTrialsCallback(10) stops the study at ten complete trials, -n 20 notwithstanding;
    # with two in flight the one still running when it stops also finishes.
    swept.finished(range(10, 12))
    assert len(swept.trials(TrialState.COMPLETE)) in (10, 11)


@case("callbacks_custom")
def _callbacks_custom(swept: Swept) -> None:
    swept.finished(swept.n)
    log = swept.project.path / "trials.csv"
    assert log.exists(), "the file's CsvLogger callback never ran"
    with log.open(newline="") as f:
        rows = list(csv.reader(f))
    assert sorted(int(number) for number, _, _ in rows) == list(range(swept.n))
    values = {t.number: t.value for t in swept.trials()}
    for number, state, value in rows:
        assert state == "COMPLETE" and float(value) == pytest.approx(values[int(number)])
    assert swept.study.user_attrs["trials_logged"] == swept.n


@case("artifacts")
def _artifacts(swept: Swept) -> None:
    swept.finished(swept.n)
    store = swept.project.path / "artifacts"
    for trial in swept.trials():
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=swept.storage)
        assert [m.artifact_id for m in metas] == [trial.user_attrs["artifact_id"]]
        assert metas[0].filename == f"result-{trial.number}.json"
        content = json.loads((store / metas[0].artifact_id).read_text())
        assert content["number"] == trial.number and content["value"] == trial.value


@case("terminator")
def _terminator(swept: Swept) -> None:
    swept.finished(range(1, swept.n + 1))  # TerminatorCallback may stop it early
    for trial in swept.trials(TrialState.COMPLETE):
        scores = trial.system_attrs["terminator:cv_scores"]
        assert len(scores) == 5 and sum(scores) / 5 == pytest.approx(trial.value)


@case("timeout_budget")
def _timeout_budget(swept: Swept) -> None:
    # -n 20 is the budget of this run; the file's own timeout=1 would stop it at ~7 trials.
    swept.finished(swept.n)
    assert "RandomSampler" in swept.header


@case("several_optimize")
def _several_optimize(swept: Swept) -> None:
    swept.finished(swept.n)
    assert "TPESampler" in swept.header


@case("study_reads")
def _study_reads(swept: Swept) -> None:
    swept.finished(swept.n)
    trials = swept.trials(TrialState.COMPLETE)
    values = [t.value for t in trials]
    for trial in trials:
        before = trial.user_attrs["best_before"]
        if before is None:
            continue
        # trial.study.best_value was the value of another finished trial, at most as good
        # as where the study ended.
        assert before >= swept.study.best_value
        assert before in values and before != trial.value
        assert trial.user_attrs["improved"] == (trial.value < before)
    assert any(t.user_attrs["best_before"] is not None for t in trials)


@case("study_reads", name="study_reads-main-block-attrs")
def _study_reads_main_block_attrs(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.user_attrs == {"baseline": 4.0, "author": "compat suite"}
    for trial in swept.trials(TrialState.COMPLETE):
        assert trial.user_attrs["beats_baseline"] == (trial.value < 4.0)


@case("module_storage")
def _module_storage(swept: Swept) -> None:
    swept.finished(swept.n)
    # The study is where the file keeps it: its own database, under its own name.
    study = optuna.load_study(study_name="ridge-diabetes", storage="sqlite:///example.db")
    assert len(study.trials) == swept.n
    assert study.direction == StudyDirection.MAXIMIZE


@case("argparse_main")
def _argparse_main(swept: Swept) -> None:
    swept.finished(swept.n)
    assert swept.study.direction == StudyDirection.MAXIMIZE
    # TPESampler(seed=args.seed, multivariate=True): built from parsed arguments.
    assert "TPESampler" in swept.header


@case("argparse_module")
def _argparse_module(swept: Swept) -> None:
    swept.finished(swept.n)
    for trial in swept.trials():
        assert len(trial.intermediate_values) == 30  # args.epochs, its default


@case("grid_sampler", n=9)
def _grid_sampler(swept: Swept) -> None:
    swept.finished(swept.n)
    assert "GridSampler" in swept.header
    points = {(t.params["x"], t.params["y"]) for t in swept.trials()}
    assert points == {(x, y) for x in (-50, 0, 50) for y in (-99, 0, 99)}


@pytest.mark.parametrize(("file", "n", "check"), CASES)
def test_swept_unmodified(project: Project, file: str, n: int, check: Check) -> None:
    result = project.sweeper(
        "run", str(COMPAT / f"{file}.py"), "-n", str(n), "-p", "2", "--no-track", timeout=170
    )
    check(Swept(project, result, n))


def test_every_compat_file_is_swept() -> None:
    swept = {param.values[0] for param in CASES}
    assert swept == {p.stem for p in FILES}


# -- optuna-dashboard on a sweep's storage ----------------------------------------------------

# Sleeps so that the sweep is still running while the dashboard reads it; uploads one file
# per trial as Optuna's artifact tutorial does.
DASHBOARD_OBJECTIVE = """
import os
import tempfile
import time

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

os.makedirs("artifacts", exist_ok=True)
artifact_store = FileSystemArtifactStore("artifacts")


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    trial.report(x, 0)
    time.sleep(0.4)
    # The test's own hook, not the user's: past the first two, trials wait (a minute at
    # most) until the test has seen the sweep half done, however slow the machine.
    deadline = time.time() + 60
    while trial.number >= 2 and not os.path.exists("seen") and time.time() < deadline:
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "note.txt")
        with open(path, "w") as f:
            f.write(f"trial {trial.number}: x={x}")
        upload_artifact(artifact_store=artifact_store, file_path=path, study_or_trial=trial)
    return (x - 2) ** 2
"""


def _wsgi_get(app: Any, path: str) -> tuple[int, bytes]:
    """GET ``path`` from a WSGI app in this process (no socket)."""
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, QUERY_STRING="", REQUEST_METHOD="GET")
    status: list[str] = []

    def start_response(line: str, headers: list[Any], exc_info: Any = None) -> None:
        status.append(line)

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return int(status[0].split()[0]), body


def _wsgi_json(app: Any, path: str) -> Any:
    code, body = _wsgi_get(app, path)
    assert code == 200, (path, code, body[:500])
    return json.loads(body)


@pytest.fixture(params=["journal", "sqlite"])
def dashboard_storage(request: pytest.FixtureRequest) -> Iterator[tuple[list[str], str]]:
    """(sweeper's storage flags, the URL optuna-dashboard is given) for each storage kind."""
    if request.param == "journal":
        yield [], ".sweeper/optuna.journal"
    else:
        yield ["--storage", "sqlite:///sweep.db"], "sqlite:///sweep.db"


def test_dashboard_reads_the_sweep_as_it_runs(
    project: Project, dashboard_storage: tuple[list[str], str]
) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    flags, url = dashboard_storage
    project.write("noted.py", DASHBOARD_OBJECTIVE)
    n = 10
    sweep = project.start("run", "noted.py", "-n", str(n), "-p", "2", "--no-track", *flags)
    try:
        # While the sweep runs: the storage opens in optuna-dashboard's own reader
        # (get_storage, what `optuna-dashboard URL` calls) and its app lists the trials.
        seen_running, error = 0, None
        deadline = time.monotonic() + 60
        while sweep.poll() is None and time.monotonic() < deadline:
            try:
                app = optuna_dashboard.wsgi(url)
                studies = _wsgi_json(app, "/api/studies")["study_summaries"]
            except Exception as failed:  # the storage is not there yet, or has no tables
                error = failed
                studies = []
            if studies:
                detail = _wsgi_json(app, f"/api/studies/{studies[0]['study_id']}")
                done = [t for t in detail["trials"] if t["state"] == "Complete"]
                if done and len(done) < n:
                    seen_running = len(done)
                    (project.path / "seen").touch()  # the other trials may go on
                    break
            time.sleep(0.1)
        assert seen_running, f"optuna-dashboard showed no finished trial while it ran ({error!r})"
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    assert sweep.returncode == 0, stdout + stderr

    # After it: every trial, and each trial's artifact where the dashboard looks for it.
    store = optuna.artifacts.FileSystemArtifactStore(str(project.path / "artifacts"))
    app = optuna_dashboard.wsgi(url, artifact_store=store)
    assert _wsgi_json(app, "/api/meta")["artifact_is_available"]
    (study,) = _wsgi_json(app, "/api/studies")["study_summaries"]
    assert study["study_name"] == "noted"
    assert study["directions"] == ["minimize"]
    detail = _wsgi_json(app, f"/api/studies/{study['study_id']}")
    trials = detail["trials"]
    assert sorted(t["number"] for t in trials) == list(range(n))
    assert {t["state"] for t in trials} == {"Complete"}
    assert detail["best_trials"] and detail["has_intermediate_values"]
    for trial in trials:
        (artifact,) = trial["artifacts"]
        assert artifact["filename"] == "note.txt"
        code, body = _wsgi_get(
            app, f"/artifacts/{study['study_id']}/{trial['trial_id']}/{artifact['artifact_id']}"
        )
        assert code == 200 and body.decode().startswith(f"trial {trial['number']}: x=")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_dashboard_command_serves_the_journal(project: Project) -> None:
    pytest.importorskip("optuna_dashboard")
    project.write("noted.py", DASHBOARD_OBJECTIVE.replace("time.sleep(0.4)", "pass"))
    result = project.sweeper("run", "noted.py", "-n", "4", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    # The README's command: optuna-dashboard .sweeper/optuna.journal --artifact-dir artifacts
    port = _free_port()
    executable = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(executable), ".sweeper/optuna.journal", "--artifact-dir", "artifacts"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=project.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert [s["study_name"] for s in studies] == ["noted"]
        with urllib.request.urlopen(f"{base}/api/meta", timeout=5) as r:
            assert json.loads(r.read())["artifact_is_available"]
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
