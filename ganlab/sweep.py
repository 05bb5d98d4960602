"""Ray Tune and Optuna glue: the only module that imports Ray.

One Tune trial runs one configuration over the sweep's seeds (`ganlab.trial.Trial`), reports
after every evaluation with a checkpoint, and resumes from `tune.get_checkpoint()` (or, where that
file is unreadable, the checkpoint before it). Optuna searches through Ray's `OptunaSearch` with a
define-by-run space (`ganlab.space`), its study kept in a journal file in the run directory; ASHA
stops poor trials on the robust objective. The tables are collected trial by trial from Tune's
callbacks (`ganlab.collect`); a collection that fails is reported and tried again, and the sweep
goes on.
"""

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from ganlab import rundir, runlock, storage
from ganlab.collect import (
    Changes,
    CollectError,
    Collector,
    TrialSource,
    error_line,
    first_line,
    local,
)
from ganlab.reports import EvalReport, RunContext
from ganlab.rundir import EXPERIMENT, JOURNAL, RECORD, SAMPLES_FILE, STATE_FILE
from ganlab.search import SAMPLERS, SCHEDULERS
from ganlab.space import SearchSpace
from ganlab.spec import BadInput, SweepSpec
from ganlab.trial import Trial, read_state

CHECKPOINTS_KEPT = 2
COLLECT_EVERY_S = 20.0
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 120.0  # back-off of a collection that failed
FINAL_ATTEMPTS = 4
MANY_PENDING = 100  # a collection of this many trials says so first
SYNC_PERIOD_S = 30  # how often the driver copies trial results to a remote storage


class SweepError(BadInput):
    """A sweep that cannot start as asked (exit code 2 at the command line)."""


def run_dir_of(spec: SweepSpec) -> Path:
    """Where the tables, the journal and the report go: `<storage>/<name>` for local storage,
    `./runs/<name>` (and a copy on the storage) for a URI."""
    if spec.is_remote_storage:
        return Path(rundir.RUNS).resolve() / spec.name
    return Path(spec.storage).expanduser().resolve() / spec.name


def check(spec: SweepSpec, resume: bool, address: str | None) -> Path:
    """Everything a sweep needs before it starts, checked without writing anything; raises
    SweepError naming the sweep file. Returns the run directory."""
    run_dir = run_dir_of(spec)
    check_not_running(spec, run_dir)
    check_writable(spec, run_dir)
    check_run_dir(spec, resume)
    check_resources(spec, address)
    check_storage(spec, address)
    return run_dir


def check_not_running(spec: SweepSpec, run_dir: Path) -> None:
    holder = runlock.holder(run_dir)
    if holder is not None:
        raise _running(spec, run_dir, holder)


def _running(spec: SweepSpec, run_dir: Path, holder: str) -> SweepError:
    return SweepError(
        f"{spec.path}: another sweep named {spec.name!r} is running in {run_dir} ({holder}); "
        "wait for it to end, or give this one another `name`"
    )


def check_writable(spec: SweepSpec, run_dir: Path) -> None:
    """The run directory (and a `file://` storage) must be a directory this process can write."""
    places = [run_dir]
    if spec.storage.startswith("file://"):
        places.append(Path(spec.storage_uri.removeprefix("file://")))
    for place in places:
        existing = place
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise SweepError(f"{spec.path}: storage: {existing} is a file, not a directory; "
                             "set `storage:` (or --storage) to a directory")  # fmt: skip
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SweepError(f"{spec.path}: storage: cannot write in {existing} (no permission, "
                             "or a read-only file system); set `storage:` (or --storage) to a "
                             "directory you can write")  # fmt: skip


def check_run_dir(spec: SweepSpec, resume: bool) -> Path:
    """Refuse to overwrite a previous sweep, to resume one that is not there, and to resume one
    as another sweep than it was started as."""
    run_dir = run_dir_of(spec)
    exists = (run_dir / EXPERIMENT).exists() or (run_dir / JOURNAL).exists()
    if spec.is_remote_storage:
        exists = exists or storage.exists(f"{spec.storage_uri}/{EXPERIMENT}")
    if exists and not resume:
        raise SweepError(f"{spec.path}: {spec.storage_uri} holds a sweep already: add --resume "
                         "to continue it, or give the sweep another `name`")  # fmt: skip
    if resume and not exists:
        raise SweepError(f"{spec.path}: --resume: no sweep to resume in {spec.storage_uri}")
    if resume:
        _check_same_sweep(spec, run_dir)
    return run_dir


def _check_same_sweep(spec: SweepSpec, run_dir: Path) -> None:
    recorded = _read_record(spec, run_dir)
    if recorded is None:  # started before sweeps kept a record
        return
    now = spec.record()
    changed = [key for key in now if recorded.get(key) != now[key]]
    if not changed:
        return
    details = "; ".join(
        f"{key} was {_short(recorded.get(key))}, now {_short(now[key])}" for key in changed
    )
    raise SweepError(
        f"{spec.path}: --resume continues the sweep as it was started, and Ray and Optuna would "
        f"ignore a change, but {', '.join(changed)} changed ({details}). Put the file back as it "
        "was, or start a new sweep under another `name`."
    )


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_record(spec: SweepSpec, run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    if path.exists():
        return json.loads(path.read_text())
    if spec.is_remote_storage:
        text = storage.read_text(f"{spec.storage_uri}/{RECORD}")
        return None if text is None else json.loads(text)
    return None


def _write_record(spec: SweepSpec, run_dir: Path) -> None:
    rundir.atomic_write_text(run_dir / RECORD, json.dumps(spec.record(), indent=1) + "\n")


def check_resources(spec: SweepSpec, address: str | None) -> None:
    """On a private local Ray, a trial asking for more than this machine has would wait forever."""
    if address is not None:
        return  # a cluster may grow (the autoscaler adds nodes for waiting trials)
    # Ray's own detection, which `ray.init` uses (CPU quotas of containers included).
    have = {
        "cpu": float(ray._private.utils.get_num_cpus()),
        "gpu": float(
            ray._private.accelerators.get_accelerator_manager_for_resource(
                "GPU"
            ).get_current_node_num_accelerators()
        ),
    }
    for key, count in have.items():
        need = getattr(spec.resources, key)
        if need > count:
            raise SweepError(
                f"{spec.path}: resources.{key}: a trial asks for {need:g} {key.upper()}, but this "
                f"machine has {count:g}, so on a local Ray it would wait forever; ask for at most "
                f"{count:g}, or join a cluster that has them with --address"
            )


NETWORK_FILE_SYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "ceph", "lustre", "glusterfs", "beegfs", "gpfs", "efs", "9p",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs",
)  # fmt: skip


def check_storage(spec: SweepSpec, address: str | None) -> None:
    """Trials on other machines must write to storage every node can reach.

    A local path is fine while every node is this machine and this machine can run a trial;
    otherwise (several machines, or a head that runs no trials and waits for autoscaled
    workers) it must be a cloud URI or a network file system.
    """
    if address is None or spec.is_remote_storage:
        return
    _start_ray(address)
    here = ray.get_runtime_context().get_node_id()
    nodes = [node for node in ray.nodes() if node["Alive"]]
    this_node = next(node for node in nodes if node["NodeID"] == here)
    hosts = {node["NodeManagerAddress"] for node in nodes}
    elsewhere = hosts - {this_node["NodeManagerAddress"]}
    can_run_here = all(
        this_node["Resources"].get(key, 0.0) >= need
        for key, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu))
    )
    if (elsewhere or not can_run_here) and not _on_network_file_system(run_dir_of(spec)):
        ray.shutdown()
        where = (
            f"the cluster spans {len(hosts)} machines ({', '.join(sorted(hosts))})"
            if elsewhere
            else "this node cannot run a trial, so trials will run on other machines"
        )
        raise SweepError(
            f"{spec.path}: storage {spec.storage!r} is a local path, but {where}: their trials "
            "could not write there. Set `storage:` in the sweep file (or --storage) to a cloud "
            "URI such as s3://my-bucket/ganlab-runs, or to a shared file system (NFS, EFS) "
            "mounted at the same path on every node."
        )


def _on_network_file_system(path: Path) -> bool:
    """Whether `path` lies on a mount of a network file system (per /proc/mounts)."""
    best, fstype = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    for line in mounts:
        _, mount_point, kind = line.split()[:3]
        inside = str(path).startswith(mount_point.rstrip("/") + "/") or mount_point == "/"
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, kind
    return fstype in NETWORK_FILE_SYSTEMS


# --- the trainable --------------------------------------------------------------------------


def train(params: dict[str, Any], spec: SweepSpec) -> None:
    """Ray Tune function trainable: one configuration × the sweep's seeds."""
    started_at = time.time()
    config = spec.trial_config(params)
    trial = Trial(config)
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    resumed_from = restore(trial, checkpoint) if checkpoint is not None else None

    def report(result: EvalReport) -> None:
        with tempfile.TemporaryDirectory() as directory:
            trial.save(Path(directory) / STATE_FILE)
            torch.save(trial.samples, Path(directory) / SAMPLES_FILE)
            context = RunContext(trial_config=config.to_dict(), node_id=node_id,
                                 started_at=started_at, reported_at=time.time(),
                                 resumed_from_step=resumed_from)  # fmt: skip
            metrics = {**result.to_dict(), **context.to_dict()}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    trial.report = report
    trial.run()


def restore(trial: Trial, checkpoint: tune.Checkpoint) -> int:
    """Load the newest readable checkpoint of the trial, from `checkpoint` back to older ones
    (a latest one may be corrupt or half written); returns the step it was taken at."""
    problems = []
    for candidate in _this_and_older(checkpoint):
        try:
            with candidate.as_directory() as directory:
                state = read_state(Path(directory) / STATE_FILE)
        except Exception as error:  # unreadable, whatever the reason: try the one before it
            problems.append(f"{candidate.path}: {type(error).__name__}: {first_line(str(error))}")
            continue
        trial.load_state_dict(state)
        if problems:
            print(f"resumed from {candidate.path} (step {trial.step}); skipped: {problems}")
        return trial.step
    raise RuntimeError(f"no readable checkpoint to resume from: {'; '.join(problems)}")


def _this_and_older(checkpoint: tune.Checkpoint) -> Iterator[tune.Checkpoint]:
    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    index = rundir.checkpoint_number(name)
    if index is None:
        yield checkpoint
        return
    older = []
    for info in fs.get_file_info(pafs.FileSelector(parent)):
        found = rundir.checkpoint_number(info.base_name)
        if found is not None and found <= index:
            older.append((found, info.path))
    for _, candidate in sorted(older, reverse=True):
        yield tune.Checkpoint(candidate, filesystem=fs)


# --- searchers and schedulers ---------------------------------------------------------------


def journal_storage(run_dir: Path) -> optuna.storages.JournalStorage:
    backend = optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL))
    return optuna.storages.JournalStorage(backend)


class JournalSearch(OptunaSearch):
    """Ray's OptunaSearch, for a study whose journal may be ahead of Tune's saved state.

    A driver killed after Optuna recorded a trial as finished, but before Tune saved its own
    state, resumes that trial from its checkpoint; OptunaSearch would then report its results
    into a finished Optuna trial, whose error ends the whole sweep. The journal's record of the
    trial stands (a resumed trial repeats the same values), so such a report is dropped.
    """

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)  # finished in the journal: nothing to report


def _searcher(spec: SweepSpec, run_dir: Path) -> OptunaSearch | None:
    """Every search goes through Optuna, so every sweep has a journal study to inspect."""
    if not spec.search:
        return None
    return JournalSearch(
        space=SearchSpace(spec.search),
        metric="objective",
        mode=spec.mode,
        sampler=SAMPLERS[spec.search_alg](spec),
        study_name=spec.name,
        storage=journal_storage(run_dir),
    )


def _scheduler(spec: SweepSpec) -> TrialScheduler:
    return SCHEDULERS[spec.scheduler.name](spec)


# --- running --------------------------------------------------------------------------------


class Progress(tune.Callback):
    """One line per evaluation, and the tables collected from the trials that changed.

    A collection that fails (a full disk, a file being copied) is reported, tried again after a
    back-off, and never stops the sweep: Tune would end `fit` on an exception from a callback.
    """

    def __init__(self, spec: SweepSpec, run_dir: Path, echo: Callable[[str], None]):
        self.spec, self.run_dir, self.echo = spec, run_dir, echo
        configure = functools.partial(_trial_config_dict, spec)
        self.collector = Collector(run_dir, spec.name, configure)
        self.changed: dict[str, Any] = {}  # trial id -> Tune's trial, collected next time
        self.failures = 0
        self.error: Exception | None = None
        self.next_collect = 0.0  # monotonic time of the next collection
        self.start = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        report = EvalReport.from_dict(result)  # what `train` reported; Ray's own keys ignored
        diverged = sum(s.diverged for s in report.seeds.values())
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        self.echo(
            f"[{time.monotonic() - self.start:6.0f}s {done}/{self.spec.num_samples} done] "
            f"{trial.trial_id} step {report.step:>6}: objective {report.objective:.6g}, "
            f"diverged {diverged}/{len(report.seeds)}"
        )
        self.changed[trial.trial_id] = trial
        if time.monotonic() >= self.next_collect:
            self.collect()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.changed[trial.trial_id] = trial
        if self.failures == 0 or time.monotonic() >= self.next_collect:
            self.collect()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.echo(f"trial {trial.trial_id} failed ({_error_of(trial)}); Ray runs it again "
                  "from its last checkpoint")  # fmt: skip
        self.changed[trial.trial_id] = trial

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.echo(f"trial {trial.trial_id} failed for good ({_error_of(trial)}); its rows "
                  "have status `error`")  # fmt: skip
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials, **info) -> None:
        self.changed.update((t.trial_id, t) for t in trials)
        self.collect()

    def collect(self) -> bool:
        """Collect the trials that changed; False (reported, retried later) when it failed."""
        for trial in self.changed.values():
            if trial.storage.trial_dir_name is not None:  # None: never started, no files
                self.collector.update(_source(trial))
        self.changed.clear()
        if len(self.collector.pending) >= MANY_PENDING:  # e.g. every trial, after a resume
            self.echo(f"collecting {len(self.collector.pending)} trials into the tables")
        try:
            changes = self.collector()
            if self.spec.is_remote_storage:
                self._push(changes)
        except Exception as error:  # reported and retried: collecting must not end the sweep
            self.failures += 1
            self.error = error
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.failures - 1))
            self.next_collect = time.monotonic() + delay
            self.echo(f"collecting results failed ({type(error).__name__}: "
                      f"{first_line(str(error))}); trying again in {delay:.0f}s, "
                      "the sweep goes on")  # fmt: skip
            return False
        if self.failures:
            self.echo(f"collecting results works again ({len(changes.written)} files written)")
        self.failures = 0
        self.next_collect = time.monotonic() + COLLECT_EVERY_S
        return True

    def _push(self, changes: Changes) -> None:
        """Copy what changed next to Ray's experiment on the storage."""
        written = [path.relative_to(self.run_dir) for path in changes.written]
        storage.push(self.run_dir, self.spec.storage_uri, [*written, JOURNAL, RECORD])
        removed = [path.relative_to(self.run_dir) for path in changes.removed]
        storage.delete(self.spec.storage_uri, removed)

    def finish(self) -> None:
        """The last collection, after Tune ended: retried a few times, then an error."""
        for attempt in range(FINAL_ATTEMPTS):
            if self.collect():
                return
            if attempt < FINAL_ATTEMPTS - 1:
                time.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt))
        raise CollectError(
            f"the sweep ran, but its results could not be written into tables in {self.run_dir}: "
            f"{self.error}. Ray's records of every trial are in {self.run_dir / EXPERIMENT}; fix "
            f"the cause and run `ganlab sweep {self.spec.path} --resume` to collect them again."
        ) from self.error


def _trial_config_dict(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    return spec.trial_config(params).to_dict()


def _source(trial) -> TrialSource:
    """Where Tune keeps a trial's files: its result.json and error.txt are written first into
    the driver's staging directory, later copied to the storage with the checkpoints."""
    stored = (trial.storage.storage_filesystem, trial.path)
    checkpoint = trial.checkpoint
    return TrialSource(
        trial_id=trial.trial_id,
        files=(local(trial.local_path), stored),
        checkpoint=(checkpoint.filesystem, checkpoint.path) if checkpoint else None,
        ray_status=trial.status,
    )


def _error_of(trial) -> str:
    try:
        return error_line(Path(trial.error_file).read_text()) or "no message"
    except (OSError, TypeError):
        return "no message"


def run(
    spec: SweepSpec,
    address: str | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) a sweep to the end; returns the run directory holding the tables."""
    run_dir = check_run_dir(spec, resume)  # before anything is written
    try:
        with runlock.hold(run_dir):
            check_run_dir(spec, resume)  # again: another sweep may have started meanwhile
            _run(spec, run_dir, address, resume, echo)
    except runlock.Locked as locked:
        raise _running(spec, run_dir, locked.holder) from None
    return run_dir


def _run(spec: SweepSpec, run_dir: Path, address: str | None, resume: bool, echo) -> None:
    if spec.is_remote_storage:
        storage.pull(spec.storage_uri, run_dir, [RECORD, JOURNAL])
    if not resume:
        _write_record(spec, run_dir)
    started = _start_ray(address)
    try:
        progress = Progress(spec, run_dir, echo)
        _tuner(spec, run_dir, resume, progress).fit()
        close_study(spec, run_dir)
        progress.finish()
    finally:
        if started:
            ray.shutdown()


def _start_ray(address: str | None) -> bool:
    """Start (or join) Ray; True when this call started it, so it is ours to shut down."""
    if ray.is_initialized():
        return False
    # Checkpointing every evaluation is the design; Ray's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address is None:  # a private local cluster on loopback, no dashboard, token auth on
        _use_loopback()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:  # joining a cluster: authenticate with this machine's token where there is one
        if os.environ.get("RAY_AUTH_TOKEN") or Path("~/.ray/auth_token").expanduser().exists():
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return True


def _use_loopback() -> None:
    """Make a private cluster's node address 127.0.0.1, so its servers listen on loopback.

    On Linux, Ray turns a loopback `_node_ip_address` into the machine's routable address;
    only its single-machine mode (the default on macOS and Windows) keeps 127.0.0.1. The
    constant is read at call time; the variable carries it to the processes Ray starts.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def trial_dir_name(trial) -> str:
    """`trial_<id>`: the collector reads a trial's id from its directory's name. (Tune pickles
    this function by name: a sweep started earlier resumes with it.)"""
    return rundir.trial_dir_name(trial.trial_id)


def _tuner(spec: SweepSpec, run_dir: Path, resume: bool, progress: Progress) -> tune.Tuner:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(train, spec=spec), resources)
    where = spec.storage_uri if spec.is_remote_storage else str(run_dir)
    # Our own JSON logger ahead of Progress: Tune appends its loggers after the callbacks it is
    # given, and Progress collects result.json, which must hold the result it is told of.
    callbacks = [JsonLoggerCallback(), progress]
    if resume:
        tuner = tune.Tuner.restore(
            f"{where}/{EXPERIMENT}", trainable, resume_unfinished=True, resume_errored=True
        )
        # A restored Tuner runs with the callbacks pickled when the sweep started (the old
        # process's echo and collector); this process's own take their place.
        tuner._local_tuner.get_run_config().callbacks = callbacks
        return tuner
    tune_config = tune.TuneConfig(
        metric="objective",
        mode=spec.mode,
        search_alg=_searcher(spec, run_dir),
        scheduler=_scheduler(spec),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent,
        time_budget_s=spec.time_budget,
        reuse_actors=True,
        trial_dirname_creator=trial_dir_name,
    )
    run_config = tune.RunConfig(
        name=EXPERIMENT,
        storage_path=where,
        sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=callbacks,
        verbose=0,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def close_study(spec: SweepSpec, run_dir: Path) -> None:
    """Mark Optuna trials the sweep left unfinished (stopped by the budget) as pruned."""
    if not (run_dir / JOURNAL).exists():
        return
    study = optuna.load_study(study_name=spec.name, storage=journal_storage(run_dir))
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(frozen.number, state=optuna.trial.TrialState.PRUNED)
