"""The shipped example objectives run as the README says (with fewer trials here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Project, states


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("quadratic", ["-n", "20"], {"COMPLETE": 20}),
        ("multi_objective", ["-n", "20"], {"COMPLETE": 20}),
        ("mlp", ["-n", "8", "-p", "2"], None),
    ],
)
def test_example(project: Project, name: str, args: list[str], expected: dict | None) -> None:
    path = Path(REPO, "objectives", f"{name}.py")
    result = project.sweeper("run", str(path), *args, "--progress", "none", timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"Study '{name}'" in result.stdout
    study = project.study(name)
    counts = states(study)
    if expected is not None:
        assert counts == expected
    else:  # mlp: accuracy is maximized; nothing fails
        assert study.direction.name == "MAXIMIZE"
        assert counts.get("FAIL", 0) == 0 and counts.get("COMPLETE", 0) >= 1
        assert study.best_value > 0.8
