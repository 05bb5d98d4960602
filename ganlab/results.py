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

The columns are fixed (`SCHEMAS`), but for plugins' metrics (`ganlab.register.metric`): each
has a float64 column after the built-ins' (`<name>` in the metrics table, `final_<name>` and
`best_<name>` in the trials table), and every file that holds some records them in its schema's
metadata (`PLUGIN_METRICS_KEY`), so `load` reads them back in a process that never imported
the plugin. A run without plugin metrics is written as it always was.
"""

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ganlab import rundir, tableparts
from ganlab.config import TrialConfig
from ganlab.metrics import BUILT_IN, METRICS, RECORDED, Metric
from ganlab.reports import SIGNALS as PER_SEED_SIGNALS
from ganlab.spec import BadInput

# The tables' names in a run directory (`ganlab.rundir`), here for users of `results`.
TRIALS, METRICS_TABLE, SAMPLES = rundir.TRIALS, rundir.METRICS_TABLE, rundir.SAMPLES

# A seed's status in the trials table (`collect.seed_status`); `running` only while its trial
# runs, in tables collected during a sweep.
STATUSES = ("completed", "diverged", "collapsed", "pruned", "running", "error")
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name != "seeds")
METRIC_NAMES = BUILT_IN  # the fixed columns; a plugin's metrics come after (`table_schema`)
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
        "execution_used",
        "reseeded_step",
        # Population Based Training: the trial and checkpoint step it was last cloned from, and
        # every clone into it as JSON, [{"step", "from_trial", "changed": {field: [old, new]}}]
        # ("" and null where it was never cloned); its configuration columns are its last.
        "cloned_from",
        "cloned_at_step",
        "exploits",
        "node",
        "node_ip",
        "protocol",
        "ganlab_version",
        "git_sha",
        "plugins",  # the user's code that made the row: `module=sha256[:16]`, comma-separated
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
# The samples table as stored: an image seed's samples, (N, C, H, W) in [-1, 1], go in `pixels`
# as uint8, quantised as they are drawn (`to_pixels`; a quarter of float32's bytes), `values`
# null; 2-D points stay float32 `values`. `load_samples` hands back `values` either way.
STORED_SAMPLE_COLUMNS = SAMPLE_COLUMNS + ("pixels",)

_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_NAMED_TYPES = {
    "seed": pa.int64(), "step": pa.int64(), "diverged_step": pa.int64(),
    "steps_done": pa.int64(), "reseeded_step": pa.int64(), "diverged": pa.bool_(),
    "cloned_at_step": pa.int64(),
    "shape": pa.list_(pa.int64()),
    "values": pa.list_(pa.float32()),
    "pixels": pa.list_(pa.uint8()),
}  # fmt: skip
# read back as pandas' Int64
NULLABLE_INTS = ("diverged_step", "n_eval", "n_eval_rung", "reseeded_step", "cloned_at_step")


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
    SAMPLES: _schema(STORED_SAMPLE_COLUMNS),
}


PLUGIN_METRICS_KEY = b"ganlab.plugin_metrics"
"""A table file's schema metadata: the plugin metrics it has columns of, as JSON
`{name: {"mode", "worst", "doc"}}` in column order; absent where it has none."""
PLUGIN_METRIC_TABLES = (TRIALS, METRICS_TABLE)


def metric_records(names: typing.Iterable[str]) -> dict[str, dict[str, typing.Any]]:
    """What a table file records of the registered metrics `names`: mode, worst and doc."""
    return {name: {"mode": METRICS[name].mode, "worst": METRICS[name].worst,
                   "doc": METRICS[name].doc} for name in names}  # fmt: skip


def table_schema(table: str, plugin_metrics: dict[str, dict] | None = None) -> pa.Schema:
    """The schema of `table` (a name in `SCHEMAS`) with the float64 columns of `plugin_metrics`
    (`metric_records`) after the built-in ones, and their records in its metadata; `SCHEMAS`'
    own where there are none (or the table has no metric columns: the samples)."""
    names = list(plugin_metrics or {}) if table in PLUGIN_METRIC_TABLES else []
    if not names:
        return SCHEMAS[table]
    if table == TRIALS:
        names = [f"final_{m}" for m in names] + [f"best_{m}" for m in names]
    schema = SCHEMAS[table]
    for name in names:
        if name not in schema.names:  # an old run's plugin metric that is a built-in now
            schema = schema.append(pa.field(name, pa.float64()))
    return schema.with_metadata({PLUGIN_METRICS_KEY: json.dumps(plugin_metrics)})


def recorded_metrics(table: str | os.PathLike) -> dict[str, dict[str, typing.Any]]:
    """The plugin metrics a table (a file, or a directory of parts) has columns of, as its
    files record them (`metric_records`); {} where none do."""
    path = Path(table)
    if path.name not in PLUGIN_METRIC_TABLES or not path.exists():
        return {}
    return tableparts.retried(lambda: _recorded_metrics(path))


def _recorded_metrics(path: Path) -> dict[str, dict[str, typing.Any]]:
    files = [path] if path.is_file() else sorted(tableparts.table_files(path))
    found: dict[str, dict[str, typing.Any]] = {}
    for file in files:
        metadata = pq.read_schema(file).metadata or {}
        if PLUGIN_METRICS_KEY in metadata:
            for name, record in json.loads(metadata[PLUGIN_METRICS_KEY]).items():
                found.setdefault(name, record)
    return found


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The configuration columns present in a trials table, in schema order."""
    return [c for c in CONFIG_COLUMNS if c in trials.columns]


def plain(value: typing.Any) -> typing.Any:
    """A table cell as a plain Python value; None for a blank (NaN, NA)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def row_fields(trials: pd.DataFrame, row: pd.Series) -> dict[str, typing.Any]:
    """The configuration fields of a trials-table `row` as plain values, seeds aside; a field
    the table leaves blank (one that does not apply to the configuration) is left out."""
    values = {name: plain(row[name]) for name in config_columns(trials)}
    return {name: value for name, value in values.items() if value is not None}


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write one parquet file atomically (a temporary file, then a rename)."""
    rundir.atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_part(
    table_dir: Path,
    name: str,
    rows: list[dict] | pa.Table,
    plugin_metrics: dict[str, dict] | None = None,
) -> Path:
    """Write one part (a trial's rows) of a table kept as a directory of parts, with the
    columns of `plugin_metrics` (`metric_records`) where given (`table_schema`)."""
    schema = table_schema(table_dir.name, plugin_metrics)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    return tableparts.write_part(table_dir, name, table, schema)


def read_table(path: str | os.PathLike, trial_ids: set[str] | None = None) -> pd.DataFrame:
    """A table from its file, or from its directory of parts (`ganlab.tableparts`); only the
    rows of `trial_ids` where given."""
    path = Path(path)
    if path.is_file():
        frame = pd.read_parquet(path)
        return frame if trial_ids is None else frame[frame.trial_id.isin(trial_ids)]
    recorded = recorded_metrics(path)
    for name, record in recorded.items():  # the report's directions and worst values
        RECORDED.setdefault(name, Metric(record["mode"], record["worst"], record["doc"]))
    schema = table_schema(path.name, recorded)
    frame = tableparts.read(path, schema, trial_ids).to_pandas()
    return frame.astype({c: "Int64" for c in NULLABLE_INTS if c in frame.columns})


SEARCH, CONFIRM = "search", "confirm"
"""The `phase` of a row: trained by the sweep's search, or by `ganlab confirm` on fresh seeds
(in the run directory's `confirmation/`)."""


def load(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(trials, metrics)` of a run directory as DataFrames, with a `phase` column: the search's
    rows, then those of its confirmation (`ganlab confirm`) where it has one."""
    run_dir = Path(run_dir)
    problem = missing_tables(run_dir)
    if problem:
        raise FileNotFoundError(problem)
    phases = [(run_dir, SEARCH)] + [(d, CONFIRM) for d in confirmation_dirs(run_dir)]
    tables = []
    for name in (TRIALS, METRICS_TABLE):
        frames = [read_table(d / name).assign(phase=phase) for d, phase in phases]
        tables.append(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])
    return tables[0], tables[1]


def missing_tables(run_dir: Path, shown: str | os.PathLike | None = None) -> str | None:
    """What a run directory lacks of the tables `load` reads, said of `shown` (default: the
    directory); None where it has them."""
    missing = [name for name in (TRIALS, METRICS_TABLE) if not (Path(run_dir) / name).exists()]
    if not missing:
        return None
    return f"{shown or run_dir}: no {', '.join(missing)} (run `ganlab sweep` first)"


def confirmation_dirs(run_dir: Path) -> list[Path]:
    """The run directories of `run_dir`'s confirmation that hold tables."""
    found = sorted((run_dir / rundir.CONFIRM).glob(f"*/{TRIALS}"))
    return [path.parent for path in found if (path.parent / METRICS_TABLE).exists()]


def shown_rows(trials: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows a ranking of the run stands on, and which: the confirmation's where the run has
    one (its configurations on seeds the search never used), else the search's."""
    if "phase" not in trials.columns:
        return trials, SEARCH
    phase = CONFIRM if (trials.phase == CONFIRM).any() else SEARCH
    return trials[trials.phase == phase], phase


def load_samples(run_dir: str | os.PathLike, trial_ids: set[str] | None = None) -> pd.DataFrame:
    """The samples table (the real samples, and the fakes of `trial_ids` where given); empty,
    with the schema's columns, where none was saved. With many trials, ask for the ones you
    show: CIFAR-10 samples take some 0.6 MB a trial of 3 seeds (as pixels; 2.4 MB
    once read back as float32 `values`)."""
    path = Path(run_dir) / SAMPLES
    if not path.exists():
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    if trial_ids is not None and path.is_dir():
        trial_ids = set(trial_ids) | {p.stem for p in path.glob(f"{rundir.REAL_SAMPLES_PART}*")}
    elif trial_ids is not None:
        trial_ids = set(trial_ids) | {""}
    return _decoded(read_table(path, trial_ids))


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] as the uint8 pixels they are drawn with (NaN drawn black, values
    beyond the range clipped): round((x + 1) · 127.5)."""
    x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=-1.0)
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def from_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels back in [-1, 1] as float32: `to_pixels` of them gives the same pixels."""
    return (np.asarray(pixels, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(
        np.float32
    )


def _decoded(frame: pd.DataFrame) -> pd.DataFrame:
    """The samples table with every seed's samples as float32 `values` (images from pixels)."""
    if "pixels" not in frame.columns:  # a table written before images were stored as pixels
        return frame
    images = frame["pixels"].notna()
    if images.any():
        frame = frame.copy()
        frame.loc[images, "values"] = pd.Series(
            [from_pixels(p) for p in frame.loc[images, "pixels"]],
            index=frame.index[images],
            dtype=object,
        )
    return frame.drop(columns="pixels")


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
numbers that are not comparable. An evaluation before the last with its own count
(`n_eval_rung`) has its own reference and names the last one's in `final_reference_sha`: it
counts as that one (`measured_with`)."""


class Incomparable(BadInput):
    """Rows measured with different extractors or references, asked to be ranked together."""


def measured_with(protocol: dict) -> tuple[str, ...]:
    """The measurement a protocol's numbers belong to, `MEASURED_WITH`'s values: the last
    evaluation's reference for an evaluation before it (its `final_reference_sha`), so a
    sweep's rung-sized and final-sized rows are one measurement, each with its own count."""
    found = {name: str(protocol.get(name, "")) for name in MEASURED_WITH}  # old rows: blanks
    if protocol.get("final_reference_sha"):
        found["reference_sha"] = str(protocol["final_reference_sha"])
    return tuple(found[name] for name in MEASURED_WITH)


def measurements(trials: pd.DataFrame) -> dict[tuple[str, ...], int]:
    """Rows per (extractor, weights hash, reference hash) of their protocol (`measured_with`);
    rows without a protocol (a trial that failed before its first evaluation) measured
    nothing."""
    found: dict[tuple[str, ...], int] = {}
    for text, count in trials["protocol"].fillna("").value_counts().items():
        if text:
            key = measured_with(json.loads(text))
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


ENDED_STATUSES = ("completed", "collapsed")
"""Statuses of a seed that trained every step of its trial; a trial with none stopped early."""
JUDGED_STATUSES = ENDED_STATUSES + ("diverged",)
"""Statuses of a seed whose fate is known: it trained every step, or it diverged. A pruned seed
(stopped early by ASHA or the budget), a running one and an errored one are not judged."""
RANK_COLUMNS = ("rank", "at_step", "stopped", "objective", "div_rate", "n_trials")


def ranking(trials: pd.DataFrame) -> pd.DataFrame:
    """The configurations best first: the one ranking of `ganlab results`, the report and the
    benchmarks, on the rows `shown_rows` picks (the confirmation's where there is one). One row
    per `config_id` (the index) with `rank` (1 is best), `at_step` (the step its objective was
    measured at), `stopped` (no seed trained every step: ASHA or a time budget stopped it, it
    failed, every seed diverged, or it runs still), `objective`, `div_rate` (diverged seeds /
    judged seeds: `rates`) and `n_trials`.

    Configurations are compared at equal budgets where budgets differ: those that trained to
    their end come first, by objective; then the stopped ones, the furthest step first (ASHA
    stopped them at that rung because others did better there), by objective at it. Ties go to
    the lower divergence rate, then the config id. A configuration run by several trials is
    ranked at the furthest budget they reached, on the median of their objectives there.
    """
    trials, _ = shown_rows(trials)  # the confirmation's, where the run has one
    if trials.empty:
        return pd.DataFrame(columns=list(RANK_COLUMNS), index=pd.Index([], name="config_id"))
    per = trials.assign(_ended=trials["status"].isin(ENDED_STATUSES))
    per = per.groupby("trial_id", sort=False).agg(
        config_id=("config_id", "first"), at_step=("steps_done", "max"),
        ended=("_ended", "any"), objective=("objective", "first"),
    )  # fmt: skip
    per["stopped"] = ~per["ended"]
    # How far a trial got: one that trained to its end is ahead of every stopped one.
    per["reach"] = per["at_step"].astype(float).where(per["stopped"], math.inf)
    furthest = per.groupby("config_id", sort=False)["reach"].transform("max")
    at_budget = per[per["reach"] == furthest].groupby("config_id", sort=False)
    out = at_budget.agg(at_step=("at_step", "max"), stopped=("stopped", "all"),
                        reach=("reach", "max"), objective=("objective", "median"))  # fmt: skip
    judged = trials[trials["status"].isin(JUDGED_STATUSES)]  # pruned seeds left out
    diverged = (judged["status"] == "diverged").groupby(judged["config_id"]).mean()
    out["div_rate"] = diverged.reindex(out.index)
    out["n_trials"] = trials.groupby("config_id")["trial_id"].nunique().reindex(out.index)
    mode = trials["mode"].value_counts().index[0]
    out = out.reset_index().sort_values(
        ["reach", "objective", "div_rate", "config_id"],
        ascending=[False, mode == "min", True, True],
        na_position="last",
        kind="stable",
    )
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.set_index("config_id")[list(RANK_COLUMNS)]


def summarise(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration over its seeds, in `ranking`'s order (best first), with its
    status counts and the step its numbers are from (of the confirmation's rows where the run
    has one: `shown_rows`); refuses (`Incomparable`) rows measured
    with different extractors or references."""
    check_comparable(trials, "results")
    trials, _ = shown_rows(trials)
    varying = [c for c in config_columns(trials) if trials[c].nunique() > 1]
    metric = trials["metric"].iloc[0] if len(trials) else "fid"
    ranked = ranking(trials)
    grouped = trials.groupby("config_id", sort=False)
    summary = grouped[["trial_id", *varying]].first().reindex(ranked.index)
    summary = summary.join(ranked[["at_step", "objective", "div_rate"]])
    measured = trials[~trials["status"].isin(("diverged", "error"))]
    summary[f"median_{metric}"] = measured.groupby("config_id")[f"final_{metric}"].median()
    summary["seeds"] = grouped.size()
    summary["statuses"] = grouped["status"].agg(status_counts)
    return summary.reset_index().loc[
        :,
        [
            "trial_id",
            *varying,
            "at_step",
            "statuses",
            "objective",
            "div_rate",
            f"median_{metric}",
            "seeds",
            "config_id",
        ],
    ]


class Rates(typing.NamedTuple):
    """Shares of a set of seeds, each over the seeds it can be judged on: `diverged` over the
    judged ones (`JUDGED_STATUSES`: n_judged), `collapsed` over those that trained every step
    (n_ended), `error` over all (n_seeds). A rate with no seed to judge is NaN."""

    diverged: float
    collapsed: float
    error: float
    n_judged: int
    n_ended: int
    n_seeds: int
    n_pruned: int


def rates(statuses: pd.Series) -> Rates:
    """Divergence, collapse and error rates of seeds with these statuses, pruned seeds left
    out of the first two (how they would have ended is unknown)."""
    judged = statuses[statuses.isin(JUDGED_STATUSES)]
    ended = statuses[statuses.isin(ENDED_STATUSES)]

    def share(part: pd.Series, name: str) -> float:
        return float((part == name).mean()) if len(part) else math.nan

    return Rates(share(judged, "diverged"), share(ended, "collapsed"),
                 share(statuses, "error"), len(judged), len(ended), len(statuses),
                 int((statuses == "pruned").sum()))  # fmt: skip


def describe_rates(r: Rates) -> str:
    """`rates` in words, each with its denominator."""
    return (f"diverged: {r.diverged:.1%} of {r.n_judged} seeds judged (trained every step or "
            f"diverged), collapsed: {r.collapsed:.1%} of {r.n_ended} that trained every step, "
            f"pruned (not judged): {r.n_pruned}, error: {r.error:.1%} of {r.n_seeds}")  # fmt: skip


def status_counts(statuses: pd.Series) -> str:
    """A configuration's seeds by status, e.g. `2 pruned, 1 diverged` (most first)."""
    counts = statuses.value_counts()
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
