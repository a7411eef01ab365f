"""The command line: ``python -m sweeper run|status|best``."""

from __future__ import annotations

from sweeper.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
