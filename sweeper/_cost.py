"""What a sweep costs: each trial's container time, priced from a dated table of Modal's prices.

Modal bills a container by the second for its GPUs, its CPU cores and its memory. Nothing
here asks Modal what it billed (no API tells that per call); the estimate is the time each
trial held a container (from the input handed to Modal to its output back: the container's
start, the objective, and every restart of the trial) times the price of what the trial
function requests, from :data:`MODAL_PRICES`. CPU and memory are priced at the request (Modal's
default of 0.125 cores and 128 MiB where none is given); Modal bills usage above the request
too, which this does not see. A GPU fallback list is priced at its dearest type.

The table is overridable: ``SWEEPER_PRICES`` names a JSON file (or holds the JSON) whose
entries replace the defaults::

    {"date": "2026-12-01", "source": "our contract", "gpu": {"H100": 0.00095},
     "cpu_core": 0.0000131, "memory_gib": 0.00000222, "unit": "second", "multiplier": 1.0}

``unit`` may be ``"hour"``; ``multiplier`` scales everything (Modal's region or
non-preemptible multipliers). Locally every price is 0 and the same code runs.
"""

from __future__ import annotations

import collections
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sweeper._errors import ConfigError

PRICES_ENV = "SWEEPER_PRICES"
COST_KEY = "sweeper:cost"
"""The system attribute with a trial's container seconds and estimated cost."""

MODAL_PRICES_DATE = "2026-05-25"
MODAL_PRICES_SOURCE = "https://modal.com/pricing"
MODAL_GPU_PER_SECOND: Mapping[str, float] = {
    "T4": 0.000164,
    "L4": 0.000222,
    "A10": 0.000306,
    "A10G": 0.000306,
    "L40S": 0.000542,
    "A100": 0.000583,
    "A100-40GB": 0.000583,
    "A100-80GB": 0.000694,
    "RTX-PRO-6000": 0.000842,
    "H100": 0.001097,
    "H100!": 0.001097,
    "H200": 0.001261,
    "B200": 0.001736,
    "B200+": 0.001736,
}
"""US dollars per GPU per second, on Modal's pricing page (base prices: no region or
non-preemptible multiplier, neither of which sweeper asks for)."""
MODAL_CPU_CORE_PER_SECOND = 0.0000131
"""Per physical core per second (Modal's minimum request is 0.125 cores)."""
MODAL_MEMORY_GIB_PER_SECOND = 0.00000222
MODAL_DEFAULT_CPU = 0.125
MODAL_DEFAULT_MEMORY_MIB = 128

_RECENT = 64
"""How many finished trials the typical trial's container time is taken from."""


@dataclass(frozen=True)
class PriceTable:
    """Prices per second, in US dollars, and the day they were Modal's."""

    date: str
    source: str
    gpu: Mapping[str, float]
    cpu_core: float
    memory_gib: float
    multiplier: float = 1.0
    overridden_by: str | None = None
    """Where an override came from (``SWEEPER_PRICES``), if one did."""

    @property
    def provenance(self) -> str:
        """``estimated from Modal's prices of <date>`` (or the override's)."""
        if self.overridden_by is None:
            return f"estimated from Modal's prices of {self.date}"
        return f"estimated from the prices of {self.date} in {self.overridden_by}"

    def gpu_price(self, name: str) -> float | None:
        for key, price in self.gpu.items():
            if key.upper() == name.upper():
                return price
        return None

    def rate(self, resources: Resources) -> Rate:
        """What one container with ``resources`` costs per second."""
        parts: list[tuple[str, float]] = []
        unpriced: list[str] = []
        if resources.gpu:
            priced = []
            for choice in resources.gpu:
                kind, count = parse_gpu(choice)
                price = self.gpu_price(kind)
                if price is None:
                    unpriced.append(kind)
                else:
                    priced.append((price * count, f"{count} x {kind}"))
            if priced:
                price, label = max(priced)
                if len(resources.gpu) > 1:
                    label += " (the dearest of the fallback list)"
                parts.append((label, price))
        cpu = resources.cpu if resources.cpu is not None else MODAL_DEFAULT_CPU
        cpu = max(cpu, MODAL_DEFAULT_CPU)
        parts.append((f"{cpu:g} CPU core{'s' if cpu != 1 else ''}", cpu * self.cpu_core))
        memory = resources.memory_mib or MODAL_DEFAULT_MEMORY_MIB
        parts.append((f"{memory} MiB", memory / 1024 * self.memory_gib))
        parts = [(label, price * self.multiplier) for label, price in parts]
        return Rate(
            per_second=sum(price for _, price in parts),
            parts=tuple(parts),
            provenance=self.provenance,
            unpriced=tuple(unpriced),
        )


@dataclass(frozen=True)
class Resources:
    """What one trial container asks for."""

    gpu: tuple[str, ...] = ()
    """GPU types, each ``TYPE`` or ``TYPE:COUNT``; several are a fallback list."""
    cpu: float | None = None
    memory_mib: int | None = None

    @classmethod
    def of(cls, config: Any) -> Resources:
        """The resources a sweep's options ask for."""
        return cls(gpu=tuple(config.gpu or ()), cpu=config.cpu, memory_mib=config.memory)


@dataclass(frozen=True)
class Rate:
    """The price of one container, per second, and what it is made of."""

    per_second: float
    parts: tuple[tuple[str, float], ...] = ()
    provenance: str = "local workers cost nothing"
    unpriced: tuple[str, ...] = ()
    """GPU types the table has no price for (priced at 0 here)."""

    @classmethod
    def free(cls) -> Rate:
        """Local workers: the same bookkeeping, at no cost."""
        return cls(per_second=0.0)

    @property
    def per_hour(self) -> float:
        return self.per_second * 3600

    @property
    def priced(self) -> bool:
        """Whether trials cost anything (so that there is a cost to show)."""
        return self.per_second > 0

    def breakdown(self) -> str:
        """``1 x H100 $3.9492/h + 0.125 CPU cores $0.0059/h + 128 MiB $0.0010/h``."""
        return " + ".join(
            f"{label} {format_usd(price * 3600, exact=True)}/h" for label, price in self.parts
        )


def parse_gpu(text: str) -> tuple[str, int]:
    """``"H100:8"`` -> ``("H100", 8)``."""
    kind, _, count = text.strip().partition(":")
    try:
        number = int(count) if count else 1
    except ValueError:
        raise ConfigError(
            f"gpu {text!r}: the count after ':' must be a whole number, as in H100:8."
        ) from None
    return kind.strip(), max(1, number)


def modal_prices(environ: Mapping[str, str] | None = None) -> PriceTable:
    """Modal's prices, with what ``SWEEPER_PRICES`` overrides."""
    table = PriceTable(
        date=MODAL_PRICES_DATE,
        source=MODAL_PRICES_SOURCE,
        gpu=dict(MODAL_GPU_PER_SECOND),
        cpu_core=MODAL_CPU_CORE_PER_SECOND,
        memory_gib=MODAL_MEMORY_GIB_PER_SECOND,
    )
    environ = os.environ if environ is None else environ
    value = environ.get(PRICES_ENV, "").strip()
    if not value:
        return table
    where = PRICES_ENV if value.startswith("{") else value
    try:
        text = value if value.startswith("{") else Path(value).expanduser().read_text()
        data = json.loads(text)
    except OSError as error:
        raise ConfigError(
            f"{PRICES_ENV}={value}: cannot read it ({error.strerror}). Give a JSON file of "
            "prices, or unset it to use Modal's."
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{PRICES_ENV} ({where}) is not valid JSON: {error.msg}.") from None
    return _override(table, data, where)


def _override(table: PriceTable, data: Any, where: str) -> PriceTable:
    known = {"date", "source", "gpu", "cpu_core", "memory_gib", "unit", "multiplier"}
    if not isinstance(data, dict) or not set(data) <= known:
        extra = sorted(set(data) - known) if isinstance(data, dict) else None
        raise ConfigError(
            f"{PRICES_ENV} ({where}) must be a JSON object with some of "
            f"{', '.join(sorted(known))}" + (f"; unknown: {', '.join(extra)}." if extra else ".")
        )
    unit = data.get("unit", "second")
    if unit not in ("second", "hour"):
        raise ConfigError(
            f"{PRICES_ENV} ({where}): unit must be 'second' or 'hour'; got {unit!r}."
        )
    scale = 1 / 3600 if unit == "hour" else 1.0

    def price(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(
                f"{PRICES_ENV} ({where}): {name} must be a price of 0 or more; got {value!r}."
            )
        if math.isinf(value):
            raise ConfigError(f"{PRICES_ENV} ({where}): {name} must be finite.")
        return float(value) * scale

    gpu = dict(table.gpu)
    if "gpu" in data:
        if not isinstance(data["gpu"], dict):
            raise ConfigError(f"{PRICES_ENV} ({where}): gpu must map GPU types to prices.")
        for name, value in data["gpu"].items():
            gpu = {k: v for k, v in gpu.items() if k.upper() != str(name).upper()}
            gpu[str(name)] = price(f"gpu {name}", value)
    multiplier = data.get("multiplier", 1.0)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier <= 0:
        raise ConfigError(f"{PRICES_ENV} ({where}): multiplier must be positive.")
    return replace(
        table,
        date=str(data.get("date", table.date)),
        source=str(data.get("source", where)),
        gpu=gpu,
        cpu_core=price("cpu_core", data["cpu_core"]) if "cpu_core" in data else table.cpu_core,
        memory_gib=(
            price("memory_gib", data["memory_gib"]) if "memory_gib" in data else table.memory_gib
        ),
        multiplier=float(multiplier),
        overridden_by=PRICES_ENV if where == PRICES_ENV else f"{PRICES_ENV} ({where})",
    )


def rate_for(config: Any, environ: Mapping[str, str] | None = None) -> Rate:
    """The price of one of the sweep's containers (0 on the local backend). A budget with a
    GPU the table has no price for is refused: it could never be reached."""
    if config.backend != "modal":
        return Rate.free()
    rate = modal_prices(environ).rate(Resources.of(config))
    if rate.unpriced and getattr(config, "budget", None) is not None:
        names = ", ".join(rate.unpriced)
        raise ConfigError(
            f"--budget needs the price of GPU {names}, which the price table of "
            f"{modal_prices(environ).date} does not have. Give it in {PRICES_ENV} (a JSON "
            'file such as {"gpu": {"' + rate.unpriced[0] + '": 0.001}}, in $ per second).'
        )
    return rate


# -- what a sweep spends -------------------------------------------------------------------


@dataclass(frozen=True)
class TrialCost:
    """What one trial cost: the seconds it held a container, and their price."""

    seconds: float
    usd: float

    def record(self, rate: Rate) -> dict[str, Any]:
        """The trial's ``sweeper:cost`` system attribute."""
        return {
            "usd": round(self.usd, 6),
            "container_seconds": round(self.seconds, 3),
            "usd_per_hour": round(rate.per_hour, 6),
            "prices": rate.provenance,
        }


@dataclass
class CostMeter:
    """The container time and estimated cost of a sweep's trials, and its ``--budget``.

    A trial is metered from :meth:`start` (handed to the backend) to :meth:`finish` (its
    result told). The budget is reached when what was spent, plus what the running trials
    are expected to cost in all, plus a typical trial, would pass it: then no trial is
    asked for any more (the decision is final), and the running ones finish.

    Called from the orchestrator's thread only; ``clock`` is the backend's.
    """

    rate: Rate = field(default_factory=Rate.free)
    budget: float | None = None
    clock: Callable[[], float] = time.monotonic
    spent: float = 0.0
    seconds: float = 0.0
    trials: int = 0
    reached: str | None = None
    """Why the budget stopped the sweep, once it did."""
    prior: float = 0.0
    """What the study's trials of earlier sweeps cost (for the study's total)."""
    _running: dict[int, float] = field(default_factory=dict)
    _recent: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_RECENT)
    )

    def start(self, number: int) -> None:
        self._running[number] = self.clock()

    def finish(self, number: int) -> TrialCost:
        started = self._running.pop(number, None)
        seconds = max(0.0, self.clock() - started) if started is not None else 0.0
        cost = TrialCost(seconds, seconds * self.rate.per_second)
        self.spent += cost.usd
        self.seconds += seconds
        self.trials += 1
        self._recent.append(seconds)
        return cost

    @property
    def priced(self) -> bool:
        return self.rate.priced

    def running_cost(self) -> float:
        """What the running trials have cost so far."""
        now = self.clock()
        return sum(now - start for start in self._running.values()) * self.rate.per_second

    def typical(self) -> float | None:
        """A typical trial's container seconds, once some have finished."""
        return statistics.median(self._recent) if self._recent else None

    def projected(self) -> float:
        """What the running trials are expected to cost in all: each at least a typical
        trial, and at least what it has cost so far."""
        now = self.clock()
        typical = self.typical() or 0.0
        return sum(max(now - start, typical) for start in self._running.values()) * (
            self.rate.per_second
        )

    def exhausted(self) -> str | None:
        """Why no trial may be asked for any more, or None while the budget lasts."""
        if self.reached is not None or self.budget is None or not self.priced:
            return self.reached
        projected = self.projected()
        typical = self.typical()
        next_trial = typical * self.rate.per_second if typical is not None else 0.0
        if self.spent + projected + next_trial < self.budget:
            return None
        running = len(self._running)
        self.reached = (
            f"the budget of {format_usd(self.budget)} was reached: {format_usd(self.spent)} "
            f"spent, {format_usd(projected)} expected for the {running} running "
            f"trial{'s' if running != 1 else ''}"
            + (f", {format_usd(next_trial)} for another" if next_trial else "")
            + f" ({self.rate.provenance})"
        )
        return self.reached

    def spend(self) -> Spend:
        return Spend(
            spent=self.spent,
            running=self.running_cost(),
            seconds=self.seconds,
            trials=self.trials,
            per_hour=self.rate.per_hour,
            provenance=self.rate.provenance,
            budget=self.budget,
            reached=self.reached,
            prior=self.prior,
        )


@dataclass(frozen=True)
class Spend:
    """What a sweep has cost so far, for displays."""

    spent: float
    running: float = 0.0
    """What the running trials have cost so far (not in ``spent`` yet)."""
    seconds: float = 0.0
    trials: int = 0
    per_hour: float = 0.0
    provenance: str = ""
    budget: float | None = None
    reached: str | None = None
    prior: float = 0.0
    """What the study's trials of earlier sweeps cost."""

    @property
    def total(self) -> float:
        """What this sweep has cost so far, running trials included."""
        return self.spent + self.running


def format_usd(amount: float, *, exact: bool = False) -> str:
    """``$12.34``; small amounts keep their digits (``$0.0042``), large ones drop cents."""
    if amount == 0:
        return "$0"
    if exact or abs(amount) < 1:
        return f"${amount:.4f}" if abs(amount) < 10 else f"${amount:,.2f}"
    if abs(amount) < 1000:
        return f"${amount:.2f}"
    return f"${amount:,.0f}"


def study_cost(records: Iterable[Any]) -> tuple[float, float, int, Sequence[str]] | None:
    """The total of trials' ``sweeper:cost`` attributes: dollars, container seconds, how many
    trials, and the price tables used; None when no trial cost anything."""
    usd = seconds = 0.0
    count = 0
    tables: list[str] = []
    for record in records:
        if not isinstance(record, dict):
            continue
        amount = record.get("usd")
        if not isinstance(amount, (int, float)) or amount <= 0:
            continue
        usd += float(amount)
        seconds += float(record.get("container_seconds") or 0.0)
        count += 1
        prices = record.get("prices")
        if isinstance(prices, str) and prices not in tables:
            tables.append(prices)
    return (usd, seconds, count, tables) if count else None


def study_cost_line(trials: Iterable[Any]) -> str | None:
    """``status``'s line on what the study's trials cost, or None if they cost nothing."""
    total = study_cost(trial.system_attrs.get(COST_KEY) for trial in trials)
    if total is None:
        return None
    usd, seconds, count, tables = total
    hours = seconds / 3600
    return (
        f"estimated cost: {format_usd(usd)} for {hours:.2f} container-hours over {count} "
        f"trial{'s' if count != 1 else ''} ({'; '.join(tables) or 'estimated'})"
    )
