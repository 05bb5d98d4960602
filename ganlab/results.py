"""The results tables: the schema, atomic writes, and `load` for pandas users.

Three parquet files sit in a run directory:

- `trials.parquet`: one row per (trial, seed) with every configuration field as a typed column.
- `metrics.parquet`: long form, one row per (trial, seed, evaluation step).
- `samples.parquet`: samples each seed drew at its last evaluation (and real ones per dataset).
"""

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from ganlab import __version__
from ganlab.config import TrialConfig
from ganlab.metrics import METRICS

TRIALS = "trials.parquet"
METRICS_TABLE = "metrics.parquet"
SAMPLES = "samples.parquet"

STATUSES = ("completed", "diverged", "collapsed", "pruned", "error")
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name != "seeds")
METRIC_NAMES = tuple(METRICS)
PER_SEED_SIGNALS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")
SIGNALS = PER_SEED_SIGNALS + ("wall_s", "samples_per_s")  # the last two are per trial

TRIAL_COLUMNS = (
    ("sweep", "trial_id", "config_id", "seed")
    + CONFIG_COLUMNS
    + ("status", "diverged_step", "objective", "div_rate")
    + tuple(f"final_{m}" for m in METRIC_NAMES)
    + tuple(f"best_{m}" for m in METRIC_NAMES)
    + (
        "steps_done",
        "wall_s",
        "started_at",
        "ended_at",
        "device_used",
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


# --- collecting a run's results from Ray's experiment directory --------------------------------

EXPERIMENT_DIR = "tune"
REAL_SAMPLES = 512


class Collector:
    """Writes a run's tables from Ray's experiment directory, again and again as it grows.

    Each trial's rows are parsed once per change of its files, and real samples once per
    dataset, so rewriting the tables after every finished trial stays cheap on long sweeps.
    """

    def __init__(self, run_dir: str | os.PathLike, sweep: str):
        self.run_dir, self.sweep = Path(run_dir), sweep
        self.context = {"sweep": sweep, "ganlab_version": __version__, "git_sha": _git_sha()}
        self.trials: dict[Path, tuple[tuple, tuple[list, list, list]]] = {}
        self.real: dict[tuple[str, str], list[dict]] = {}

    def __call__(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        trial_rows, metric_rows, sample_rows = [], [], []
        for trial_dir in sorted((self.run_dir / EXPERIMENT_DIR).glob("*/")):
            trial, metric, sample = self._trial(trial_dir)
            trial_rows += trial
            metric_rows += metric
            sample_rows += sample
        trials = pd.DataFrame(trial_rows, columns=list(TRIAL_COLUMNS))
        trials = trials.astype({"diverged_step": "Int64"})
        metrics = pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS))
        for key in trials.groupby(["dataset", "data_dir"]).groups if len(trials) else ():
            if key not in self.real:
                self.real[key] = _real_sample_rows(*key, self.sweep)
            sample_rows += self.real[key]
        write_table(trials, self.run_dir / TRIALS)
        write_table(metrics, self.run_dir / METRICS_TABLE)
        samples = pd.DataFrame(sample_rows, columns=list(SAMPLE_COLUMNS))
        write_table(samples, self.run_dir / SAMPLES)
        return trials, metrics

    def _trial(self, trial_dir: Path) -> tuple[list, list, list]:
        files = [trial_dir / "result.json", trial_dir / "error.txt"]
        files += sorted(trial_dir.glob("checkpoint_*/samples.pt"))[-1:]
        signature = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size)
                          for f in files if f.exists())  # fmt: skip
        cached = self.trials.get(trial_dir)
        if cached is None or cached[0] != signature:
            reports = _reports(trial_dir)
            rows = ([], [], [])
            if reports:
                errored = (trial_dir / "error.txt").exists()
                rows = (_trial_rows(reports, errored, self.context),
                        _metric_rows(reports, self.sweep),
                        _sample_rows(trial_dir, reports[-1], self.sweep))  # fmt: skip
            self.trials[trial_dir] = cached = (signature, rows)
        return cached[1]


def collect(run_dir: str | os.PathLike, sweep: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every trial Ray recorded under `run_dir/tune` and write the three tables."""
    return Collector(run_dir, sweep)()


def _reports(trial_dir: Path) -> list[dict]:
    """The trial's reports in step order; a step reported again after a restore counts once."""
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if "seeds" in report:
            by_step[report["step"]] = report
    return [by_step[step] for step in sorted(by_step)]


def _trial_rows(reports: list[dict], errored: bool, context: dict) -> list[dict]:
    last = reports[-1]
    config = last["trial_config"]
    config_id = config_hash(config)
    rows = []
    for seed, final in last["seeds"].items():
        per_step = [r["seeds"][seed] for r in reports]
        row = {**context, "trial_id": last["trial_id"], "config_id": config_id, "seed": int(seed)}
        row.update({k: v for k, v in config.items() if k != "seeds"})
        row.update(
            status=_status(final, last, errored, config["steps"]),
            diverged_step=final.get("diverged_step") if final["diverged"] else None,
            objective=last["objective"],
            div_rate=last["div_rate"],
            steps_done=final.get("diverged_step") or last["step"],
            wall_s=last["wall_s"],
            started_at=reports[0].get("started_at", math.nan),
            ended_at=last.get("reported_at", math.nan),
            device_used=last.get("device", ""),
            node=last.get("node_id", ""),
            node_ip=last.get("node_ip", ""),
            protocol=last.get("protocol", ""),
        )
        for name, metric in METRICS.items():
            values = [m[name] for m in per_step if name in m]
            row[f"final_{name}"] = values[-1] if values else math.nan
            best = min if metric.mode == "min" else max
            row[f"best_{name}"] = best(values) if values else math.nan
        rows.append(row)
    return rows


def _status(final: dict, last: dict, errored: bool, steps: int) -> str:
    if final["diverged"]:
        return "diverged"
    if errored and last["step"] < steps:
        return "error"
    if final.get("collapsed"):
        return "collapsed"
    return "completed" if last["step"] >= steps else "pruned"


def _metric_rows(reports: list[dict], sweep: str) -> list[dict]:
    rows = []
    config_id = config_hash(reports[-1]["trial_config"])
    for report in reports:
        for seed, values in report["seeds"].items():
            if values["diverged"] and values.get("diverged_step", 0) < report["step"]:
                continue  # a seed's rows end at the step it diverged
            row = {"sweep": sweep, "trial_id": report["trial_id"], "config_id": config_id,
                   "seed": int(seed), "step": report["step"], "diverged": values["diverged"],
                   "objective": report["objective"], "div_rate": report["div_rate"]}  # fmt: skip
            row.update({k: values.get(k, math.nan) for k in METRIC_NAMES + PER_SEED_SIGNALS})
            row.update(wall_s=report["wall_s"], samples_per_s=report["samples_per_s"])
            rows.append(row)
    return rows


def _sample_rows(trial_dir: Path, last: dict, sweep: str) -> list[dict]:
    checkpoints = sorted(trial_dir.glob("checkpoint_*/samples.pt"))
    if not checkpoints:
        return []
    import torch

    samples = torch.load(checkpoints[-1], weights_only=False)
    config_id = config_hash(last["trial_config"])
    return [
        {
            "sweep": sweep,
            "trial_id": last["trial_id"],
            "config_id": config_id,
            "seed": seed,
            "step": last["step"],
            "source": "fake",
            "dataset": last["trial_config"]["dataset"],
            "shape": list(x.shape),
            "values": x.flatten().float().tolist(),
        }
        for seed, x in samples.items()
    ]


def _real_sample_rows(name: str, data_dir: str, sweep: str) -> list[dict]:
    import torch

    from ganlab import data

    try:
        x = data.load(name, data_dir).sample(REAL_SAMPLES, torch.Generator().manual_seed(0))
    except FileNotFoundError:
        return []
    return [{"sweep": sweep, "trial_id": "", "config_id": "", "seed": -1, "step": 0,
             "source": "real", "dataset": name, "shape": list(x.shape),
             "values": x.flatten().tolist()}]  # fmt: skip


def config_hash(config: dict) -> str:
    """Identifies a configuration regardless of its seeds."""
    without_seeds = {k: v for k, v in sorted(config.items()) if k != "seeds"}
    return hashlib.sha1(json.dumps(without_seeds, sort_keys=True).encode()).hexdigest()[:12]


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def summarise(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (a configuration over its seeds), best objective first."""
    varying = [c for c in config_columns(trials) if trials[c].nunique(dropna=False) > 1]
    metric = trials["metric"].iloc[0] if len(trials) else "fid"
    grouped = trials.groupby("trial_id", sort=False)
    summary = grouped[varying + ["objective", "div_rate"]].first()
    summary[f"median_{metric}"] = grouped[f"final_{metric}"].median()
    summary["seeds"] = grouped.size()
    summary["statuses"] = grouped["status"].agg(lambda s: ",".join(sorted(set(s))))
    ascending = len(trials) == 0 or trials["mode"].iloc[0] == "min"
    return summary.reset_index().sort_values("objective", ascending=ascending, kind="stable")
