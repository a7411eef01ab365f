"""What a sweep costs: the dated price table, its override, the meter and --budget, and where
the estimate is shown (progress line, summary, status, each trial)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import Project, states
from rich.console import Console

import sweeper
from sweeper import _cost
from sweeper._config import resolve_config
from sweeper._cost import (
    COST_KEY,
    MODAL_PRICES_DATE,
    CostMeter,
    Rate,
    Resources,
    format_usd,
    modal_prices,
    rate_for,
)
from sweeper._errors import ConfigError
from sweeper.orchestrator import Snapshot
from sweeper.progress import SweepSummary, summary_lines
from sweeper.progress._base import status_line
from sweeper.progress._terminal import render

MODAL_GPUS = ("T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the price table -----------------------------------------------------------------------


def test_the_table_prices_every_modal_gpu_and_is_dated() -> None:
    table = modal_prices({})
    for gpu in MODAL_GPUS:
        assert table.gpu_price(gpu) is not None, gpu
    assert table.date == MODAL_PRICES_DATE
    assert table.source == "https://modal.com/pricing"
    assert table.provenance == f"estimated from Modal's prices of {MODAL_PRICES_DATE}"
    # Dearer GPUs cost more, as on the pricing page.
    prices = [table.gpu_price(gpu) for gpu in MODAL_GPUS]
    assert prices == sorted(prices)


def test_a_container_is_priced_by_its_gpus_cpu_and_memory() -> None:
    table = modal_prices({})
    h100 = table.rate(Resources(gpu=("H100",)))
    # Modal's default request (0.125 cores, 128 MiB) is priced with the GPU.
    assert h100.per_second == pytest.approx(0.001097 + 0.125 * 0.0000131 + 0.125 * 0.00000222)
    assert h100.per_hour == pytest.approx(3.9561, abs=1e-4)
    assert "1 x H100 $3.9492/h" in h100.breakdown()
    eight = table.rate(Resources(gpu=("H100:8",), cpu=16, memory_mib=65536))
    assert eight.per_second == pytest.approx(8 * 0.001097 + 16 * 0.0000131 + 64 * 0.00000222)
    # A fallback list is priced at its dearest GPU: the estimate never falls short.
    fallback = table.rate(Resources(gpu=("A100-80GB", "H100")))
    assert fallback.per_second == pytest.approx(h100.per_second)
    assert "dearest" in fallback.breakdown()
    cpu_only = table.rate(Resources(cpu=4))
    assert cpu_only.per_hour == pytest.approx(4 * 0.0000131 * 3600 + 0.125 * 0.00000222 * 3600)
    unknown = table.rate(Resources(gpu=("V100",)))
    assert unknown.unpriced == ("V100",)


def test_prices_are_overridden_from_a_json_file_or_inline(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "date": "2026-12-01",
                "source": "our contract",
                "gpu": {"h100": 3.0, "V100": 1.0},
                "cpu_core": 0.036,
                "unit": "hour",
                "multiplier": 1.5,
            }
        )
    )
    table = modal_prices({"SWEEPER_PRICES": str(path)})
    assert table.date == "2026-12-01" and table.source == "our contract"
    assert table.gpu_price("H100") == pytest.approx(3.0 / 3600)
    assert table.gpu_price("V100") == pytest.approx(1.0 / 3600)
    assert table.gpu_price("T4") == pytest.approx(0.000164)  # not overridden
    rate = table.rate(Resources(gpu=("H100",), cpu=1))
    expected = 1.5 * (3.0 / 3600 + 0.036 / 3600 + 0.125 * 0.00000222)
    assert rate.per_second == pytest.approx(expected)
    assert "estimated from the prices of 2026-12-01 in SWEEPER_PRICES" in rate.provenance
    inline = modal_prices({"SWEEPER_PRICES": '{"gpu": {"T4": 0.0001}}'})
    assert inline.gpu_price("T4") == 0.0001 and inline.date == MODAL_PRICES_DATE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"gpu": {"H100": -1}}', "gpu H100 must be a price of 0 or more"),
        ('{"price": 1}', "unknown: price"),
        ('{"unit": "minute"}', "unit must be 'second' or 'hour'"),
        ("/no/such/prices.json", "cannot read it"),
    ],
)
def test_a_bad_override_is_refused_with_what_to_fix(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="SWEEPER_PRICES") as raised:
        modal_prices({"SWEEPER_PRICES": value})
    assert message in str(raised.value)


def test_local_workers_cost_nothing_and_a_budget_needs_a_priced_gpu() -> None:
    local = resolve_config(default_study="s", explicit={"budget": 5}, environ={})
    assert rate_for(local, {}) == Rate.free()
    modal = resolve_config(
        default_study="s", explicit={"backend": "modal", "gpu": "V100", "budget": 5}, environ={}
    )
    with pytest.raises(ConfigError, match="--budget needs the price of GPU V100"):
        rate_for(modal, {})
    priced = rate_for(modal, {"SWEEPER_PRICES": '{"gpu": {"V100": 0.0005}}'})
    assert priced.per_second > 0.0005


def test_budget_option_takes_dollars() -> None:
    config = resolve_config(default_study="s", explicit={"budget": "$1,250.50"}, environ={})
    assert config.budget == 1250.5
    with pytest.raises(ConfigError, match="budget must be positive"):
        resolve_config(default_study="s", explicit={"budget": "-3"}, environ={})
    assert (
        resolve_config(default_study="s", explicit={}, environ={"SWEEPER_BUDGET": "7"}).budget == 7
    )


# -- the meter and the budget --------------------------------------------------------------


def test_the_meter_counts_container_seconds_and_dollars() -> None:
    clock = Clock()
    meter = CostMeter(Rate(per_second=0.01), clock=clock)
    meter.start(0)
    meter.start(1)
    clock.now += 10
    first = meter.finish(0)
    assert (first.seconds, first.usd) == (10, pytest.approx(0.1))
    assert meter.running_cost() == pytest.approx(0.1)  # trial 1, so far
    clock.now += 20
    assert meter.finish(1).usd == pytest.approx(0.3)
    assert (meter.spent, meter.seconds, meter.trials) == (pytest.approx(0.4), 40, 2)
    record = first.record(meter.rate)
    assert record["usd"] == 0.1 and record["container_seconds"] == 10
    assert record["prices"] == "local workers cost nothing"  # a Rate without a table


def test_the_budget_counts_what_running_trials_are_expected_to_cost() -> None:
    clock = Clock()
    meter = CostMeter(Rate(per_second=1.0, provenance="p"), budget=100, clock=clock)
    for number in range(3):
        meter.start(number)
    clock.now += 10
    assert meter.exhausted() is None  # nothing known of trials yet: 30 spent so far
    meter.finish(0)  # a typical trial takes 10 s: $10
    meter.start(3)
    clock.now += 5
    # Spent 10; running: 1 and 2 at 15 s each, 3 at 5 s but expected to take 10: 40; and
    # another trial would cost 10. 60 < 100.
    assert meter.projected() == pytest.approx(40)
    assert meter.exhausted() is None
    clock.now += 15
    # Spent 10; running: 30 + 30 + 20 = 80; and another 10: 100 reaches the budget.
    reason = meter.exhausted()
    assert reason is not None and reason.startswith("the budget of $100.00 was reached")
    assert "$10.00 spent, $80.00 expected for the 3 running trials" in reason
    clock.now -= 30  # the decision is final: cheaper news does not undo it
    assert meter.exhausted() == reason
    assert meter.spend().reached == reason


def test_a_free_meter_never_stops_a_sweep() -> None:
    clock = Clock()
    meter = CostMeter(Rate.free(), budget=0.01, clock=clock)
    meter.start(0)
    clock.now += 3600
    assert meter.exhausted() is None and meter.finish(0).usd == 0


def test_amounts_are_shown_to_a_useful_precision() -> None:
    assert format_usd(0) == "$0"
    assert format_usd(0.00412) == "$0.0041"
    assert format_usd(12.345) == "$12.35"
    assert format_usd(12345.6) == "$12,346"
    assert format_usd(3.95616, exact=True) == "$3.9562"


# -- where the estimate is shown -----------------------------------------------------------


def _spend(**changes: Any) -> _cost.Spend:
    values: dict[str, Any] = {
        "spent": 12.5,
        "running": 1.25,
        "seconds": 11400.0,
        "trials": 30,
        "per_hour": 3.9561,
        "provenance": f"estimated from Modal's prices of {MODAL_PRICES_DATE}",
        "budget": 20.0,
    }
    values.update(changes)
    return _cost.Spend(**values)


def test_the_progress_line_and_the_live_display_show_the_cost_so_far() -> None:
    snapshot = Snapshot(
        study="mlp",
        directions=("minimize",),
        complete=3,
        pruned=0,
        failed=0,
        running=2,
        n_trials=10,
        timeout=None,
        elapsed=60.0,
        spend=_spend(),
    )
    assert "cost ~$13.75 of $20.00" in status_line(snapshot)
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(render(snapshot))
    assert "cost ~$13.75 of $20.00" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_summary_says_what_the_sweep_cost_and_what_stopped_it() -> None:
    reason = "the budget of $20.00 was reached: $12.50 spent, ..."
    summary = SweepSummary(
        study="mlp",
        storage="s",
        directions=("minimize",),
        elapsed=600.0,
        counts={"COMPLETE": 30},
        totals={"COMPLETE": 30},
        stop_reason=reason,
        spend=_spend(running=0.0),
    )
    text = "\n".join(summary_lines(summary))
    assert f"Stopped early: {reason}." in text
    assert (
        "Estimated cost: $12.50 for 3h10m00s of container time over 30 trials at $3.9561 an "
        f"hour a container (estimated from Modal's prices of {MODAL_PRICES_DATE}). "
        "Budget $20.00: $7.50 left."
    ) in text
    free = SweepSummary(
        study="q", storage="s", directions=("minimize",), elapsed=1.0, counts={}, totals={}
    )
    assert "cost" not in "\n".join(summary_lines(free)).lower()


# -- a sweep, the same code path on local workers --------------------------------------------


def _slow(trial: Any) -> float:
    x = trial.suggest_float("x", 0, 1)
    time.sleep(0.3)
    return x


def test_local_trials_are_metered_at_no_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = sweeper.run(_slow, n_trials=4, parallel=2, track=False, progress=False)
    for trial in study.trials:
        cost = trial.system_attrs[COST_KEY]
        assert cost["usd"] == 0 and cost["container_seconds"] >= 0.3
    assert _cost.study_cost_line(study.trials) is None  # nothing to show


def test_a_budget_stops_asking_and_lets_running_trials_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Local workers priced at $1 a second (the same code as Modal's containers): trials of
    # about 0.3 s, two at a time, a budget of $2.
    monkeypatch.chdir(tmp_path)
    priced = Rate(per_second=1.0, provenance="estimated from test prices")
    monkeypatch.setattr("sweeper.orchestrator._sweep.rate_for", lambda config: priced)
    notes: list[str] = []

    class Notes(sweeper.progress.Reporter):
        def end(self, summary: SweepSummary) -> None:
            notes.extend(summary_lines(summary))

    from sweeper._api import run_sweep

    result = run_sweep(
        _slow,
        objective=None,
        options={"n_trials": 50, "parallel": 2, "track": False, "budget": 2.0, "study": "b"},
        progress=Notes(),
    )
    assert result.study is not None and result.summary is not None
    # The running ones finished (one asked ahead may wait in the queue for the next run).
    trials = [t for t in result.study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert states(result.study).get("COMPLETE") == len(trials)
    assert 2 <= len(trials) < 50
    assert result.stop_reason is not None and result.stop_reason.startswith(
        "the budget of $2.00 was reached"
    )
    spent = sum(t.system_attrs[COST_KEY]["usd"] for t in trials)
    spend = result.summary.spend
    assert spend is not None and spend.spent == pytest.approx(spent, abs=1e-3)
    # It stopped before the estimate passed the budget: at most the trials that were running
    # when it did (two, a typical trial each, give or take a busy machine's slowness) over.
    longest = max(t.system_attrs[COST_KEY]["usd"] for t in trials)
    assert spent <= 2.0 + 2 * longest
    assert any(line.startswith("Stopped early: the budget of $2.00") for line in notes)
    assert any("Budget $2.00" in line for line in notes)


def test_status_shows_what_the_study_cost(project: Project) -> None:
    project.journal.parent.mkdir(parents=True)
    storage = project.storage()
    study = optuna.create_study(study_name="paid", storage=storage)
    for usd, seconds in ((1.5, 1300.0), (0.25, 200.0)):
        trial = study.ask()
        storage.set_trial_system_attr(
            trial._trial_id,
            COST_KEY,
            {"usd": usd, "container_seconds": seconds, "prices": "estimated from X"},
        )
        study.tell(trial, 1.0)
    out = project.sweeper("status", "--study", "paid")
    assert out.returncode == 0, out.stderr
    assert (
        "estimated cost: $1.75 for 0.42 container-hours over 2 trials (estimated from X)"
        in out.stdout
    )


def test_a_continued_study_adds_up_what_all_its_trials_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    priced = Rate(per_second=0.5, provenance="estimated from test prices")
    monkeypatch.setattr("sweeper.orchestrator._sweep.rate_for", lambda config: priced)
    from sweeper._api import run_sweep

    options = {"n_trials": 2, "parallel": 2, "track": False, "study": "again"}
    first = run_sweep(_slow, objective=None, options=options, progress=False)
    second = run_sweep(_slow, objective=None, options=options, progress=False)
    assert first.summary is not None and second.summary is not None
    assert second.study is not None
    spend = second.summary.spend
    assert spend is not None and first.summary.spend is not None
    assert spend.prior == pytest.approx(first.summary.spend.spent, abs=1e-3)
    everything = sum(t.system_attrs[COST_KEY]["usd"] for t in second.study.trials)
    text = "\n".join(summary_lines(second.summary))
    assert f"The study's trials have cost {format_usd(everything)} in all." in text
