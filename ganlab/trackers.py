"""Trackers: the tools a sweep is watched with while it runs (TensorBoard, MLflow, W&B).

A sweep file's `loggers:` names them (default `[tensorboard]`, `[]` for none). Each is one of
Ray Tune's own logger callbacks (`ganlab.loggers`), fed ganlab's view of a trial rather than Ray's
flattened result: one run per trial, every value at the GAN step it was measured at, per-seed
series (`seed_3/fid`) beside the robust objective, the trial's configuration as
hyperparameters, each seed's status at the end, and a picture of each live seed's samples at
every evaluation (an image grid, or 2-D points drawn over the real data).

The pictures come from the samples every checkpoint holds (`samples.pt`, which the tables'
samples are read from too): the driver reads the checkpoint of each report when Tune registers
it, so reports and result.json stay as they were.

This module stays cheap to import (`ganlab.spec` validates names against `TRACKERS`): each
factory imports Ray and its tool when it runs.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ray.tune import Callback

    from ganlab.reports import EvalReport
    from ganlab.spec import SweepSpec


@dataclass(frozen=True)
class Tracker:
    """A tool a sweep logs to: the package extra it needs and how its callback is made."""

    extra: str  # `pip install 'ganlab[<extra>]'`
    modules: tuple[str, ...]  # what its callback imports
    make: Callable[[SweepSpec, Path], Callback]


TRACKERS: dict[str, Tracker] = {}
"""logger name -> Tracker; `loggers:` in a sweep file takes these names."""


def _tracker(name: str, extra: str, modules: tuple[str, ...]):
    def add(make: Callable[[SweepSpec, Path], Callback]) -> Callable[[SweepSpec, Path], Callback]:
        from ganlab.registry import register

        register(TRACKERS, name)(Tracker(extra, modules, make))
        return make

    return add


@_tracker("tensorboard", "tensorboard", ("tensorboardX",))
def _tensorboard(spec: SweepSpec, run_dir: Path) -> Callback:
    from ganlab.loggers import TensorBoardLogger

    return TensorBoardLogger(spec, run_dir)


@_tracker("mlflow", "mlflow", ("mlflow",))
def _mlflow(spec: SweepSpec, run_dir: Path) -> Callback:
    from ganlab.loggers import MLflowLogger

    return MLflowLogger(spec, run_dir)


@_tracker("wandb", "wandb", ("wandb",))
def _wandb(spec: SweepSpec, run_dir: Path) -> Callback:
    from ganlab.loggers import WandbLogger

    return WandbLogger(spec, run_dir)


def missing(names: Iterable[str]) -> list[str]:
    """What `pip install` line each of the trackers `names` still needs here: ["mlflow needs
    the `mlflow` package: pip install 'ganlab[mlflow]'", ...]; [] when all import."""
    problems = []
    for name in names:
        tracker = TRACKERS[name]
        for module in tracker.modules:
            try:
                importlib.import_module(module)
            except ImportError as error:
                problems.append(f"{name} needs the `{module}` package ({error}): pip install "
                                f"'ganlab[{tracker.extra}]'")  # fmt: skip
    return problems


def check_installed(spec: SweepSpec) -> None:
    """Every tracker the sweep names imports here (and W&B has its API key, or runs offline),
    or a SpecError on `loggers` (exit 2)."""
    from ganlab.spec import SpecError

    problems = missing(spec.loggers)
    if not problems and "wandb" in spec.loggers:
        from ganlab import rayprivate

        no_key = rayprivate.wandb_key_problem()
        problems = [] if no_key is None else [f"wandb: {no_key} (or set WANDB_MODE=offline)"]
    if problems:
        raise SpecError(spec.path, "loggers", "; ".join(problems))


# --- ganlab's view of a trial ------------------------------------------------------------------

NOT_HYPERPARAMETERS = ("seeds", "device", "data_dir", "download", "execution", "cuda_graphs")
"""Trial fields that say where and how a trial ran, not what was trained (`trial.PLACEMENT`)."""


def scalars(report: EvalReport) -> dict[str, float]:
    """An evaluation's numbers by tracker key: the trial's summary (`objective`, `div_rate`,
    ...) and each seed's metrics, signals and fate as `seed_<n>/<name>`. Values that are not
    finite are left out (a diverged seed has no metrics): no tracker draws them alike."""
    values: dict[str, float] = {
        "objective": report.objective,
        "div_rate": report.div_rate,
        "collapse_rate": report.collapse_rate,
        "wall_s": report.wall_s,
        "samples_per_s": report.samples_per_s,
    }
    for seed, seed_report in sorted(report.seeds.items()):
        own = {**seed_report.metrics, **seed_report.signals, "diverged": seed_report.diverged}
        if seed_report.collapsed is not None:
            own["collapsed"] = seed_report.collapsed
        values.update((f"seed_{seed}/{name}", value) for name, value in own.items())
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


def hyperparameters(trial_config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The configuration a trial trained, as the trackers' hyperparameters (None: not set)."""
    return {
        key: value
        for key, value in trial_config.items()
        if key not in NOT_HYPERPARAMETERS and isinstance(value, str | int | float | bool)
    }


def statuses(report: EvalReport, failed: bool, steps: int) -> dict[int, str]:
    """Each seed's status after the trial's last report, by the tables' rule."""
    from ganlab.collect import seed_status

    return {
        seed: seed_status(seed_report, report, failed, steps)
        for seed, seed_report in sorted(report.seeds.items())
    }


def pictures(
    samples: dict[int, Any], report: EvalReport, real: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """`seed_<n>/samples` -> an (H, W, 3) uint8 picture of each seed live at `report` (a
    checkpoint keeps a diverged seed's last samples: they are not shown again)."""
    shown = {}
    for seed, seed_report in sorted(report.seeds.items()):
        if seed_report.diverged or seed not in samples:
            continue
        values = np.asarray(samples[seed], dtype=np.float32)
        shown[f"seed_{seed}/samples"] = picture(values, real)
    return shown


PICTURE_IMAGES = 32  # samples in an image grid: 4 rows of 8
MIN_TILE = 32  # pixels: small images (digits are 8×8) are enlarged to at least this
POINTS_SIZE = 160  # pixels of a square 2-D scatter
REAL_GREY, FAKE_BLUE = (200, 200, 200), (31, 119, 180)


def picture(samples: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """Samples as one (H, W, 3) uint8 picture: (N, C, H, W) images in [-1, 1] as a grid (the
    report's `image_grid`), (N, 2) points as a scatter over the `real` data."""
    if samples.ndim == 4:
        from analysis.samples import image_grid

        grid = image_grid(samples[:PICTURE_IMAGES])
        grid = np.repeat(grid[..., None], 3, axis=-1) if grid.ndim == 2 else grid
        scale = max(1, math.ceil(MIN_TILE / samples.shape[-1]))
        return np.ascontiguousarray(grid.repeat(scale, axis=0).repeat(scale, axis=1))
    if samples.ndim == 2 and samples.shape[1] == 2:
        return _scatter(samples, real)
    raise ValueError(f"samples of shape {samples.shape} are neither 2-D points nor images")


def _scatter(points: np.ndarray, real: np.ndarray | None) -> np.ndarray:
    """Fakes (blue, 2×2 pixels) over the real data (grey), on axes 1.25× the real data's reach;
    a fake outside them is drawn on the border."""
    reference = real if real is not None and len(real) else points
    finite = reference[np.isfinite(reference).all(axis=1)]
    reach = 1.25 * float(np.abs(finite).max()) if len(finite) else 1.0
    canvas = np.full((POINTS_SIZE, POINTS_SIZE, 3), 255, np.uint8)
    for values, colour, size in ((real, REAL_GREY, 1), (points, FAKE_BLUE, 2)):
        if values is None:
            continue
        values = values[np.isfinite(values).all(axis=1)]
        last = POINTS_SIZE - size
        cols = np.clip((values[:, 0] / reach + 1) / 2 * last, 0, last).astype(int)
        rows = np.clip((1 - values[:, 1] / reach) / 2 * last, 0, last).astype(int)  # y up
        for dy in range(size):
            for dx in range(size):
                canvas[rows + dy, cols + dx] = colour
    return canvas
