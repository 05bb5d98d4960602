"""The layout of a run directory, and the one way a file gets into it.

Every file and folder name of a run directory (and of a trial's directory and a checkpoint in
Ray's experiment) is spelled here and nowhere else; `tests/test_rundir.py` fails on a second
spelling in `ganlab/` or `analysis/`. The layout, `<storage>/<name>/` for a local storage
(`./runs/<name>/` beside a URI storage, to which the tables, journal and report are copied)::

    <run dir>/
    ├── sweep.json                      RECORD: what the sweep was started with
    ├── .sweep.lock                     LOCK_FILE: flock held while a sweep runs
    ├── .sweep.lease                    WRITER_LEASE: on a URI storage only, who writes there
    ├── optuna-journal.log              JOURNAL: the Optuna study, named after the sweep
    ├── trials.parquet/                 TRIALS: one row per (trial, seed)
    │   ├── <trial id>.parquet          part_file(trial id): one trial's rows
    │   └── segment-000001.parquet      SEGMENT: finished trials' parts, merged
    ├── metrics.parquet/                METRICS_TABLE: one row per (trial, seed, step); as above
    ├── samples.parquet/                SAMPLES: parts only, never merged
    │   ├── <trial id>.parquet          the samples of each seed's last evaluation
    │   └── real-<data set>-<hash>.parquet   REAL_SAMPLES_PART: real samples of a data set
    ├── eval-protocol/                  PROTOCOL_DIR: the evaluation assets every trial uses
    │   └── <data set>-n<n_fake>.pt     protocol_file(data set, n_fake): `EvalAssets`
    ├── .tune-state/                    TUNE_STATE: the last good copies of Tune's state
    │   ├── CURRENT                     the generation to resume from
    │   └── 000012/experiment_state-*.json, searcher-state-*.pkl, ...
    ├── confirmation/                   CONFIRM: `ganlab confirm`'s plan.json and its run
    │   └── <name>/                     directory (this layout), its rows `phase` = confirm
    ├── report.html                     REPORT: `ganlab report`
    ├── compare.html                    COMPARISON: `ganlab report --compare`
    └── tune/                           EXPERIMENT: Ray's experiment directory
        ├── ...                         Ray's own state (tuner.pkl, experiment_state-*.json)
        └── trial_<trial id>/           trial_dir_name(trial id), TRIAL_DIR_PREFIX
            ├── params.json             PARAMS_FILE (Ray's): the searched parameters
            ├── result.json             RESULT_FILE (Ray's): one JSON line per report
            ├── error.txt               ERROR_FILE (Ray's): each failure's traceback
            └── checkpoint_000003/      CHECKPOINT_DIR (Ray's numbering)
                ├── state.pt            STATE_FILE: `Trial.state_dict()`
                └── samples.pt          SAMPLES_FILE: each seed's last samples

A table may also be one parquet file of that name (`results.write_table`). Files are written
through `atomic_write`, so a reader sees the old file or the whole new one, never half of one.
This module imports only the standard library: the CLI, the results and the analysis read it
without torch or Ray.
"""

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

# --- the run directory ------------------------------------------------------------------------

RUNS = "runs"  # default storage, and where run directories go beside a URI storage
RECORD = "sweep.json"  # what the sweep was started with, checked by --resume
LOCK_FILE = ".sweep.lock"  # held (flock) while a sweep runs: one sweep per run directory
WRITER_LEASE = ".sweep.lease"  # under a URI storage's run: the one driver writing there, renewed
JOURNAL = "optuna-journal.log"  # the Optuna journal study, for resumes and optuna-dashboard
TRIALS = "trials.parquet"  # table: one row per (trial, seed)
METRICS_TABLE = "metrics.parquet"  # table: one row per (trial, seed, evaluation step)
SAMPLES = "samples.parquet"  # table: each seed's last samples, and real samples per data set
TABLES = (TRIALS, METRICS_TABLE, SAMPLES)
REPORT = "report.html"  # `ganlab report`'s default output
COMPARISON = "compare.html"  # `ganlab report --compare`'s default output
EXPERIMENT = "tune"  # Ray's experiment directory (Tune's run name)
TUNE_STATE = ".tune-state"  # good copies of Ray Tune's experiment state (`ganlab.tunestate`)
PROTOCOL_DIR = "eval-protocol"  # the evaluation assets of the sweep, made once by its driver
CONFIRM = "confirmation"  # `ganlab confirm`: `confirmation/<name>/` is a run dir of its own
CONFIRM_PLAN = "plan.json"  # in CONFIRM: the configurations and fresh seeds it trains

# --- inside a table directory (`ganlab.tableparts`) -------------------------------------------

PART_SUFFIX = ".parquet"  # every file of a table directory: `<key>.parquet`
SEGMENT = "segment-"  # parts merged into `segment-<n>.parquet`, n counting from 1
REAL_SAMPLES_PART = "real-"  # samples parts of a data set's real samples, not of a trial

# --- inside Ray's experiment directory ----------------------------------------------------------

TRIAL_DIR_PREFIX = "trial_"  # a trial's directory is `trial_<trial id>` (our dirname creator)
PARAMS_FILE = "params.json"  # Ray's: the trial's searched parameters
RESULT_FILE = "result.json"  # Ray's JSON logger: one line per report
ERROR_FILE = "error.txt"  # Ray's: a traceback per failure of the trial
CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")  # Ray's checkpoint directories, numbered
STATE_FILE = "state.pt"  # in a checkpoint: `Trial.state_dict()`
SAMPLES_FILE = "samples.pt"  # in a checkpoint: each seed's samples of the last evaluation


def protocol_file(dataset: str, n_fake: int) -> str:
    """The run directory's file of the evaluation assets of (`dataset`, `n_fake`)."""
    return f"{PROTOCOL_DIR}/{dataset}-n{n_fake}.pt"


def trial_dir_name(trial_id: str) -> str:
    """The directory name of a trial in Ray's experiment directory."""
    return f"{TRIAL_DIR_PREFIX}{trial_id}"


def trial_id_of(dir_name: str) -> str:
    """The trial id a trial directory's name holds."""
    return dir_name.removeprefix(TRIAL_DIR_PREFIX)


def checkpoint_number(dir_name: str) -> int | None:
    """The number of a checkpoint directory (`checkpoint_000003`: 3); None for other names."""
    match = CHECKPOINT_DIR.match(dir_name)
    return None if match is None else int(match[1])


def part_file(key: str) -> str:
    """The file name of a table part (a trial id, a segment, a real-samples part)."""
    return f"{key}{PART_SUFFIX}"


def segment_key(number: int) -> str:
    """The key of a table's `number`-th segment (`segment-000001`)."""
    return f"{SEGMENT}{number:06d}"


def real_samples_key(dataset: str, data_dir: str) -> str:
    """The samples part of a data set's real samples read from `data_dir`."""
    return f"{REAL_SAMPLES_PART}{dataset}-{hashlib.sha1(data_dir.encode()).hexdigest()[:8]}"


# --- the atomic write ---------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a new empty file beside `path`, then rename it onto `path`.

    A reader sees the old file or the whole new one. The file is created like any other (mode
    0o666 less the umask, so as readable as the directory's other files; never mkstemp's 0600).
    If `write` raises, the old file stays as it was and the temporary file is removed. The
    parent directory is created where missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename stays on one file system; a unique name per writer.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write` of bytes."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
