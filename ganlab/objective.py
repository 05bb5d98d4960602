"""What a trial reports to the scheduler and searcher, and what counts as collapse.

Robust objective: the median over seeds of the objective metric, a diverged seed counted as the
metric's finite worst value (`METRICS[m].worst`: 1e5 for the min-metrics, -1 for the
max-metrics, below any real value since they are all >= 0). With an even number of seeds the
median is the worse of the two middle values, so a diverged half of the seeds is never averaged
into a number no seed reached. The objective's `mode` is the metric's own direction.

Collapse, one rule for every dataset with modes: a seed has collapsed when it covers few modes
well. `good_modes` = hq · n_modes · exp(-kl_modes) is the share of high-quality samples times the
perplexity of the mode histogram (the effective number of modes it spreads over): k modes hit
evenly by high-quality samples count k, a mode-covering but diffuse generator counts only its
high-quality share of them. A seed is collapsed when `good_modes` <= max(1, ⌊n_modes/10⌋).
"""

import math
from collections.abc import Iterable
from typing import Any

from ganlab.metrics import METRICS
from ganlab.reports import SeedReport


def default_metric(dataset: str) -> str:
    """A data set's own objective metric: `good_modes` on 2-D mixtures, where FID is blind to
    modes (a single Gaussian with the ring's moments beats real ring samples), else `fid`."""
    from ganlab.data import DATASETS

    source = DATASETS[dataset]
    return "good_modes" if source.modes and source.extractor == "raw" else "fid"


def collapse_threshold(n_modes: int) -> float:
    """A seed has collapsed when it covers at most this many modes well (1 of 8, 2 of 25)."""
    return max(1.0, math.floor(n_modes / 10))


def good_modes(metrics: dict[str, float], n_modes: int) -> float:
    """hq · n_modes · exp(-kl_modes): modes covered by high-quality samples, effectively."""
    return metrics["hq"] * n_modes * math.exp(-metrics["kl_modes"])


def mode_outcome(metrics: dict[str, float], n_modes: int) -> dict[str, Any]:
    """`good_modes` and `collapsed` of one seed's evaluation; {} where modes are undefined."""
    if "modes" not in metrics or n_modes <= 1:
        return {}
    good = good_modes(metrics, n_modes)
    return {"good_modes": good, "collapsed": good <= collapse_threshold(n_modes)}


def check_direction(metric: str, mode: str) -> str | None:
    """What is wrong with optimising `metric` in `mode`, or None when they agree."""
    expected = METRICS[metric].mode
    if mode == expected:
        return None
    better = "lower" if expected == "min" else "higher"
    return f"{mode!r} disagrees with {metric!r}, where {better} is better: use mode {expected!r}"


def robust_objective(seeds: Iterable[SeedReport], metric: str, mode: str) -> float:
    """Median over seeds of `metric`, a diverged seed (or a non-finite value) counted as the
    metric's finite worst; of two middle values (even seed count) the worse one."""
    worst = METRICS[metric].worst
    values = []
    for seed in seeds:
        value = worst if seed.diverged else seed.metrics[metric]
        values.append(value if math.isfinite(value) else worst)
    values.sort(reverse=mode == "max")  # best first
    return float(values[len(values) // 2])
