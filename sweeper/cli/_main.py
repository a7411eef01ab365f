"""``python -m sweeper``: run a sweep, or read one back from its storage."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import optuna

from sweeper._config import OPTION_NAMES, option_help
from sweeper._errors import SweeperError, UsageError
from sweeper._logging import get_logger
from sweeper.cli._exit import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}. See {self.prog} --help.\n")


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help=option_help("study"))
    parser.add_argument("--storage", help=option_help("storage"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m sweeper",
        description="Run an Optuna objective as a parallel sweep, and read sweeps back.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a sweep of an objective file",
        description="Run a sweep of the objective defined in FILE. Running it again continues "
        "the same study. Settings may also come from a SWEEP dict in the file, from "
        "SWEEPER_<OPTION> environment variables, and from create_study/optimize calls the "
        "file makes for plain Optuna; flags win.",
    )
    run.add_argument("file", metavar="FILE", help="Python file defining objective(trial)")
    run.add_argument(
        "--objective", metavar="NAME", help="function to optimize (default: objective)"
    )
    run.add_argument(
        "-n", "--n-trials", dest="n_trials", metavar="N", help=option_help("n_trials")
    )
    run.add_argument("--timeout", metavar="SECONDS", help=option_help("timeout"))
    run.add_argument("-p", "--parallel", metavar="N", help=option_help("parallel"))
    _add_study_arguments(run)
    run.add_argument(
        "--direction",
        dest="directions",
        action="append",
        metavar="DIRECTION",
        help=option_help("directions"),
    )
    run.add_argument("--sampler", help=option_help("sampler"))
    run.add_argument(
        "--sampler-args", dest="sampler_args", metavar="JSON", help=option_help("sampler_args")
    )
    run.add_argument("--pruner", help=option_help("pruner"))
    run.add_argument(
        "--pruner-args", dest="pruner_args", metavar="JSON", help=option_help("pruner_args")
    )
    run.add_argument("--seed", help=option_help("seed"))
    run.add_argument(
        "--trial-timeout",
        dest="trial_timeout",
        metavar="SECONDS",
        help=option_help("trial_timeout"),
    )
    run.add_argument("--budget", metavar="USD", help=option_help("budget"))
    run.add_argument("--backend", help=option_help("backend"))
    run.add_argument("--aim-repo", dest="aim_repo", metavar="PATH", help=option_help("aim_repo"))
    run.add_argument(
        "--no-track",
        dest="track",
        action="store_const",
        const=False,
        help="do not track trials in Aim",
    )
    modal_options = run.add_argument_group("Modal backend (--backend modal)")
    modal_options.add_argument("--gpu", help=option_help("gpu"))
    modal_options.add_argument("--cpu", help=option_help("cpu"))
    modal_options.add_argument("--memory", metavar="MIB", help=option_help("memory"))
    modal_options.add_argument("--retries", metavar="N", help=option_help("retries"))
    modal_options.add_argument(
        "--secret", dest="secrets", action="append", metavar="NAME", help=option_help("secrets")
    )
    modal_options.add_argument("--volume", metavar="NAME", help=option_help("volume"))
    modal_options.add_argument(
        "--pip", action="append", metavar="PACKAGE", help=option_help("pip")
    )
    modal_options.add_argument("--requirements", metavar="FILE", help=option_help("requirements"))
    run.add_argument(
        "--progress",
        default="auto",
        choices=("auto", "terminal", "plain", "none"),
        help="progress display (default: a live bar on a terminal, log lines otherwise)",
    )
    run.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print what would be built and run (images, resources, the price an hour) "
        "and exit; needs no credentials",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show debug messages")

    status = commands.add_parser(
        "status", help="show a study's trials by state, its best, and running sweeps"
    )
    status.add_argument("file", metavar="FILE", nargs="?", help="objective file (names the study)")
    _add_study_arguments(status)

    ui = commands.add_parser(
        "ui",
        help="serve the Aim UI of the sweeps here, read-only",
        description="Serve Aim's UI on the sweeps' Aim repo (read-only) and print its URL. "
        "It shows runs live while a sweep runs. Ctrl-C stops it.",
    )
    ui.add_argument("--aim-repo", dest="aim_repo", metavar="PATH", help=option_help("aim_repo"))
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    ui.add_argument(
        "--port",
        type=int,
        default=43800,
        help="port (default: 43800, or a free one if it is taken)",
    )
    ui.add_argument(
        "--backend",
        default="local",
        choices=("local", "modal"),
        help="modal: serve the repo on the sweeps' Modal Volume through a tunnel",
    )
    ui.add_argument("--volume", metavar="NAME", help=option_help("volume"))

    track = commands.add_parser(
        "track",
        help="check that the Aim repo shows every finished trial (--repair: make it)",
        description="Compare the Aim repo with the studies' storage: every finished trial "
        "should have its run, with its parameters, curve, state and value. A sweep does this "
        "when it starts; --repair does it now, checking each run's content too, rebuilding "
        "what differs from the storage and removing duplicated runs. Exit status 1 when "
        "something is missing.",
    )
    track.add_argument("file", metavar="FILE", nargs="?", help="objective file (names the study)")
    _add_study_arguments(track)
    track.add_argument("--aim-repo", dest="aim_repo", metavar="PATH", help=option_help("aim_repo"))
    track.add_argument(
        "--repair", action="store_true", help="rebuild what the repo lacks from the storage"
    )

    best = commands.add_parser("best", help="print the best trial (or the Pareto front)")
    best.add_argument("file", metavar="FILE", nargs="?", help="objective file (names the study)")
    _add_study_arguments(best)
    best.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sweeper``; returns the exit status."""
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "ui":
            return _ui(args)
        from sweeper.cli._inspect import best, status, track

        if args.command == "track":
            return track(args)
        return status(args) if args.command == "status" else best(args)
    except UsageError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USAGE
    except SweeperError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from sweeper._api import run_sweep

    options: dict[str, Any] = {name: getattr(args, name, None) for name in OPTION_NAMES}
    if args.dry_run:
        from sweeper._api import prepare
        from sweeper.backends._dry_run import dry_run_lines

        ref, config, notes = prepare(args.file, objective=args.objective, options=options)
        sys.stdout.write("\n".join(dry_run_lines(ref, config, notes)) + "\n")
        return EXIT_OK
    result = run_sweep(
        args.file, objective=args.objective, options=options, progress=args.progress
    )
    if result.interrupted:
        return EXIT_INTERRUPTED
    counts = result.summary.counts if result.summary else {}
    if counts.get("FAIL") and not counts.get("COMPLETE") and not counts.get("PRUNED"):
        sys.stderr.write("error: every trial failed; see the reasons above.\n")
        return EXIT_FAILED
    if not any(counts.values()):
        why = result.stop_reason or "the sweep ended before any trial did"
        sys.stderr.write(f"error: no trial finished: {why}.\n")
        return EXIT_FAILED
    return EXIT_OK


def _ui(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sweeper._config import env_settings
    from sweeper.study._storage import home
    from sweeper.tracking._ui import serve_until_interrupted

    if args.backend == "modal":
        return _modal_ui(args)
    repo = args.aim_repo or env_settings().get("aim_repo")
    path = Path(repo).expanduser() if repo else home() / "aim"

    def announce(url: str) -> None:
        sys.stdout.write(f"Aim UI for {path}: {url}  (read-only; Ctrl-C to stop)\n")
        sys.stdout.flush()

    serve_until_interrupted(path, args.host, args.port, announce)
    return EXIT_OK


def _modal_ui(args: argparse.Namespace) -> int:
    from sweeper._config import env_settings
    from sweeper._errors import ConfigError

    try:
        from sweeper.backends import _modal_app
    except ImportError as error:
        raise ConfigError(f"--backend modal needs the modal package ({error})") from None
    if not _modal_app.has_credentials():
        raise ConfigError(
            "--backend modal needs Modal credentials, and none are set up here. Run `modal "
            "setup` once (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then run again."
        )
    volume = str(args.volume or env_settings().get("volume") or "sweeper")

    def announce(url: str) -> None:
        sys.stdout.write(f"Aim UI for Volume {volume!r}: {url}  (read-only; Ctrl-C to stop)\n")
        sys.stdout.flush()

    _modal_app.serve_ui(_modal_app.ModalSettings(volume=volume), announce)
    return EXIT_OK


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = get_logger("sweeper")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
