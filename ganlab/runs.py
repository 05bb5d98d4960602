"""What a run directory says of its sweep, read while another process sweeps or after it ended.

A run directory (`ganlab.rundir`) holds, while its sweep runs: `.sweep.lock` (held by the sweep:
`runlock.holder` tells who, writing nothing), `sweep.json` (what it was started with: how many
trials it plans, its objective and searched fields), the Optuna journal (every trial from the
moment Tune asks for it: RUNNING, COMPLETE, PRUNED, FAIL, its start and end times, and ganlab's
`trial_id` and `status`, `ganlab.optunasync`) and the tables, collected every
`sweep.COLLECT_EVERY_S` and whenever a trial ends, whose rows say what each seed reached (a
trial still training is `running`). Everything here only reads: the journal through Optuna's own
file backend, which never rewrites the file (`ganlab.journal`'s does, to repair a cut line, so
it is for the sweep alone), the tables through `results.load`.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ganlab import results, runlock
from ganlab.config import TrialConfig
from ganlab.rundir import JOURNAL, LOCK_FILE, RECORD, TRIALS
from ganlab.spec import BadInput

OUTCOMES = ("completed", "pruned", "error", "running")
"""What became of a trial: it trained to its end (its seeds `completed`, `diverged` or
`collapsed`), was stopped early, failed, or trains still."""
NOT_CONFIG = ("seeds", "metric", "mode")  # a sweep file sets them at its top level, not in `base`


class RunError(BadInput):
    """A run directory that does not hold what was asked of it (exit code 2)."""


@dataclass(frozen=True)
class RunStatus:
    """A sweep's state as its run directory shows it now."""

    run_dir: Path
    name: str
    state: str  # running (a sweep holds its lock), finished (every planned trial ended), stopped
    holder: str | None  # who runs it (pid, host, since), while it runs
    planned: int | None  # trials the sweep was started with (None: no sweep.json)
    outcomes: dict[str, int]  # trials by OUTCOMES
    elapsed_s: float | None
    left_s: float | None  # an estimate, while running: finished trials' mean time
    metric: str
    mode: str
    best: pd.Series | None = None  # `results.summarise`'s first row
    best_seeds: pd.DataFrame | None = None  # its seeds: status, steps, final metric
    ranking_problem: str = ""  # why there is no best (rows that cannot be ranked together)
    seen: dict[str, str] = field(default_factory=dict)  # where each number came from

    @property
    def ended(self) -> int:
        return sum(self.outcomes.get(o, 0) for o in OUTCOMES if o != "running")


def record(run_dir: Path) -> dict[str, Any] | None:
    """`sweep.json`: what the sweep was started with; None where there is none."""
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def searched_fields(run_dir: Path) -> list[str] | None:
    """The fields the sweep searched, in the file's order; None without a `sweep.json`."""
    started = record(run_dir)
    return None if started is None else [p["name"] for p in started.get("search", [])]


def is_run(path: Path) -> bool:
    return any((path / name).exists() for name in (RECORD, TRIALS, JOURNAL))


def load_trials(run_dir: Path) -> pd.DataFrame | None:
    try:
        return results.load(run_dir)[0]
    except FileNotFoundError:
        return None


def trial_outcomes(trials: pd.DataFrame) -> pd.Series:
    """Each trial's outcome (OUTCOMES), from its seeds' statuses."""

    def outcome(statuses: pd.Series) -> str:
        found = set(statuses)
        for kind in ("running", "error", "pruned"):
            if kind in found:
                return kind
        return "completed"

    return trials.groupby("trial_id", sort=False)["status"].agg(outcome)


def journal_trials(run_dir: Path, name: str) -> list[Any] | None:
    """The journal's trials, read without writing to it; None where there is no journal."""
    path = Path(run_dir) / JOURNAL
    if not path.is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    storage = optuna.storages.JournalStorage(backend)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # the study is not (yet) in it
        return None
    return study.get_trials(deepcopy=False)


def _journal_outcomes(frozen: list[Any]) -> dict[str, int]:
    names = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "error", "RUNNING": "running"}
    counts = dict.fromkeys(OUTCOMES, 0)
    for trial in frozen:
        if trial.state.name in names:
            counts[names[trial.state.name]] += 1
    return counts


def status(run_dir: Path, now: float | None = None) -> RunStatus:
    """The sweep of `run_dir` as it stands: read while it runs, or after."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_run(run_dir):
        raise RunError(f"{run_dir}: not a run directory (no {RECORD}, {TRIALS} or {JOURNAL})")
    now = time.time() if now is None else now
    started = record(run_dir) or {}
    name = started.get("name", run_dir.name)
    trials = load_trials(run_dir)
    holder = runlock.holder(run_dir) if (run_dir / LOCK_FILE).exists() else None
    frozen = journal_trials(run_dir, name)
    seen = {}
    if frozen:
        outcomes, seen["trials"] = _journal_outcomes(frozen), JOURNAL
    elif trials is not None and len(trials):
        counted = trial_outcomes(trials).value_counts()
        outcomes, seen["trials"] = {o: int(counted.get(o, 0)) for o in OUTCOMES}, TRIALS
    else:
        outcomes = dict.fromkeys(OUTCOMES, 0)
    if holder is None:  # no sweep runs it: a trial the tables call running was cut off
        outcomes["pruned"] += outcomes.pop("running", 0)
        outcomes["running"] = 0
    planned = started.get("num_samples")
    ended = sum(outcomes[o] for o in OUTCOMES if o != "running")
    state = "running" if holder else "finished" if planned and ended >= planned else "stopped"
    elapsed, left = _times(trials, frozen, holder is not None, now, planned, started)
    metric = started.get("metric") or (
        trials["metric"].iloc[0] if trials is not None and len(trials) else "fid"
    )
    mode = started.get("mode") or ("min" if metric == "fid" else "max")
    best, best_seeds, problem = _best(trials, metric)
    if trials is not None:
        seen["best"] = TRIALS
    return RunStatus(
        run_dir,
        name,
        state,
        holder,
        planned,
        outcomes,
        elapsed,
        left,
        metric,
        mode,
        best,
        best_seeds,
        problem,
        seen,
    )


def _times(
    trials: pd.DataFrame | None,
    frozen: list[Any] | None,
    running: bool,
    now: float,
    planned: int | None,
    started: dict[str, Any],
) -> tuple[float | None, float | None]:
    """Elapsed seconds since the first trial started (to now, or to the last report), and
    while running an estimate of the time left: the finished trials' mean time per trial,
    times the trials not finished, over the trials that run at once."""
    spans = _spans(trials, frozen)
    if not spans:
        return None, None
    first = min(start for start, _ in spans.values())
    last = (
        max(end for _, end in spans.values() if end is not None)
        if any(end is not None for _, end in spans.values())
        else first
    )
    elapsed = (now if running else last) - first
    finished = [end - start for start, end in spans.values() if end is not None]
    if not running or not finished or planned is None:
        return elapsed, None
    left = max(0, planned - len(finished))
    at_once = max(1, min(int(started.get("max_concurrent") or 1), left or 1))
    return elapsed, sum(finished) / len(finished) * left / at_once


def _spans(trials: pd.DataFrame | None, frozen: list[Any] | None) -> dict[Any, tuple]:
    """Each trial's (start, end) in Unix seconds; end None while it runs."""
    if frozen:
        return {
            t.number: (
                t.datetime_start.timestamp(),
                t.datetime_complete.timestamp() if t.datetime_complete else None,
            )
            for t in frozen
            if t.datetime_start is not None
        }
    if trials is None or trials.empty:
        return {}
    outcome = trial_outcomes(trials)
    per = trials.groupby("trial_id", sort=False).agg(
        start=("started_at", "min"), end=("ended_at", "max")
    )
    return {
        trial_id: (row.start, None if outcome[trial_id] == "running" else row.end)
        for trial_id, row in per.iterrows()
        if not math.isnan(row.start)
    }


def _best(
    trials: pd.DataFrame | None, metric: str
) -> tuple[pd.Series | None, pd.DataFrame | None, str]:
    if trials is None or trials.empty:
        return None, None, ""
    try:
        summary = results.summarise(trials)
    except results.Incomparable as error:
        return None, None, str(error)
    if summary.empty:
        return None, None, ""
    best = summary.iloc[0]
    rows = trials[trials.trial_id == best["trial_id"]]
    columns = ["seed", "status", "steps_done", f"final_{metric}"]
    return best, rows[[c for c in columns if c in rows.columns]].reset_index(drop=True), ""


# --- listing a storage ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunEntry:
    """One run directory of a storage."""

    path: Path
    size: int  # bytes of every file under it
    state: str  # running, finished, stopped
    trials: int
    metric: str
    best: float | None  # the best configuration's objective (`results.summarise`)


def list_runs(storage: Path) -> list[RunEntry]:
    """The run directories directly under `storage`, by name."""
    storage = Path(storage)
    if not storage.is_dir():
        raise RunError(f"{storage}: no such directory (a storage holds run directories)")
    return [_entry(p) for p in sorted(storage.iterdir()) if p.is_dir() and is_run(p)]


def _entry(run_dir: Path) -> RunEntry:
    found = status(run_dir)
    best = None
    if found.best is not None and not pd.isna(found.best["objective"]):
        best = float(found.best["objective"])
    return RunEntry(
        run_dir, _size(run_dir), found.state, sum(found.outcomes.values()), found.metric, best
    )


def _size(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:  # removed while listed (a part merged away)
            continue
    return total


# --- a trial's configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """A trial's configuration as a file takes it: `fields` are what a sweep file's `base:`
    takes, `seeds`, `metric` and `mode` what it sets at its top level."""

    trial_id: str
    config_id: str
    fields: dict[str, Any]
    seeds: list[int]
    metric: str
    mode: str
    objective: float | None
    status: str

    def config(self) -> TrialConfig:
        return TrialConfig.from_dict(
            {**self.fields, "seeds": self.seeds, "metric": self.metric, "mode": self.mode}
        )


def ranked_trials(run_dir: Path) -> list[str]:
    """The run's trial ids, best configuration first (`results.summarise`'s order)."""
    trials = _require_trials(run_dir)
    return list(results.summarise(trials)["trial_id"])


def export(run_dir: Path, trial_id: str) -> Exported:
    """Trial `trial_id`'s configuration, read from the trials table."""
    trials = _require_trials(run_dir)
    rows = trials[trials.trial_id == trial_id]
    if rows.empty:
        known = ", ".join(sorted(trials.trial_id.unique())[:20])
        raise RunError(f"{run_dir}: no trial {trial_id!r}; its trials: {known}")
    first = rows.iloc[0]
    fields = results.row_fields(trials, first)
    fields = {name: value for name, value in fields.items() if name not in NOT_CONFIG}
    objective = results.plain(first["objective"])
    return Exported(
        trial_id,
        str(first["config_id"]),
        fields,
        sorted(int(s) for s in rows["seed"]),
        str(first["metric"]),
        str(first["mode"]),
        objective,
        trial_outcomes(rows).iloc[0],
    )


def _require_trials(run_dir: Path) -> pd.DataFrame:
    problem = results.missing_tables(run_dir)
    if problem:
        raise RunError(problem)
    return results.load(run_dir)[0]
