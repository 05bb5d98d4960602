"""What a trial reports to the scheduler and searcher, and what counts as collapse.

The robust objective is the median over seeds of the objective metric, a diverged seed counted as
the metric's finite worst value (`METRICS[m].worst`), so it is always finite. A seed is collapsed
when it captures too few of the data's modes.
"""

import math
import statistics
from typing import Any

from ganlab.metrics import METRICS


def collapse_threshold(n_modes: int) -> float:
    """A seed has collapsed when it captures at most this many modes (1 of 8, 2 of 25, ...)."""
    return max(1.0, math.floor(n_modes / 10))


def is_collapsed(metrics: dict[str, float], n_modes: int) -> bool | None:
    """Whether one seed's evaluation `metrics` show collapse; None where modes are undefined."""
    if "modes" not in metrics or n_modes <= 1:
        return None
    return metrics["modes"] <= collapse_threshold(n_modes)


def robust_objective(per_seed: dict[str, dict[str, Any]], metric: str, mode: str) -> float:
    """Median over seeds of `metric`, a diverged seed counted as the metric's finite worst."""
    worst = METRICS[metric].worst
    values = []
    for result in per_seed.values():
        value = result.get(metric, worst)
        values.append(value if math.isfinite(value) else worst)
    return float(statistics.median(values))
