"""``sweeper.plot``: the usual plots of a study, without writing plotting code."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from sweeper._errors import UsageError
from sweeper._logging import get_logger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = get_logger(__name__)


class Plots(list["Figure"]):
    """The figures :func:`plot` made. A notebook shows them when this is a cell's result."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for figure in self:
            display(figure)

    def save(self, folder: str | os.PathLike[str], format: str = "png") -> list[Path]:
        """Write each figure to ``folder`` (created if needed); return the paths."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for figure in self:
            path = target / f"{figure.get_label() or 'figure'}.{format}"
            figure.savefig(path, bbox_inches="tight")
            paths.append(path)
        return paths


def plot(study: optuna.Study) -> Plots:
    """Make the usual plots of ``study`` with Optuna's matplotlib visualizations.

    One objective: the optimization history, the learning curves (intermediate values,
    when trials report), and the parameter importances. Several objectives: the Pareto
    front (for 2 or 3) and the parameter importances for each objective. Plots that the
    study has too few trials for are left out.

    In a notebook, end a cell with ``sweeper.plot(study)`` to show them; elsewhere, call
    ``.save(folder)`` on the result, or use the figures directly.
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial to plot yet.")
    names = {name for t in complete for name in t.params}
    makers: list[tuple[str, Callable[[], Any]]] = []
    if len(study.directions) == 1:
        makers.append(("history", lambda: vis.plot_optimization_history(study)))
        if any(t.intermediate_values for t in trials):
            makers.append(("learning_curves", lambda: vis.plot_intermediate_values(study)))
        if len(names) >= 2 and len(complete) >= 3:
            makers.append(("importances", lambda: vis.plot_param_importances(study)))
    else:
        if len(study.directions) in (2, 3):
            makers.append(("pareto_front", lambda: vis.plot_pareto_front(study)))
        if len(names) >= 2 and len(complete) >= 3:
            for index in range(len(study.directions)):

                def importances(i: int = index) -> Any:
                    return vis.plot_param_importances(
                        study, target=lambda t: t.values[i], target_name=f"objective {i}"
                    )

                makers.append((f"importances_{index}", importances))
    figures = Plots()
    for label, make in makers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            try:
                axes = make()
            except Exception as error:  # a plot the data does not support; show the rest
                logger.warning("could not draw the %s plot: %s", label, error)
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_label(label)
        plt.close(figure)  # shown once, through Plots, not again by the inline backend
        figures.append(figure)
    return figures
