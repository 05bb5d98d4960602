"""Ray's experiment directory into the results tables, one changed trial at a time.

The sweep's driver tells the collector which trials changed and what Ray knows of them (a
`TrialSource`: where the trial's files and latest checkpoint are, and its status). Each collection
reads only those trials and writes each one's rows as its own part of every table, so its cost
follows what changed, not how much was collected before. Samples go from the checkpoint's tensors
into parquet as arrays and are not kept in memory. A trial whose files cannot be read or written
(a checkpoint half copied, a full disk) stays pending for the next collection while the others are
written, and `CollectError` names it.
"""

import io
import json
import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from ganlab import __version__, rundir, tableparts
from ganlab.metrics import METRICS, plugin_metrics
from ganlab.reports import SIGNALS, EvalReport, ResultLine, SeedReport
from ganlab.results import (
    METRIC_NAMES,
    SCHEMAS,
    config_hash,
    metric_records,
    table_schema,
    to_pixels,
    write_part,
)
from ganlab.rundir import (
    ERROR_FILE,
    METRICS_TABLE,
    PARAMS_FILE,
    RESULT_FILE,
    SAMPLES,
    SAMPLES_FILE,
    TABLES,
    TRIALS,
)

FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
REAL_SAMPLES = 512
SEGMENT_TRIALS = 100  # finished trials merged into one segment of the trials and metrics tables
MERGED = (TRIALS, METRICS_TABLE)  # samples stay one part a trial: readers pick the ones they show
ENDED = ("TERMINATED", "ERROR")  # Ray's statuses of a trial that runs no more

Location = tuple[pafs.FileSystem, str]  # a directory on a (local or remote) file system


@dataclass(frozen=True)
class TrialSource:
    """Where one trial's files are, and what Ray says of it."""

    trial_id: str
    files: tuple[Location, ...]  # directories that may hold result.json, error.txt, params.json
    checkpoint: Location | None = None  # its latest checkpoint; None: the newest one in `files`
    ray_status: str | None = None  # TERMINATED, ERROR, RUNNING...; None where unknown


class _Trial(NamedTuple):
    trial_id: str
    config: dict[str, Any]
    reports: list[ResultLine]
    error: str  # the first line of the error that ended it; "" when it did not end in one
    exploits: tuple[dict, ...] = ()  # its clones (PBT), from every line it wrote

    @property
    def ended(self) -> bool:
        """Whether its files say it runs no more (an error, or its last report)."""
        return bool(self.error) or self.reports[-1].report.last


class CollectError(RuntimeError):
    """Some trials could not be collected this time; they stay pending."""


class Changes(NamedTuple):
    written: list[Path]
    removed: list[Path]  # parts merged into a segment


def local(path: str | Path) -> Location:
    return pafs.LocalFileSystem(), str(path)


class Collector:
    """Writes a run's tables part by part as trials change.

    `configure(params)` gives the whole trial configuration of a trial's searched parameters, for
    trials that failed before their first report (their rows come from `params.json`). The
    metrics the driver's plugins registered (imported before the sweep starts) get columns of
    their own (`ganlab.results.table_schema`).
    """

    def __init__(
        self, run_dir: Path, sweep: str, configure: Callable[[dict], dict], plugins: str = ""
    ):
        self.run_dir, self.sweep, self.configure = Path(run_dir), sweep, configure
        # `plugins`: the driver's, for rows of trials that never reported (a report says its own)
        self.context = {"sweep": sweep, "ganlab_version": __version__, "git_sha": _git_sha(),
                        "plugins": plugins}  # fmt: skip
        self.plugin_metrics = metric_records(plugin_metrics())
        self.pending: dict[str, TrialSource] = {}
        self.collected: dict[str, tuple] = {}  # trial id -> signature of what its parts hold
        self.samples_from: dict[str, str] = {}  # trial id -> checkpoint its samples came from
        self.real: set[tuple[str, str]] = set()
        self.unmerged: dict[str, dict[str, None]] = {table: {} for table in MERGED}

    def update(self, source: TrialSource) -> None:
        """Mark a trial as changed; the next call collects it."""
        self.pending[source.trial_id] = source

    def scan(self, experiment: Location) -> None:
        """Mark every trial directory of Ray's experiment directory (a full collection)."""
        fs, root = experiment
        for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory:
                trial_id = rundir.trial_id_of(info.base_name)
                self.update(TrialSource(trial_id, ((fs, info.path),)))

    def __call__(self, progress: Callable[[int, int], None] | None = None) -> Changes:
        """Collect the pending trials; returns the files written and removed. `progress(done,
        total)` is called before each trial and once at the end."""
        for table in TABLES:
            (self.run_dir / table).mkdir(parents=True, exist_ok=True)
        written, failures, first = [], [], None
        pending = list(self.pending.items())
        for done, (trial_id, source) in enumerate(pending):
            if progress is not None:
                progress(done, len(pending))
            try:
                written += self._trial(source)
            except Exception as error:  # one trial's files must not keep the others out
                failures.append(f"{trial_id}: {type(error).__name__}: {first_line(str(error))}")
                first = first or error
                continue
            del self.pending[trial_id]
        if progress is not None:
            progress(len(pending), len(pending))
        changes = Changes(written, [])
        try:
            self._merge(changes)
        except Exception as error:  # retried with the next collection
            failures.append(f"merging parts: {type(error).__name__}: {first_line(str(error))}")
            first = first or error
        if failures:
            raise CollectError(
                f"{len(failures)} trial(s) not collected, kept for the next collection: "
                + "; ".join(failures)
            ) from first
        return changes

    def _merge(self, changes: Changes) -> None:
        """Merge the parts of finished trials into segments, SEGMENT_TRIALS at a time."""
        for table, names in self.unmerged.items():
            while len(names) >= SEGMENT_TRIALS:
                batch = list(names)[:SEGMENT_TRIALS]
                schema = table_schema(table, self.plugin_metrics)
                segment, parts = tableparts.merge(self.run_dir / table, batch, schema)
                changes.written.append(segment)
                changes.removed.extend(parts)
                for name in batch:
                    del names[name]

    def _trial(self, source: TrialSource) -> list[Path]:
        fs, files, infos = _files_of(source)
        checkpoint_path = source.checkpoint[1] if source.checkpoint else None
        signature = (*((i.size, i.mtime_ns) for i in infos), checkpoint_path, source.ray_status)
        if self.collected.get(source.trial_id) == signature:
            return []
        trial = self._parse(source, fs, files)
        if trial is None:
            return []  # not started yet: its rows come with its first report
        context = {**self.context, "trial_id": trial.trial_id,
                   "config_id": config_hash(trial.config)}  # fmt: skip
        if trial.reports:
            running = source.ray_status is not None and source.ray_status not in ENDED
            rows = _trial_rows(trial.reports, trial.config, trial.error, context, running,
                               trial.exploits)  # fmt: skip
        else:
            rows = _error_rows(trial.config, trial.error, context)
        metrics = _metric_rows(trial.reports, context, tuple(self.plugin_metrics))
        checkpoint = source.checkpoint or _newest_checkpoint((fs, files))
        ended = source.ray_status in ENDED if source.ray_status else trial.ended
        if ended and checkpoint is not None and not _has_samples(checkpoint):
            # A kill can leave an ended trial's last checkpoint without its samples: the newest
            # that has them will do (none: rows without samples). A running trial's checkpoint
            # may still be being copied, so it waits for the next collection instead.
            checkpoint = _newest_checkpoint((fs, files), _has_samples)
        samples = self._samples(trial, checkpoint, context)  # read before anything is written
        written = [
            write_part(self.run_dir / table, trial.trial_id, table_rows, self.plugin_metrics)
            for table, table_rows in ((TRIALS, rows), (METRICS_TABLE, metrics))
        ]
        if samples is not None:
            written.append(write_part(self.run_dir / SAMPLES, trial.trial_id, samples))
            self.samples_from[trial.trial_id] = checkpoint[1]
        written += self._real(trial.config["dataset"], trial.config["data_dir"])
        self.collected[source.trial_id] = signature
        for names in self.unmerged.values():
            if ended:
                names[trial.trial_id] = None
            else:
                names.pop(trial.trial_id, None)
        return written

    def _parse(self, source: TrialSource, fs: pafs.FileSystem, files: str) -> _Trial | None:
        text = _read(fs, f"{files}/{RESULT_FILE}")
        reports = _reports(text)
        error = error_line(_read(fs, f"{files}/{ERROR_FILE}"))
        failed = _failed(source.ray_status, error, reports)
        error = (error or "failed; Ray recorded no error message") if failed else ""
        if reports:
            last = reports[-1]
            exploits = _exploits(text, last.trial_id)
            return _Trial(last.trial_id, last.context.trial_config, reports, error, exploits)
        if not failed:
            return None
        params = json.loads(_read(fs, f"{files}/{PARAMS_FILE}") or "{}")
        return _Trial(source.trial_id, self.configure(params), [], error)

    def _samples(
        self, trial: _Trial, checkpoint: Location | None, context: dict
    ) -> pa.Table | None:
        """The trial's latest samples, where they changed since they were last written."""
        if checkpoint is None or not trial.reports:
            return None
        fs, path = checkpoint
        if self.samples_from.get(trial.trial_id) == path:
            return None
        samples = _load_tensors(_read_bytes(fs, f"{path}/{SAMPLES_FILE}"))
        base = {**context, "step": trial.reports[-1].report.step, "source": "fake",
                "dataset": trial.config["dataset"]}  # fmt: skip
        return sample_table({int(seed): x for seed, x in samples.items()}, base)

    def _real(self, dataset: str, data_dir: str) -> list[Path]:
        key = (dataset, data_dir)
        name = rundir.real_samples_key(dataset, data_dir)
        if key in self.real or (self.run_dir / SAMPLES / rundir.part_file(name)).exists():
            self.real.add(key)
            return []
        import torch

        from ganlab import data

        self.real.add(key)
        try:
            x = data.load(dataset, data_dir).sample(REAL_SAMPLES, torch.Generator().manual_seed(0))
        except FileNotFoundError:  # not readable on the driver: the report shows no real samples
            return []
        base = {"sweep": self.sweep, "trial_id": "", "config_id": "", "step": 0,
                "source": "real", "dataset": dataset}  # fmt: skip
        return [write_part(self.run_dir / SAMPLES, name, sample_table({-1: x}, base))]


# --- reading a trial's files ------------------------------------------------------------------


def _files_of(source: TrialSource) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """The first of the trial's directories that holds its results (or its error)."""
    for fs, path in source.files:
        infos = fs.get_file_info([f"{path}/{RESULT_FILE}", f"{path}/{ERROR_FILE}"])
        if any(info.type == pafs.FileType.File for info in infos):
            return fs, path, infos
    fs, path = source.files[-1]
    return fs, path, infos


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def _read(fs: pafs.FileSystem, path: str) -> str | None:
    data = _read_bytes(fs, path)
    return None if data is None else data.decode()


def _reports(text: str | None) -> list[ResultLine]:
    """The trial's reports in step order; a step reported again after a restore counts once.
    Raises ReportError on a report that lacks a field of ours."""
    by_step = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if "seeds" not in result:  # not a report of the trial's
            continue
        parsed = ResultLine.from_dict(result, where=f"{RESULT_FILE} line {number}")
        by_step[parsed.report.step] = parsed
    return [by_step[step] for step in sorted(by_step)]


def _exploits(text: str | None, trial_id: str) -> tuple[dict, ...]:
    """Every clone into the trial, by step, from all its lines: a later clone can restart it
    at an earlier step, and the lines it then writes replace those the earlier clone's wrote."""
    found = {}
    for line in (text or "").splitlines():
        if '"from_trial"' not in line:  # no exploit in it: not parsed twice
            continue
        try:
            events = json.loads(line).get("exploits", [])
        except json.JSONDecodeError:
            continue
        for event in events:
            if event["trial"] == trial_id:
                found[(event["step"], event["from_trial"])] = event
    return tuple(found.values())


def error_line(text: str | None) -> str | None:
    """The first line of the exception that ended the last failure in Ray's `error.txt`."""
    if not text or not text.strip():
        return None
    lines = ANSI.sub("", FAILURE_HEADER.split(text)[-1]).strip("\n").splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    for line in lines[frames[-1] + 1 :] if frames else lines:
        if line.strip() and not line[0].isspace():
            return line.strip()
    return next((line.strip() for line in lines if line.strip()), "")


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _failed(ray_status: str | None, error: str | None, reports: list[ResultLine]) -> bool:
    """Whether the trial ended in an error. Ray's status says so; without it (a scan of files
    alone), an error after which the trial did not reach its last report."""
    if ray_status is not None:
        return ray_status == "ERROR"
    return error is not None and (not reports or not reports[-1].report.last)


def _newest_checkpoint(files: Location, keep=lambda checkpoint: True) -> Location | None:
    """The trial's newest checkpoint directory (of those `keep` accepts), or None."""
    fs, root = files
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    numbered = ((rundir.checkpoint_number(i.base_name), i.path) for i in infos)
    found = sorted((n, path) for n, path in numbered if n is not None)
    return next((c for _, path in reversed(found) if keep(c := (fs, path))), None)


def _has_samples(checkpoint: Location) -> bool:
    fs, path = checkpoint
    return fs.get_file_info(f"{path}/{SAMPLES_FILE}").type == pafs.FileType.File


def _load_tensors(data: bytes | None) -> dict:
    if data is None:
        raise FileNotFoundError(f"no {SAMPLES_FILE} in the trial's latest checkpoint")
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# --- rows -------------------------------------------------------------------------------------


def _trial_rows(
    lines: list[ResultLine],
    config: dict,
    error: str,
    context: dict,
    running: bool = False,
    exploits: tuple[dict, ...] = (),
) -> list[dict]:
    last = lines[-1].report
    cloned = _clone_columns(exploits)
    rows = []
    for seed, final in last.seeds.items():
        per_step = [line.report.seeds[seed] for line in lines]
        status = seed_status(final, last, bool(error), config["steps"], running)
        row = {**context, "seed": seed, **_config_fields(config)}
        row.update(
            status=status,
            error=error if status == "error" else "",
            diverged_step=final.diverged_step,
            objective=last.objective,
            div_rate=last.div_rate,
            steps_done=final.diverged_step if final.diverged else last.step,
            wall_s=last.wall_s,
            started_at=lines[0].context.started_at,
            ended_at=lines[-1].context.reported_at,
            device_used=last.device,
            device_name=last.device_name,
            execution_used=last.execution,
            # a checkpoint moved between device types, its random streams reseeded (the last)
            reseeded_step=last.reseeds[-1]["step"] if last.reseeds else None,
            **cloned,
            node=lines[-1].context.node_id,
            node_ip=lines[-1].node_ip,
            protocol=last.protocol,
            plugins=lines[-1].context.plugins,
        )
        # best_: over the evaluations measured as the last one was (`n_eval_rung`'s earlier
        # ones drew fewer fakes: numbers of another scale, FID's bias most of all)
        alike = [
            line.report.seeds[seed] for line in lines if line.report.protocol == last.protocol
        ]
        for name, metric in METRICS.items():
            values = [s.metrics[name] for s in per_step if name in s.metrics]
            row[f"final_{name}"] = values[-1] if values else math.nan
            best = min if metric.mode == "min" else max
            values = [s.metrics[name] for s in alike if name in s.metrics]
            row[f"best_{name}"] = best(values) if values else math.nan
        rows.append(row)
    return rows


def _clone_columns(exploits: tuple[dict, ...]) -> dict[str, Any]:
    """The trials table's record of a trial's clones (PBT's exploits): the last one's source
    and step, and all of them."""
    if not exploits:
        return {"cloned_from": "", "cloned_at_step": None, "exploits": ""}
    events = [{k: v for k, v in e.items() if k != "trial"} for e in exploits]
    last = events[-1]
    return {"cloned_from": last["from_trial"], "cloned_at_step": last["step"],
            "exploits": json.dumps(events)}  # fmt: skip


def _error_rows(config: dict, error: str, context: dict) -> list[dict]:
    """Rows of a trial that failed before its first report: its configuration and its error."""
    nothing = {f"{kind}_{m}": math.nan for m in METRIC_NAMES for kind in ("final", "best")}
    nothing.update(objective=math.nan, div_rate=math.nan, wall_s=math.nan,
                   started_at=math.nan, ended_at=math.nan)  # fmt: skip
    fields = {**_config_fields(config), **nothing, "status": "error", "error": error,
              "diverged_step": None, "steps_done": 0, "device_used": "", "device_name": "",
              "execution_used": "", "reseeded_step": None, **_clone_columns(()), "node": "",
              "node_ip": "", "protocol": ""}  # fmt: skip
    return [{**context, "seed": int(seed), **fields} for seed in config["seeds"]]


# Fields that do nothing in some configurations, and when: there the tables hold a blank (NaN),
# not a value that reads like a setting (clip 0.0 beside a hinge loss).
NOT_APPLICABLE = {
    "clip": lambda config: config["loss"] != "wasserstein",
    "penalty_weight": lambda config: config["penalty"] == "none",
}


def _config_fields(config: dict) -> dict:
    fields = {k: v for k, v in config.items() if k != "seeds"}
    blank = [name for name, unused in NOT_APPLICABLE.items() if unused(config)]
    return {**fields, **dict.fromkeys(blank)}


def seed_status(
    final: SeedReport, last: EvalReport, failed: bool, steps: int, running: bool = False
) -> str:
    """diverged, then error, then running, then pruned, then collapsed. A seed short of its
    steps is `running` while Ray runs its trial still (`running`: Ray's status is neither
    TERMINATED nor ERROR; a collection from files alone cannot tell, and says `pruned`), and
    `pruned` once the trial was stopped early (by ASHA or a time budget), whatever its last
    evaluation showed: `collapsed` judges only seeds that trained to the end, and an early stop
    is never counted as a collapse."""
    if final.diverged:
        return "diverged"
    if failed:
        return "error"
    if last.step < steps:
        return "running" if running else "pruned"
    return "collapsed" if final.collapsed else "completed"  # None: the data has no modes


def _metric_rows(
    lines: list[ResultLine], context: dict, plugin_metrics: tuple[str, ...] = ()
) -> list[dict]:
    base = {k: context[k] for k in ("sweep", "trial_id", "config_id")}
    measured = METRIC_NAMES + plugin_metrics
    rows = []
    for report in (line.report for line in lines):
        for seed, values in report.seeds.items():
            if values.diverged and values.diverged_step < report.step:
                continue  # a seed's rows end at the step it diverged
            row = {**base, "seed": seed, "step": report.step, "diverged": values.diverged,
                   "objective": report.objective, "div_rate": report.div_rate,
                   "wall_s": report.wall_s, "samples_per_s": report.samples_per_s,
                   "protocol": report.protocol}  # fmt: skip
            row.update({k: values.metrics.get(k, math.nan) for k in measured})  # unmeasured: NaN
            row.update({k: values.signals.get(k, math.nan) for k in SIGNALS})  # none at step 0
            rows.append(row)
    return rows


def sample_table(samples: dict[int, Any], base: dict) -> pa.Table:
    """One row per seed with the shape of its samples: images (N, C, H, W) as uint8 `pixels`,
    quantised as they are drawn (`results.to_pixels`), 2-D points as float32 `values`; the
    other column of each row is null."""
    seeds = sorted(samples)
    arrays = [np.asarray(samples[s].detach().cpu().float().numpy()) for s in seeds]
    images = [a.ndim == 4 for a in arrays]
    columns = {name: [base[name]] * len(seeds) for name in base}
    columns["seed"] = seeds
    columns["shape"] = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int64()))
    pairs = list(zip(arrays, images, strict=True))
    columns["values"] = _lists([None if image else a for a, image in pairs], np.float32)
    columns["pixels"] = _lists([to_pixels(a) if image else None for a, image in pairs], np.uint8)
    schema = SCHEMAS[SAMPLES]
    return pa.table({name: columns[name] for name in schema.names}).cast(schema)


def _lists(arrays: list[np.ndarray | None], dtype: type) -> pa.ListArray:
    """One list per array, flattened (null where None), built from offsets without a copy per
    element."""
    sizes = [0 if a is None else a.size for a in arrays]
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    kept = [a.reshape(-1).astype(dtype, copy=False) for a in arrays if a is not None]
    flat = np.concatenate(kept) if kept else np.zeros(0, dtype)
    mask = pa.array([a is None for a in arrays], pa.bool_())
    return pa.ListArray.from_arrays(offsets, flat, mask=mask)


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()
