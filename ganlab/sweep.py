"""Ray Tune and Optuna glue: the only module that imports Ray.

One Tune trial runs one configuration over the sweep's seeds (`ganlab.trial.Trial`), reports
after every evaluation with a checkpoint, and resumes from `tune.get_checkpoint()` (or, where that
file is unreadable, the checkpoint before it). Optuna searches through Ray's `OptunaSearch` with a
define-by-run space (`ganlab.space`), its study kept in a journal file in the run directory; ASHA
stops poor trials on the robust objective. The tables are collected trial by trial from Tune's
callbacks (`ganlab.collect`); a collection that fails is reported and tried again, and the sweep
goes on.
"""

import contextlib
import functools
import shutil
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
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from ganlab import (
    journal,
    loggers,
    optunasync,
    pbt,
    plugins,
    protocols,
    rayprivate,
    raystart,
    rundir,
    runlock,
    storage,
    trackers,
    tunestate,
)
from ganlab.collect import (
    Changes,
    CollectError,
    Collector,
    TrialSource,
    error_line,
    first_line,
    local,
)
from ganlab.config import ConfigError
from ganlab.devices import trial_device
from ganlab.preflight import (
    check_run_dir,
    running_error,
    write_record,
)
from ganlab.reports import EvalReport, RunContext
from ganlab.rundir import EXPERIMENT, JOURNAL, RECORD, SAMPLES_FILE, STATE_FILE
from ganlab.search import PBT_MUTABLE, SAMPLERS, SCHEDULERS, SEARCHLESS
from ganlab.space import SearchSpace
from ganlab.spec import BadInput, SweepSpec
from ganlab.trial import Trial, read_state

CHECKPOINTS_KEPT = 2
# PBT clones another trial's last checkpoint, maybe after that trial wrote more: all are kept.
PBT_CHECKPOINTS_KEPT = None
WRITTEN_BY = "tune_trial_id"  # the key of a checkpoint's state naming the trial that wrote it
COLLECT_EVERY_S = 20.0
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 120.0  # back-off of a collection that failed
FINAL_ATTEMPTS = 4
MANY_PENDING = 100  # a collection of this many trials says so first
SYNC_PERIOD_S = 30  # how often the driver copies trial results to a remote storage
SNAPSHOT_EVERY_S = 1.0  # how often a good copy of Tune's state may be taken


# --- the trainable --------------------------------------------------------------------------


def train(params: dict[str, Any], spec: SweepSpec, shipped: protocols.Shipped) -> None:
    """Ray Tune function trainable: one configuration × the sweep's seeds, evaluated with the
    assets the driver `shipped` (the same on every node)."""
    started_at = time.time()
    plugins.ensure(spec.plugins)  # the user's code (Ray's runtime environment), hash checked
    config = spec.trial_config(params)
    # Where Ray put it: `auto` is a card only when Ray gave the trial a GPU (a zero-GPU task sees
    # every card). The rows keep the configuration as asked; `device_used` says where it ran.
    placed = config.replace(device=trial_device(config.device, ray.get_gpu_ids()).type)
    trial = Trial(placed, assets=protocols.assets_for(placed, shipped))
    node_id = ray.get_runtime_context().get_node_id()
    trial_id = tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    resumed_from = restore(trial, checkpoint, trial_id) if checkpoint is not None else None

    def report(result: EvalReport) -> None:
        with tempfile.TemporaryDirectory() as directory:
            # Which trial wrote it: PBT's exploit hands it to another (`restore`).
            torch.save({**trial.state_dict(), WRITTEN_BY: trial_id}, Path(directory) / STATE_FILE)
            torch.save(trial.samples, Path(directory) / SAMPLES_FILE)
            context = RunContext(trial_config=config.to_dict(), node_id=node_id,
                                 started_at=started_at, reported_at=time.time(),
                                 resumed_from_step=resumed_from,
                                 plugins=plugins.describe(spec.plugins))  # fmt: skip
            metrics = {**result.to_dict(), **context.to_dict()}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    trial.report = report
    trial.run()


def restore(trial: Trial, checkpoint: tune.Checkpoint, trial_id: str | None = None) -> int:
    """Load the newest readable checkpoint of the trial, from `checkpoint` back to older ones
    (a latest one may be corrupt or half written); returns the step it was taken at. A
    checkpoint another trial wrote (PBT's exploit) loads with `PBT_MUTABLE` fields allowed to
    differ, and the clone is recorded in the trial's `exploits`."""
    problems = []
    for candidate in _this_and_older(checkpoint):
        try:
            with candidate.as_directory() as directory:
                state = read_state(Path(directory) / STATE_FILE)
        except Exception as error:  # unreadable, whatever the reason: try the one before it
            problems.append(f"{candidate.path}: {type(error).__name__}: {first_line(str(error))}")
            continue
        writer = state.get(WRITTEN_BY, trial_id)  # older checkpoints: none recorded
        cloned = trial_id is not None and writer != trial_id
        changed = trial.load_state_dict(state, PBT_MUTABLE if cloned else ())
        if cloned:
            trial.exploits.append({"step": trial.step, "trial": trial_id, "from_trial": writer,
                                   "changed": changed})  # fmt: skip
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
    """The sweep's Optuna study storage: the journal file, safe against cuts and full disks."""
    return journal.journal_storage(run_dir / JOURNAL)


class JournalSearch(OptunaSearch):
    """Ray's OptunaSearch, for a study whose journal may be ahead of Tune's saved state.

    A driver killed after Optuna recorded a trial as finished, but before Tune saved its own
    state, resumes that trial from its checkpoint; OptunaSearch would then report its results
    into a finished Optuna trial, whose error ends the whole sweep. The journal's record of the
    trial stands (a resumed trial repeats the same values), so such a report is dropped.
    """

    journal_path: Path | None = None  # this run's journal
    journal_copy: str | None = None  # the run's URI, where a copy of the journal is kept

    def use_journal(self, path: Path, copy_to: str | None) -> None:
        """Keep the study in the journal at `path`, copied to the run at URI `copy_to` (if any)
        before every save of the searcher's state. A restored searcher's pickled storage names
        the journal by the absolute path it had where the sweep started: on another machine (or
        working directory), another file, or none; and that machine's copy of the journal must
        hold every trial the saved state knows."""
        self.journal_path, self.journal_copy = path, copy_to

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        # Tune copies the state saved here to the storage afterwards: the journal goes first.
        if self.journal_copy is not None and self.journal_path is not None:
            try:
                storage.push(self.journal_path.parent, self.journal_copy, [self.journal_path.name])
            except OSError as error:  # the next save tries again; the sweep goes on
                print(f"copying the Optuna journal to {self.journal_copy} failed ({error})")
        super().save_to_dir(checkpoint_dir, session_str)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Restore, then hand on the suggestions a killed driver had asked for but Tune never
        recorded: each orphan is closed as FAIL and its parameters queued, so the next trial
        runs them (a grid's point is run, not skipped or doubled; TPE ignores the orphan)."""
        here = (self.journal_path, self.journal_copy)
        super().restore_from_dir(checkpoint_dir)  # the pickled state, its journal path with it
        if here[0] is not None:
            self.journal_path, self.journal_copy = here
            rayprivate.set_search_storage(self, journal.journal_storage(here[0]))
        study = rayprivate.search_study(self)
        known = {ot_trial.number for ot_trial in rayprivate.search_trials(self).values()}
        running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        for orphan in (t for t in running if t.number not in known):
            params = _orphan_params(study, orphan)
            if params:  # an orphan killed before any parameter was chosen has none to hand on
                study.enqueue_trial(params, skip_if_exists=False)
            study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)

    @property
    def _told(self) -> dict[str, int]:
        """Tune trial id -> the last GAN step told; kept in the searcher's pickled state (one
        pickled before it existed, resumed, starts it empty)."""
        return self.__dict__.setdefault("_ganlab_told", {})

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Each evaluation at its GAN step, with ganlab's names (`ganlab.optunasync`)."""
        if rayprivate.search_trial_done(self, trial_id):
            return
        ot_trial = rayprivate.search_trials(self)[trial_id]
        try:
            told = optunasync.report(ot_trial, trial_id, result, self._told.get(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            rayprivate.mark_search_trial_done(self, trial_id)  # finished in the journal
            return
        if told is not None:
            self._told[trial_id] = told

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """PRUNED where the trial stopped before its last report (ASHA, the time budget), FAIL
        on an error, else COMPLETE (`ganlab.optunasync`). Tune does not pass the result it
        stopped a trial on to `on_trial_result`, so it is reported here first."""
        if rayprivate.search_trial_done(self, trial_id):
            return
        if result:
            self.on_trial_result(trial_id, result)
            if rayprivate.search_trial_done(self, trial_id):  # finished in the journal
                return
        study, ot_trial = rayprivate.search_study(self), rayprivate.search_trials(self)[trial_id]
        # Finished in the journal already (a killed driver's trial, resumed): its record stands.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            optunasync.finish(study, ot_trial, result, error)
        rayprivate.mark_search_trial_done(self, trial_id)


def _orphan_params(study: optuna.Study, orphan: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What an orphaned suggestion was to run: its grid point where a GridSampler chose it (the
    driver may have died before the space suggested every parameter, and a grid's queued trial
    must name them all), else the parameters it had."""
    if not isinstance(study.sampler, optuna.samplers.GridSampler):
        return orphan.params
    if "grid_id" not in orphan.system_attrs:  # no point chosen: closed as FAIL, none is lost
        return {}
    return rayprivate.grid_point(study.sampler, orphan.system_attrs["grid_id"])


def _searcher(
    spec: SweepSpec, run_dir: Path, points: list[dict[str, Any]] | None = None
) -> OptunaSearch | None:
    """Every search goes through Optuna, so every sweep has a journal study to inspect; the
    study tries `points` (searched values) first, in order (`ganlab confirm`)."""
    if not spec.search:
        return None
    searcher = JournalSearch(
        points_to_evaluate=points,
        space=SearchSpace(spec.search),
        metric="objective",
        mode=spec.mode,
        sampler=SAMPLERS[spec.search_alg](spec),
        study_name=spec.name,
        storage=journal_storage(run_dir),
    )
    searcher.use_journal(run_dir / JOURNAL, _journal_copy(spec))
    return searcher


def _population(
    spec: SweepSpec, points: list[dict[str, Any]] | None = None
) -> BasicVariantGenerator:
    """Tune's own sampling of the `param_space` (`ganlab.pbt`), seeded by `search_seed`: a
    PBT population (no Optuna study), `points` first."""
    return BasicVariantGenerator(points_to_evaluate=points, random_state=spec.search_seed)


def _journal_copy(spec: SweepSpec) -> str | None:
    return spec.storage_uri if spec.is_remote_storage else None


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
        self.collector = Collector(run_dir, spec.name, configure, plugins.describe(spec.plugins))
        self.changed: dict[str, Any] = {}  # trial id -> Tune's trial, collected next time
        self.failures = 0
        self.error: Exception | None = None
        self.next_collect = 0.0  # monotonic time of the next collection
        self.start = time.monotonic()
        self.staging: Path | None = None  # Tune's staging directory of its experiment state
        self.next_snapshot = 0.0
        self.snapshot_failed = False

    def setup(self, **info) -> None:
        # Tune calls this after restoring its state and before starting any trial.
        tunestate.check_restored()

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
        self.staging = Path(trial.storage.experiment_driver_staging_path)
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

    def on_step_end(self, iteration, trials, **info) -> None:
        # Tune saves its state inside a step: between steps the staged files are whole.
        if self.staging is None and trials:
            self.staging = Path(trials[0].storage.experiment_driver_staging_path)
        if time.monotonic() >= self.next_snapshot:
            self.next_snapshot = time.monotonic() + SNAPSHOT_EVERY_S
            self._snapshot()
        problem = storage.renew_lease()  # a URI storage's: still this driver's
        if problem:
            self.echo(f"{problem}; the sweep goes on")

    def collect(self) -> bool:
        """Collect the trials that changed, and keep a good copy of Tune's state; False
        (reported, retried later) when collecting failed."""
        for trial in self.changed.values():
            self.staging = Path(trial.storage.experiment_driver_staging_path)
            if trial.storage.trial_dir_name is not None:  # None: never started, no files
                self.collector.update(_source(trial))
        self.changed.clear()
        self._snapshot()
        many = len(self.collector.pending) >= MANY_PENDING  # e.g. every trial, after a resume
        if many:
            self.echo(f"collecting {len(self.collector.pending)} trials into the tables")
        try:
            changes = self.collector(progress=self._collecting if many else None)
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

    def _collecting(self, done: int, total: int) -> None:
        """A line every tenth of a large collection."""
        if done and (done == total or done % max(1, total // 10) == 0):
            self.echo(f"collected {done}/{total} trials")

    def _snapshot(self) -> None:
        """Keep Tune's staged experiment state, whole, for a resume after a cut write. Tune
        writes it in the thread that calls the callbacks, so here it is never half written."""
        if self.staging is None or not self.staging.is_dir():
            return
        try:
            tunestate.snapshot(self.staging, self.run_dir)
        except OSError as error:  # a full disk: the previous good copy stays
            if not self.snapshot_failed:
                self.echo(f"keeping a copy of Tune's state failed ({error.strerror}); the last "
                          "good copy stays, the sweep goes on")  # fmt: skip
            self.snapshot_failed = True
            return
        self.snapshot_failed = False

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
    points: list[dict[str, Any]] | None = None,
) -> Path:
    """Run (or resume) a sweep to the end, its study trying `points` first; returns the run
    directory holding the tables."""
    trackers.check_installed(spec)  # a tracker's missing package stops it before any work
    run_dir = check_run_dir(spec, resume)  # before anything is written
    try:
        with runlock.hold(run_dir), _writer_lease(spec):
            check_run_dir(spec, resume)  # again: another sweep may have started meanwhile
            _run(spec, run_dir, address, resume, echo, points)
    except runlock.Locked as locked:
        raise running_error(spec, run_dir, locked.holder) from None
    except storage.Taken as taken:  # another machine's driver writes this URI
        raise running_error(spec, taken.uri, taken.holder) from None
    return run_dir


def _writer_lease(spec: SweepSpec) -> contextlib.AbstractContextManager:
    """One driver at a time on a URI storage's run (the run directory's lock is this machine's
    only); nothing to hold for a local one."""
    if spec.is_remote_storage:
        return storage.writer_lease(spec.storage_uri)
    return contextlib.nullcontext()


def _run(
    spec: SweepSpec, run_dir: Path, address: str | None, resume: bool, echo, points=None
) -> None:
    if spec.is_remote_storage:
        storage.pull(spec.storage_uri, run_dir, [RECORD, JOURNAL])
    # A driver killed inside an append leaves a partial line, which the next append would glue
    # to a whole one: cut it before any searcher, resumed or new, opens the journal.
    journal.cut_partial_line(run_dir / JOURNAL)
    if not resume:
        write_record(spec, run_dir)
        if spec.is_remote_storage:  # at once: a resume elsewhere checks against it
            storage.push(run_dir, spec.storage_uri, [RECORD])
    started = raystart.start(address, plugins.runtime_env(spec.plugins))
    try:
        shipped = protocols.prepare(spec, run_dir, echo)
        progress = Progress(spec, run_dir, echo)
        experiment = _experiment_uri(spec, run_dir)
        if resume:
            resume = _restorable(spec, run_dir, experiment, echo)
        with tunestate.RestoreGuard(experiment):
            _fit(_tuner(spec, run_dir, resume, progress, shipped, points))
        close_study(spec, run_dir)
        progress.finish()
    except BaseException:
        kept = raystart.stop(started, keep_logs=True)  # the workers' output tells what failed
        if kept is not None:
            echo(f"Ray's logs of this sweep are kept in {kept}")
        raise
    raystart.stop(started)


def _restorable(spec: SweepSpec, run_dir: Path, experiment: str, echo) -> bool:
    """Make Tune's saved state fit to restore: as it is, or from the last good copy
    (`ganlab.tunestate`). Where neither is to be had and no trial had finished, False: the
    sweep starts from its beginning, losing nothing (its tables and study held only trials that
    run again). Else it is refused (`StateLost`)."""
    fs, path = storage.open_uri(experiment)
    bad = tunestate.problems(fs, path)
    if not bad or tunestate.repair(fs, path, run_dir, bad, echo):
        tunestate.realign_checkpoints(fs, path, echo)
        return True
    if tunestate.finished_any(fs, path) or _finished_in_tables(run_dir):
        raise tunestate.lost(experiment, run_dir, bad)
    echo("no trial of the stopped sweep had finished and Tune had saved no usable state: it "
         "starts again from its beginning")  # fmt: skip
    fs.delete_dir_contents(path, missing_dir_ok=True)
    for name in (JOURNAL, *rundir.TABLES):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
    if spec.is_remote_storage:
        storage.delete(spec.storage_uri, [JOURNAL])
    return False


def _finished_in_tables(run_dir: Path) -> bool:
    from ganlab import results

    try:
        trials, _ = results.load(run_dir)
    except FileNotFoundError:
        return False
    return bool(trials.status.isin(["completed", "collapsed", "diverged"]).any())


def _experiment_uri(spec: SweepSpec, run_dir: Path) -> str:
    """Ray's experiment directory, as a URI (a local one as `file://`)."""
    if spec.is_remote_storage:
        return f"{spec.storage_uri}/{EXPERIMENT}"
    return (run_dir / EXPERIMENT).as_uri()


def _fit(tuner: tune.Tuner) -> None:
    """`tuner.fit()`; a resume Tune could not restore is refused, whatever Tune raised."""
    try:
        tuner.fit()
    except Exception:
        tunestate.check_restored()  # the refusal, in place of Tune's wrapped error
        raise


def trial_dir_name(trial) -> str:
    """`trial_<id>`: the collector reads a trial's id from its directory's name. (Tune pickles
    this function by name: a sweep started earlier resumes with it.)"""
    return rundir.trial_dir_name(trial.trial_id)


def _tuner(
    spec: SweepSpec,
    run_dir: Path,
    resume: bool,
    progress: Progress,
    shipped: protocols.Shipped,
    points: list[dict[str, Any]] | None = None,
) -> tune.Tuner:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    # A configuration a worker refuses fails the same way every time: no retry, its message in
    # the tables (a worker that died is retried as `max_failures` allows).
    rayprivate.never_retry((ConfigError, BadInput))
    # The protocol's assets go to every node once, through Ray's object store.
    trainable = tune.with_parameters(train, spec=spec, shipped=shipped)
    trainable = tune.with_resources(trainable, resources)
    where = spec.storage_uri if spec.is_remote_storage else str(run_dir)
    # Our own JSON logger ahead of Progress: Tune appends its loggers after the callbacks it is
    # given, and Progress collects result.json, which must hold the result it is told of.
    # The trackers (`loggers:`) come after both: a slow one delays neither.
    callbacks = [rayprivate.KeepLocalResults(), progress, *loggers.callbacks(spec, run_dir)]
    if resume:
        tuner = tune.Tuner.restore(
            f"{where}/{EXPERIMENT}", trainable, resume_unfinished=True, resume_errored=True
        )
        rayprivate.replace_restored_callbacks(tuner, callbacks)
        searcher = rayprivate.restored_search_alg(tuner)
        if isinstance(searcher, JournalSearch):  # this run directory's journal, not the pickled
            searcher.use_journal(run_dir / JOURNAL, _journal_copy(spec))
        return tuner
    searchless = spec.scheduler.name in SEARCHLESS  # PBT draws its own population
    tune_config = tune.TuneConfig(
        metric="objective",
        mode=spec.mode,
        search_alg=_population(spec, points) if searchless else _searcher(spec, run_dir, points),
        scheduler=_scheduler(spec),
        num_samples=spec.num_samples,
        # A PBT population is made at once and takes turns on the resources (PBT pauses trials).
        max_concurrent_trials=None if searchless else spec.max_concurrent,
        time_budget_s=spec.time_budget,
        reuse_actors=True,
        trial_dirname_creator=trial_dir_name,
    )
    run_config = tune.RunConfig(
        name=EXPERIMENT,
        storage_path=where,
        sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=PBT_CHECKPOINTS_KEPT if searchless else CHECKPOINTS_KEPT
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=callbacks,
        verbose=0,
    )
    space = pbt.param_space(spec) if searchless else None
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def close_study(spec: SweepSpec, run_dir: Path) -> None:
    """Mark Optuna trials the sweep left unfinished (stopped by the budget) as pruned."""
    if not (run_dir / JOURNAL).exists():
        return
    study = optuna.load_study(study_name=spec.name, storage=journal_storage(run_dir))
    optunasync.prune_unfinished(study)
