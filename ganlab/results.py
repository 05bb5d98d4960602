"""The results tables: the schema, atomic writes, and `load` for pandas users.

Three parquet files sit in a run directory:

- `trials.parquet`: one row per (trial, seed) with every configuration field as a typed column.
- `metrics.parquet`: long form, one row per (trial, seed, evaluation step).
- `samples.parquet`: samples each seed drew at its last evaluation (and real ones per dataset).
"""

import dataclasses
import os
import tempfile
from pathlib import Path

import pandas as pd

from ganlab.config import TrialConfig
from ganlab.metrics import METRICS

TRIALS = "trials.parquet"
METRICS_TABLE = "metrics.parquet"
SAMPLES = "samples.parquet"

STATUSES = ("completed", "diverged", "collapsed", "pruned", "error")
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name != "seeds")
METRIC_NAMES = tuple(METRICS)
SIGNALS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g",
           "wall_s", "samples_per_s")  # fmt: skip

TRIAL_COLUMNS = (
    ("sweep", "trial_id", "config_id", "seed")
    + CONFIG_COLUMNS
    + ("status", "diverged_step", "objective", "div_rate")
    + tuple(f"final_{m}" for m in METRIC_NAMES)
    + tuple(f"best_{m}" for m in METRIC_NAMES)
    + ("steps_done", "wall_s", "device_used", "node", "protocol", "ganlab_version", "git_sha")
)
METRIC_COLUMNS = (
    ("sweep", "trial_id", "config_id", "seed", "step", "diverged")
    + METRIC_NAMES
    + SIGNALS
    + ("objective", "div_rate")
)
SAMPLE_COLUMNS = (
    "sweep", "trial_id", "config_id", "seed", "step", "source", "dataset", "shape", "values",
)  # fmt: skip


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The configuration columns present in a trials table, in schema order."""
    return [c for c in CONFIG_COLUMNS if c in trials.columns]


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write parquet through a temporary file and a rename: readers never see half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(trials, metrics)` of a run directory as DataFrames."""
    run_dir = Path(run_dir)
    missing = [name for name in (TRIALS, METRICS_TABLE) if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no {', '.join(missing)} (run `ganlab sweep` first)")
    return pd.read_parquet(run_dir / TRIALS), pd.read_parquet(run_dir / METRICS_TABLE)


def load_samples(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The samples table; empty (with the schema's columns) where none was saved."""
    path = Path(run_dir) / SAMPLES
    if not path.exists():
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return pd.read_parquet(path)
