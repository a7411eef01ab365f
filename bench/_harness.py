"""Running variants in fresh processes, alternating with their peers, and summarising."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class VariantFailed(RuntimeError):
    pass


def run_variant(name: str, timeout: float = 3600, **arguments: Any) -> dict[str, Any]:
    """Run one variant in a fresh Python process; return what it measured."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    process = subprocess.run(
        [sys.executable, "-m", "bench.variants", name, json.dumps(arguments)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = "\n".join(process.stderr.strip().splitlines()[-15:])
    raise VariantFailed(f"{name}({arguments}) failed (exit {process.returncode}):\n{tail}")


def interleave(pairs: dict[str, tuple[str, dict[str, Any]]], repeats: int) -> dict[str, list]:
    """Run each labelled variant ``repeats`` times, in turn: A B A B ..."""
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label in pairs}
    for _ in range(repeats):
        for label, (name, arguments) in pairs.items():
            samples[label].append(run_variant(name, **arguments))
    return samples


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def spread(values: Iterable[float]) -> tuple[float, float]:
    """The lowest and highest value (the range over repeats)."""
    items = list(values)
    return float(min(items)), float(max(items))


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions = {}
    for package in ("sweeper-hpo", "optuna", "aim", "modal", "torch", "numpy", "ray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


@dataclass
class Metric:
    """One line of the benchmark table."""

    key: str
    title: str
    target: str
    measured: str
    passed: bool | None
    """None when there is no verdict (skipped, or no target)."""
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
