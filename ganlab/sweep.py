"""Ray Tune and Optuna glue: the only module that imports Ray.

One Tune trial runs one configuration over the sweep's seeds (`ganlab.trial.Trial`), reports
after every evaluation with a checkpoint, and resumes from `tune.get_checkpoint()`. Optuna
searches through Ray's `OptunaSearch` with a define-by-run space (`ganlab.space`), its study kept
in a journal file in the run directory; ASHA stops poor trials on the robust objective.
"""

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from ganlab import results, storage
from ganlab.space import SearchSpace
from ganlab.spec import SweepSpec
from ganlab.trial import Trial

EXPERIMENT = "tune"  # Ray's experiment directory inside the run directory
JOURNAL = "optuna-journal.log"
STATE_FILE = "state.pt"
SAMPLES_FILE = "samples.pt"
CHECKPOINTS_KEPT = 2
COLLECT_EVERY_S = 20.0
SYNC_PERIOD_S = 30  # how often the driver copies trial results to a remote storage


class SweepError(RuntimeError):
    """A sweep that cannot start as asked (exit code 2 at the command line)."""


def run_dir_of(spec: SweepSpec) -> Path:
    """Where the tables, the journal and the report go: `<storage>/<name>` for local storage,
    `./runs/<name>` (and a copy on the storage) for a URI."""
    if spec.is_remote_storage:
        return Path("runs").resolve() / spec.name
    return Path(spec.storage).expanduser().resolve() / spec.name


def check_run_dir(spec: SweepSpec, resume: bool) -> Path:
    """Refuse to overwrite a previous sweep, and to resume one that is not there."""
    run_dir = run_dir_of(spec)
    exists = (run_dir / EXPERIMENT).exists() or (run_dir / JOURNAL).exists()
    if spec.is_remote_storage:
        exists = exists or storage.exists(f"{spec.storage_uri}/{EXPERIMENT}")
    if exists and not resume:
        raise SweepError(f"{spec.storage_uri} holds a sweep already: add --resume to continue "
                         "it, or give the sweep another `name`")  # fmt: skip
    if resume and not exists:
        raise SweepError(f"--resume: no sweep to resume in {spec.storage_uri}")
    return run_dir


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
    local = next(node for node in nodes if node["NodeID"] == here)
    hosts = {node["NodeManagerAddress"] for node in nodes}
    elsewhere = hosts - {local["NodeManagerAddress"]}
    can_run_here = all(
        local["Resources"].get(key, 0.0) >= need
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
            f"storage {spec.storage!r} is a local path, but {where}: their trials could not "
            "write there. Set `storage:` in the sweep file (or --storage) to a cloud URI such "
            "as s3://my-bucket/ganlab-runs, or to a shared file system (NFS, EFS) mounted at "
            "the same path on every node."
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
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, weights_only=False)
        trial.load_state_dict(state)

    def report(result: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(trial.state_dict(), Path(directory) / STATE_FILE)
            torch.save(trial.samples, Path(directory) / SAMPLES_FILE)
            extra = {"trial_config": config.to_dict(), "node_id": node_id,
                     "started_at": started_at, "reported_at": time.time()}  # fmt: skip
            tune.report({**result, **extra}, checkpoint=tune.Checkpoint.from_directory(directory))

    trial.report = report
    trial.run()


# --- searchers and schedulers ---------------------------------------------------------------


def journal_storage(run_dir: Path) -> optuna.storages.JournalStorage:
    backend = optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL))
    return optuna.storages.JournalStorage(backend)


def _searcher(spec: SweepSpec, run_dir: Path) -> OptunaSearch | None:
    """Every search goes through Optuna, so every sweep has a journal study to inspect."""
    if not spec.search:
        return None
    samplers = {
        "optuna": lambda: optuna.samplers.TPESampler(seed=spec.search_seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=spec.search_seed),
        "grid": lambda: optuna.samplers.GridSampler(
            {p.name: list(p.values) for p in spec.search}, seed=spec.search_seed
        ),
    }
    return OptunaSearch(
        space=SearchSpace(spec.search),
        metric="objective",
        mode=spec.mode,
        sampler=samplers[spec.search_alg](),
        study_name=spec.name,
        storage=journal_storage(run_dir),
    )


def _scheduler(spec: SweepSpec):
    if spec.scheduler.name == "none":
        return FIFOScheduler()
    config = spec.trial_config({})
    return ASHAScheduler(
        time_attr="step",
        max_t=config.steps,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


# --- running --------------------------------------------------------------------------------


class Progress(tune.Callback):
    """One line per evaluation, and the results tables rewritten as trials finish."""

    def __init__(self, spec: SweepSpec, run_dir: Path, echo: Callable[[str], None]):
        self.spec, self.run_dir, self.echo = spec, run_dir, echo
        self.finished = 0
        self.collector = results.Collector(run_dir, spec.name)
        self.last_collect = time.monotonic()
        self.start = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        seeds = result.get("seeds", {})
        diverged = sum(bool(s.get("diverged")) for s in seeds.values())
        elapsed = time.monotonic() - self.start
        self.echo(
            f"[{elapsed:6.0f}s {self.finished}/{self.spec.num_samples} done] {trial.trial_id} "
            f"step {result['step']:>6}: objective {result['objective']:.6g}, "
            f"diverged {diverged}/{len(seeds)}"
        )
        if time.monotonic() - self.last_collect > COLLECT_EVERY_S:
            self._collect()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        self._collect()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.echo(f"trial {trial.trial_id} failed: {trial.error_file}")

    def _collect(self) -> None:
        self.last_collect = time.monotonic()
        collect(self.spec, self.run_dir, self.collector)


def run(
    spec: SweepSpec,
    address: str | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run (or resume) a sweep to the end; returns the run directory holding the tables."""
    run_dir = check_run_dir(spec, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = _start_ray(address)
    try:
        tuner = _tuner(spec, run_dir, resume, echo)
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
    close_study(spec, run_dir)
    collect(spec, run_dir)
    return run_dir


def collect(spec: SweepSpec, run_dir: Path, collector: results.Collector | None = None) -> None:
    """Write the tables from Ray's experiment, wherever the storage is."""
    if spec.is_remote_storage:
        storage.pull_results(f"{spec.storage_uri}/{EXPERIMENT}", run_dir / EXPERIMENT)
    (collector or results.Collector(run_dir, spec.name))()
    if spec.is_remote_storage:
        storage.push_outputs(run_dir, spec.storage_uri)


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


def _tuner(spec: SweepSpec, run_dir: Path, resume: bool, echo) -> tune.Tuner:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(train, spec=spec), resources)
    where = spec.storage_uri if spec.is_remote_storage else str(run_dir)
    experiment = f"{where}/{EXPERIMENT}"
    if resume:
        return tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=True
        )
    searcher = _searcher(spec, run_dir)
    tune_config = tune.TuneConfig(
        metric="objective",
        mode=spec.mode,
        search_alg=searcher,
        scheduler=_scheduler(spec),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent,
        time_budget_s=spec.time_budget,
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=EXPERIMENT,
        storage_path=where,
        sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[Progress(spec, run_dir, echo)],
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
