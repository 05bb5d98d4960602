"""Kills and full disks injected into a sweep's driver, at the write sites a user's worst day
would hit: `python -c "import faults; faults.main()" sweep FILE ...` runs `ganlab` with the
fault named by `$GANLAB_FAULT` armed.

- `journal:N`: the N-th Optuna journal append writes half its line, then the driver is killed;
- `state:N`: the N-th copy of Tune's experiment state to the storage is cut in half, then the
  driver is killed (what a kill inside Tune's in-place copy leaves);
- `table:N`: the N-th table file is written but the driver is killed before its rename;
- `time:S`: the driver is killed S seconds after it starts.

Used by tests/test_fault_campaign.py and benchmarks/fault_campaign.py.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

FAULT_ENV = "GANLAB_FAULT"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never returns


def _nth(n: int):
    count = {"calls": 0}

    def hit() -> bool:
        count["calls"] += 1
        return count["calls"] == n

    return hit


def arm(fault: str) -> None:
    site, _, value = fault.partition(":")
    if site == "time":
        threading.Timer(float(value), _die).start()
        return
    hit = _nth(int(value))
    if site == "journal":
        from ganlab import journal

        real = journal.JournalFile.append_logs

        def append_logs(self, logs):
            if hit():
                import json

                line = json.dumps(logs[0]).encode()
                with open(self.path, "ab") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                _die()
            return real(self, logs)

        journal.JournalFile.append_logs = append_logs
    elif site == "state":
        from ray.train._internal import storage

        real_upload = storage._upload_to_fs_path

        def upload(local_path, fs, fs_path, exclude=None):
            real_upload(local_path, fs, fs_path, exclude)
            states = sorted(Path(local_path).glob("experiment_state-*.json"))
            if states and hit():
                target = f"{fs_path}/{states[-1].name}"
                data = states[-1].read_bytes()
                with fs.open_output_stream(target) as stream:
                    stream.write(data[: len(data) // 2])
                _die()

        storage._upload_to_fs_path = upload
    elif site == "table":
        from ganlab import rundir

        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith(".parquet") and hit():
                _die()
            return real_replace(src, dst, *args, **kwargs)

        rundir.os = _OsWith(replace)
    else:
        raise ValueError(f"unknown fault {fault!r}")


class _OsWith:
    """`os` with another `replace`, for the module that renames files into place."""

    def __init__(self, replace):
        self.replace = replace

    def __getattr__(self, name):
        return getattr(os, name)


def main() -> None:
    if os.environ.get(FAULT_ENV):
        arm(os.environ[FAULT_ENV])
    from ganlab.cli import main as cli

    sys.exit(cli(sys.argv[1:]))


# --- a campaign: one sweep killed again and again, resumed each time -----------------------------

CAMPAIGN_SWEEP = """
name: campaign
base: {{dataset: ring8, width: 32, steps: {steps}, eval_every: 20, n_eval: 200, batch_size: 32}}
search:
  loss: {{choice: [non-saturating, hinge, least-squares, minimax]}}
seeds: 2
search_alg: grid
max_concurrent: 2
scheduler: none
max_failures: 3
objective: {{metric: fid, mode: min}}
"""
TRIAL_VALUES = ["trial_id", "seed", "status", "objective", "final_fid", "best_fid", "steps_done"]


def _snapshot(run_dir: Path):
    """(trials rows by (trial, seed), metric rows by (trial, seed, step)) of what the tables
    hold for the trials that finished; ({}, {}) before there are tables."""
    from ganlab import results

    try:
        trials, metrics = results.load(run_dir)
    except FileNotFoundError:
        return {}, {}, 0
    doubled = int(trials.duplicated(["trial_id", "seed"]).sum())
    doubled += int(metrics.duplicated(["trial_id", "seed", "step"]).sum())
    done = trials[trials.status.isin(["completed", "collapsed", "diverged"])]
    rows = {(r.trial_id, r.seed): tuple(getattr(r, c) for c in TRIAL_VALUES) for r in
            done.itertuples()}  # fmt: skip
    ids = set(done.trial_id)
    steps = metrics[metrics.trial_id.isin(ids)]
    points = {(r.trial_id, r.seed, r.step): r.fid for r in steps.itertuples()}
    return rows, points, doubled


def kill_marked(marker: str) -> None:
    """End every process started with `marker` in its command line or environment (Ray's,
    after a driver died), never this one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in command or marker.encode() in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def campaign(workdir: Path, faults: list[str], steps: int = 160, echo=print) -> dict[str, int]:
    """Run the campaign sweep under each fault in turn, resuming after each, then to the end;
    returns the counts, checked after every resume against what the tables held before."""
    import subprocess

    path = workdir / "campaign.yaml"
    path.write_text(CAMPAIGN_SWEEP.format(steps=steps))
    runs = workdir / "runs"
    run_dir = runs / "campaign"
    marker = f"GANLAB_CAMPAIGN={workdir.name}"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "GANLAB_CAMPAIGN": workdir.name,
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-c", "import faults; faults.main()", "sweep", str(path),
               "--storage", str(runs), "--no-report"]  # fmt: skip
    counts = dict(kills=0, resumes=0, resumes_exact=0, refused=0, rows_lost=0, rows_doubled=0,
                  rows_changed=0)  # fmt: skip
    before_rows, before_points, _ = {}, {}, 0

    def drive(fault: str | None) -> int:
        nonlocal before_rows, before_points
        resume = (run_dir / "sweep.json").exists()
        run_env = {**env, FAULT_ENV: fault or ""}
        done = subprocess.run([*command, *(["--resume"] if resume else [])], env=run_env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        kill_marked(marker)
        rows, points, doubled = _snapshot(run_dir)
        lost = [k for k in before_rows if k not in rows] + [
            k for k in before_points if k not in points
        ]
        changed = [k for k, v in before_rows.items() if k in rows and rows[k] != v]
        changed += [k for k, v in before_points.items() if k in points and points[k] != v]
        counts["rows_lost"] += len(lost)
        counts["rows_doubled"] += doubled
        counts["rows_changed"] += len(changed)
        if resume:
            counts["resumes"] += 1
            counts["resumes_exact"] += not (lost or changed or doubled)
        if done.returncode == 2 and resume:
            counts["refused"] += 1
        if done.returncode == -signal.SIGKILL:
            counts["kills"] += 1
        elif done.returncode not in (0, 2):
            raise AssertionError(f"{fault}: exit {done.returncode}\n{done.stderr[-3000:]}")
        echo(f"{fault or 'no fault'}: exit {done.returncode}, rows {len(rows)}, "
             f"lost {len(lost)}, changed {len(changed)}, doubled {doubled}")  # fmt: skip
        before_rows, before_points = rows, points
        return done.returncode

    for fault in faults:
        if drive(fault) == 0:
            break
    for _ in range(3):  # to the end, without faults
        if drive(None) == 0:
            break
    counts["finished"] = _check_end(run_dir)
    return counts


def _check_end(run_dir: Path) -> int:
    """The end state: every trial whole in the tables once; the journal agrees, none RUNNING."""
    import optuna

    from ganlab import journal, results, rundir

    trials, metrics = results.load(run_dir)
    assert trials.groupby(["trial_id", "seed"]).size().max() == 1
    assert not metrics.duplicated(["trial_id", "seed", "step"]).any()
    assert set(trials.status) <= {"completed", "collapsed", "diverged"}, set(trials.status)
    storage = journal.journal_storage(run_dir / rundir.JOURNAL)
    study = optuna.load_study(study_name="campaign", storage=storage)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states, states
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    told = sorted(t.value for t in complete)
    assert told == sorted(trials.groupby("trial_id").objective.first()), told
    return trials.trial_id.nunique()
