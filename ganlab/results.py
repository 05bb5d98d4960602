"""The results tables: the schema, atomic writes, and `load` for pandas users.

Three parquet tables sit in a run directory:

- `trials.parquet`: one row per (trial, seed) with every configuration field as a typed column.
- `metrics.parquet`: long form, one row per (trial, seed, evaluation step).
- `samples.parquet`: samples each seed drew at its last evaluation (and real ones per dataset).

A sweep writes each table as a directory of parts, one per trial (`trials.parquet/<trial
id>.parquet`), merged into segments once trials finish (`ganlab.tableparts`), so that collecting
a changed trial rewrites only its own rows; `load` reads such a directory as one table. A table
may also be a single file. Every file is written through a temporary file and a rename, so a
reader never sees half of one.
"""

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ganlab import rundir, tableparts
from ganlab.config import TrialConfig
from ganlab.metrics import METRICS
from ganlab.reports import SIGNALS as PER_SEED_SIGNALS
from ganlab.spec import BadInput

# The tables' names in a run directory (`ganlab.rundir`), here for users of `results`.
TRIALS, METRICS_TABLE, SAMPLES = rundir.TRIALS, rundir.METRICS_TABLE, rundir.SAMPLES

# A seed's status in the trials table (`collect.seed_status`); `running` only while its trial
# runs, in tables collected during a sweep.
STATUSES = ("completed", "diverged", "collapsed", "pruned", "running", "error")
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name != "seeds")
METRIC_NAMES = tuple(METRICS)
SIGNALS = PER_SEED_SIGNALS + ("wall_s", "samples_per_s")  # the last two are per trial

TRIAL_COLUMNS = (
    ("sweep", "trial_id", "config_id", "seed")
    + CONFIG_COLUMNS
    + ("status", "error", "diverged_step", "objective", "div_rate")
    + tuple(f"final_{m}" for m in METRIC_NAMES)
    + tuple(f"best_{m}" for m in METRIC_NAMES)
    + (
        "steps_done",
        "wall_s",
        "started_at",
        "ended_at",
        "device_used",
        "device_name",
        "reseeded_step",
        "node",
        "node_ip",
        "protocol",
        "ganlab_version",
        "git_sha",
    )
)
METRIC_COLUMNS = (
    ("sweep", "trial_id", "config_id", "seed", "step", "diverged")
    + METRIC_NAMES
    + SIGNALS
    + ("objective", "div_rate", "protocol")
)
SAMPLE_COLUMNS = (
    "sweep", "trial_id", "config_id", "seed", "step", "source", "dataset", "shape", "values",
)  # fmt: skip

_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_NAMED_TYPES = {
    "seed": pa.int64(), "step": pa.int64(), "diverged_step": pa.int64(),
    "steps_done": pa.int64(), "reseeded_step": pa.int64(), "diverged": pa.bool_(),
    "shape": pa.list_(pa.int64()),
    "values": pa.list_(pa.float32()),
}  # fmt: skip
# read back as pandas' Int64
NULLABLE_INTS = ("diverged_step", "n_eval", "n_eval_rung", "reseeded_step")


def _config_type(name: str) -> pa.DataType:
    hint = typing.get_type_hints(TrialConfig)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return _ARROW_TYPES[next(o for o in options if o is not type(None))]


def _schema(columns: tuple[str, ...]) -> pa.Schema:
    def kind(name: str) -> pa.DataType:
        if name in _NAMED_TYPES:
            return _NAMED_TYPES[name]
        if name in CONFIG_COLUMNS:
            return _config_type(name)
        numeric = name in METRIC_NAMES + SIGNALS or name.startswith(("final_", "best_"))
        numeric = numeric or name in ("objective", "div_rate", "started_at", "ended_at")
        return pa.float64() if numeric else pa.string()

    return pa.schema([(name, kind(name)) for name in columns])


SCHEMAS = {
    TRIALS: _schema(TRIAL_COLUMNS),
    METRICS_TABLE: _schema(METRIC_COLUMNS),
    SAMPLES: _schema(SAMPLE_COLUMNS),
}


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The configuration columns present in a trials table, in schema order."""
    return [c for c in CONFIG_COLUMNS if c in trials.columns]


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write one parquet file atomically (a temporary file, then a rename)."""
    rundir.atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_part(table_dir: Path, name: str, rows: list[dict] | pa.Table) -> Path:
    """Write one part (a trial's rows) of a table kept as a directory of parts."""
    schema = SCHEMAS[table_dir.name]
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    return tableparts.write_part(table_dir, name, table, schema)


def read_table(path: str | os.PathLike, trial_ids: set[str] | None = None) -> pd.DataFrame:
    """A table from its file, or from its directory of parts (`ganlab.tableparts`); only the
    rows of `trial_ids` where given."""
    path = Path(path)
    if path.is_file():
        frame = pd.read_parquet(path)
        return frame if trial_ids is None else frame[frame.trial_id.isin(trial_ids)]
    frame = tableparts.read(path, SCHEMAS[path.name], trial_ids).to_pandas()
    return frame.astype({c: "Int64" for c in NULLABLE_INTS if c in frame.columns})


def load(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(trials, metrics)` of a run directory as DataFrames."""
    run_dir = Path(run_dir)
    missing = [name for name in (TRIALS, METRICS_TABLE) if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no {', '.join(missing)} (run `ganlab sweep` first)")
    return read_table(run_dir / TRIALS), read_table(run_dir / METRICS_TABLE)


def load_samples(run_dir: str | os.PathLike, trial_ids: set[str] | None = None) -> pd.DataFrame:
    """The samples table (the real samples, and the fakes of `trial_ids` where given); empty,
    with the schema's columns, where none was saved. With many trials, ask for the ones you
    show: CIFAR-10 samples take some 2 MB a trial."""
    path = Path(run_dir) / SAMPLES
    if not path.exists():
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    if trial_ids is not None and path.is_dir():
        trial_ids = set(trial_ids) | {p.stem for p in path.glob(f"{rundir.REAL_SAMPLES_PART}*")}
    elif trial_ids is not None:
        trial_ids = set(trial_ids) | {""}
    return read_table(path, trial_ids)


def sample_trial_ids(run_dir: str | os.PathLike) -> set[str]:
    """The trials whose samples the samples table holds, read from its part names (or, for a
    single file, its `trial_id` column) without reading any sample."""
    path = Path(run_dir) / SAMPLES
    if not path.exists():
        return set()
    if path.is_dir():
        names = (p.stem for p in path.glob(rundir.part_file("*")))
        return {name for name in names if not name.startswith(rundir.REAL_SAMPLES_PART)}
    return set(pd.read_parquet(path, columns=["trial_id"])["trial_id"]) - {""}


def config_hash(config: dict) -> str:
    """Identifies a configuration regardless of its seeds."""
    without_seeds = {k: v for k, v in sorted(config.items()) if k != "seeds"}
    return hashlib.sha1(json.dumps(without_seeds, sort_keys=True).encode()).hexdigest()[:12]


MEASURED_WITH = ("extractor", "weights", "reference_sha")
"""The protocol's keys that say what a number was measured with: rows that differ in them hold
numbers that are not comparable."""


class Incomparable(BadInput):
    """Rows measured with different extractors or references, asked to be ranked together."""


def measurements(trials: pd.DataFrame) -> dict[tuple[str, ...], int]:
    """Rows per (extractor, weights hash, reference hash) of their protocol; rows without a
    protocol (a trial that failed before its first evaluation) measured nothing."""
    found: dict[tuple[str, ...], int] = {}
    for text, count in trials["protocol"].fillna("").value_counts().items():
        if text:
            protocol = json.loads(text)
            key = tuple(str(protocol.get(name, "")) for name in MEASURED_WITH)
            found[key] = found.get(key, 0) + int(count)
    return found


def check_comparable(trials: pd.DataFrame, where: str) -> None:
    """Raise `Incomparable` where `trials` were measured with more than one extractor or
    reference (different weights, different real statistics)."""
    found = measurements(trials)
    if len(found) <= 1:
        return
    kinds = "; ".join(
        f"{count} rows by {extractor} {weights or '(no weights)'} against reference "
        f"{reference or '(unrecorded)'}"
        for (extractor, weights, reference), count in sorted(found.items())
    )
    raise Incomparable(
        f"{where}: its rows were measured with {len(found)} different extractors or reference "
        f"statistics ({kinds}); their numbers are not comparable, so they are not ranked "
        "together. Rank each apart (e.g. `ganlab results RUN --where \"dataset == 'mnist'\"`)."
    )


def summarise(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (a configuration over its seeds), best objective first; refuses
    (`Incomparable`) rows measured with different extractors or references."""
    check_comparable(trials, "results")
    varying = [c for c in config_columns(trials) if trials[c].nunique(dropna=False) > 1]
    metric = trials["metric"].iloc[0] if len(trials) else "fid"
    grouped = trials.groupby("trial_id", sort=False)
    summary = grouped[varying + ["objective", "div_rate"]].first()
    summary[f"median_{metric}"] = grouped[f"final_{metric}"].median()
    summary["seeds"] = grouped.size()
    summary["statuses"] = grouped["status"].agg(lambda s: ",".join(sorted(set(s))))
    ascending = len(trials) == 0 or trials["mode"].iloc[0] == "min"
    return summary.reset_index().sort_values("objective", ascending=ascending, kind="stable")
