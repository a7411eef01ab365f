"""``run --dry-run``: what a sweep would build and start, and its price an hour, without
credentials, without contacting Modal, and without touching the study."""

from __future__ import annotations

import re

import optuna
from conftest import Project

from sweeper._cost import MODAL_PRICES_DATE, format_usd

OBJECTIVE = """\
import numpy


def objective(trial):
    return float(numpy.sqrt(trial.suggest_float("x", 0, 4)))
"""


def _offline(project: Project) -> dict[str, str]:
    """No Modal credentials, and a Modal server address nothing answers: a dry run that
    tried to reach Modal would fail."""
    for key in list(project.env):
        if key.startswith("MODAL_"):
            del project.env[key]
    return {"HOME": str(project.path), "MODAL_SERVER_URL": "http://127.0.0.1:9"}


def test_a_modal_dry_run_prints_the_images_resources_and_price(project: Project) -> None:
    project.write("train.py", OBJECTIVE)
    project.write("helpers.py", "VALUE = 1\n")
    out = project.sweeper(
        "run",
        "train.py",
        "--backend",
        "modal",
        "--gpu",
        "H100",
        "--cpu",
        "4",
        "--memory",
        "16384",
        "-p",
        "64",
        "-n",
        "640",
        "--secret",
        "wandb",
        "--volume",
        "sweeps",
        "--retries",
        "2",
        "--trial-timeout",
        "900",
        "--budget",
        "500",
        "--dry-run",
        env=_offline(project),
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for fragment in (
        "Dry run: nothing is built, started or charged.",
        "Function run_trial: one call per trial, 64 at once (--parallel)",
        "640 trials; budget $500.00",
        "GPU: 1 x H100 per container",
        "Starter 10, Team 50",
        "CPU: 4 cores; memory: 16384 MiB",
        "timeout: 960 s per trial (--trial-timeout 900 s",
        "retries: 2",
        "secrets: wandb",
        "volume: 'sweeps' at /sweeper",
        f"estimated from Modal's prices of {MODAL_PRICES_DATE}, https://modal.com/pricing",
        "Function aim_hub",
        "Modal credentials: none here; a real run needs `modal setup`",
    ):
        assert fragment in text, (fragment, text)
    # Each image with its pinned packages and files.
    assert re.search(r"pip install: .*numpy==\d", text)
    assert re.search(r"pip install: .*optuna==\d", text)
    assert re.search(r"pip install: .*aim==\d", text)  # the hub's
    assert f"file: {project.path / 'train.py'} -> /root/sweeper_objective/train.py" in text
    # The price of one container, its parts, and of 64 at once.
    per_hour = 0.001097 * 3600 + 4 * 0.0000131 * 3600 + 16 * 0.00000222 * 3600
    assert f"one trial container: ${per_hour:.4f} an hour = 1 x H100 $3.9492/h" in text
    assert f"64 at once: ${64 * per_hour:,.2f} an hour" in text
    assert f"640 of them: {format_usd(640 * per_hour * 900 / 3600)}" in text
    # Nothing was created: no study, no storage.
    assert not project.journal.exists()


def test_a_dry_run_of_a_cpu_sweep_without_tracking(project: Project) -> None:
    project.write("train.py", OBJECTIVE)
    out = project.sweeper(
        "run", "train.py", "--backend", "modal", "--no-track", "--dry-run", env=_offline(project)
    )
    assert out.returncode == 0, out.stderr
    assert "GPU: none (CPU containers" in out.stdout
    assert "0.125 cores (Modal's default)" in out.stdout
    assert "4 at once" in out.stdout  # the Modal backend's default --parallel
    assert "aim_hub" not in out.stdout


def test_a_dry_run_says_what_the_table_cannot_price(project: Project) -> None:
    project.write("train.py", OBJECTIVE)
    env = _offline(project)
    out = project.sweeper(
        "run", "train.py", "--backend", "modal", "--gpu", "V100", "--dry-run", env=env
    )
    assert out.returncode == 0, out.stderr
    assert "1 x V100 (not in the price table)" in out.stdout
    assert "not priced: GPU V100" in out.stdout
    # A budget it cannot price is refused, as a run would refuse it.
    out = project.sweeper(
        "run",
        "train.py",
        "--backend",
        "modal",
        "--gpu",
        "V100",
        "--budget",
        "9",
        "--dry-run",
        env=env,
    )
    assert out.returncode == 2
    assert "--budget needs the price of GPU V100" in out.stderr
    assert "Traceback" not in out.stderr
    # Prices of its own make it priceable (and the dry run says whose prices they are).
    prices = project.write("prices.json", '{"date": "2026-12-01", "gpu": {"V100": 0.0005}}')
    out = project.sweeper(
        "run",
        "train.py",
        "--backend",
        "modal",
        "--gpu",
        "V100",
        "--budget",
        "9",
        "--dry-run",
        env={**env, "SWEEPER_PRICES": str(prices)},
    )
    assert out.returncode == 0, out.stderr
    assert f"estimated from the prices of 2026-12-01 in SWEEPER_PRICES ({prices})" in out.stdout


def test_a_local_dry_run_says_there_is_no_cost(project: Project) -> None:
    project.write("train.py", OBJECTIVE)
    out = project.sweeper("run", "train.py", "-p", "3", "-n", "9", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "Local backend: 3 worker processes on this machine" in out.stdout
    assert "9 trials" in out.stdout and "Cost: none (local workers)" in out.stdout
    assert not project.journal.exists()


def test_a_dry_run_leaves_an_existing_study_as_it_was(project: Project) -> None:
    project.write("train.py", OBJECTIVE)
    project.journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="train", storage=project.storage())
    study.enqueue_trial({"x": 1.0})
    before = project.journal.read_bytes()
    out = project.sweeper(
        "run", "train.py", "--backend", "modal", "--dry-run", env=_offline(project)
    )
    assert out.returncode == 0, out.stderr
    assert project.journal.read_bytes() == before
