"""The live tier: a tiny CPU sweep on Modal itself. Skipped unless Modal credentials are set
(``modal setup``, or MODAL_TOKEN_ID and MODAL_TOKEN_SECRET); it costs a few cents."""

from __future__ import annotations

import pytest
from conftest import Project, states

modal_app = pytest.importorskip("sweeper.backends._modal_app")

pytestmark = pytest.mark.skipif(
    not modal_app.has_credentials(), reason="no Modal credentials (run `modal setup`)"
)


@pytest.mark.timeout(1200)
def test_tiny_sweep_on_modal(project: Project) -> None:
    result = project.sweeper(
        "run",
        project.objective("optuna_pruning.py"),
        "--backend",
        "modal",
        "-n",
        "6",
        "-p",
        "3",
        "--volume",
        "sweeper-tests",
        "--progress",
        "plain",
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    assert "Aim UI (live while the sweep runs): https://" in result.stderr
    counts = states(project.study("optuna_pruning"))
    assert sum(counts.values()) == 6 and counts.get("FAIL", 0) == 0
