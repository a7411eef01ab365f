"""Every notebook runs headless in a real Jupyter kernel, and is stored without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_clean_for_diffs(path: Path) -> None:
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        assert cell.get("id") == f"cell-{index:02d}", "stable cell ids"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {index} has outputs; clear them"
            assert cell["execution_count"] is None
    assert set(notebook["metadata"]) <= {"kernelspec", "language_info"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_without_errors(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<progress" in h for h in html), "the live progress display rendered"
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plots rendered"
    if path.stem == "tutorial":
        plotly = "application/vnd.plotly.v1+json"
        assert any(plotly in o.get("data", {}) for o in outputs), "optuna.visualization works"
        streams = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
        assert "[trial 0] accuracy" in streams, "what trials print shows in the cell"
    # Every display reads as text too (text front ends, logs of executed notebooks).
    for output in outputs:
        if output["output_type"] in ("display_data", "execute_result"):
            assert not output["data"].get("text/plain", "").startswith("<IPython.core.display")
    assert (tmp_path / ".sweeper" / "optuna.journal").exists()
