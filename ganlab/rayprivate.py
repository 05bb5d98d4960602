"""Every use of Ray's and Optuna's private API, each in one named function.

Neither project promises these names. tests/test_rayprivate.py calls each one against the
installed versions and fails when one of them changes, so an upgrade breaks there, by name,
rather than in the middle of a user's sweep.
"""

from pathlib import Path
from typing import Any

import optuna
import ray
from ray.tune.logger import JsonLoggerCallback


def machine_cpus() -> float:
    """The CPUs `ray.init` would give this machine's node (container quotas included)."""
    return float(ray._private.utils.get_num_cpus())


def machine_gpus() -> float:
    """The GPUs `ray.init` would give this machine's node."""
    manager = ray._private.accelerators.get_accelerator_manager_for_resource("GPU")
    return float(manager.get_current_node_num_accelerators())


def keep_loopback_address() -> None:
    """Ray's single-machine mode, which keeps a loopback node address (on Linux Ray swaps it for
    the machine's routable one). The constant is read when Ray starts a node."""
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def replace_restored_callbacks(tuner: Any, callbacks: list) -> None:
    """A restored Tuner runs with the callbacks pickled when the sweep started (the old
    process's); put this process's own in their place."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def restored_search_alg(tuner: Any) -> Any:
    """The search algorithm a restored Tuner unpickled (None for a sweep without one)."""
    return tuner._local_tuner._tune_config.search_alg


def set_search_storage(searcher: Any, storage: Any) -> None:
    """Point Ray's OptunaSearch, and the Optuna trials it has running, at the study `storage`
    holds, under the study name and with the sampler (and its random state) it has."""
    study = optuna.load_study(
        study_name=searcher._study_name, storage=storage, sampler=searcher._sampler
    )
    searcher._storage, searcher._ot_study = storage, study
    for ot_trial in searcher._ot_trials.values():  # `optuna.Trial`s, pickled with their study
        ot_trial.study, ot_trial.storage = study, storage


def mark_search_trial_done(searcher: Any, trial_id: str) -> None:
    """Tell Ray's OptunaSearch that `trial_id` needs no more reports (its Optuna trial is
    finished already)."""
    searcher._completed_trials.add(trial_id)


def search_trial_done(searcher: Any, trial_id: str) -> bool:
    """Whether Ray's OptunaSearch has finished `trial_id` (told the study, or marked done)."""
    return trial_id in searcher._completed_trials


def optuna_trial(study: Any, frozen: Any) -> Any:
    """The live `optuna.Trial` of a study's `FrozenTrial`, to set attributes on and tell (a
    FrozenTrial has only the study-wide number; the storage keys trials by their own id)."""
    import optuna

    return optuna.Trial(study, frozen._trial_id)


def own_session_dir() -> Path | None:
    """The session directory (logs, sockets, Tune's staging) of the Ray head node this process
    started, while Ray runs; None when Ray is not running or this process joined a cluster
    someone else started (whose session directory is theirs)."""
    node = ray._private.worker._global_node
    if node is None or not node.head:
        return None
    return Path(node.get_session_dir_path())


def search_study(searcher: Any) -> Any:
    """The Optuna study Ray's OptunaSearch asks and tells."""
    return searcher._ot_study


def search_trials(searcher: Any) -> dict[str, Any]:
    """Ray's OptunaSearch's in-flight trials: Tune trial id -> Optuna trial."""
    return searcher._ot_trials


def grid_point(sampler: Any, grid_id: int) -> dict[str, Any]:
    """The parameters of Optuna's GridSampler's point `grid_id` (its grid is shuffled by its
    seed, so only the sampler knows which point an id is)."""
    return dict(zip(sampler._param_names, sampler._all_grids[grid_id], strict=True))


def tbx_writers(callback: Any) -> dict[Any, Any]:
    """Ray's TBXLoggerCallback's open tensorboardX writers: Tune trial -> SummaryWriter."""
    return callback._trial_writer


def mlflow_runs(callback: Any) -> dict[Any, str]:
    """Ray's MLflowLoggerCallback's runs: Tune trial -> MLflow run id (filled by its setup)."""
    return callback._trial_runs


def wandb_logging_actor() -> type:
    """The class of Ray's W&B logging actor, one per trial, which a WandbLoggerCallback makes
    from its `_logger_actor_cls`; its `_handle_result(result) -> (log, config)` turns a result
    into what it gives `wandb.log` and `wandb.config.update`."""
    from ray.air.integrations.wandb import _WandbLoggingActor

    return _WandbLoggingActor


def never_retry(kinds: tuple[type[BaseException], ...]) -> None:
    """Make Tune give up at once on a trial whose trainable raised one of `kinds` (a
    configuration that cannot run fails the same way every time), whatever `max_failures`
    allows. Tune counts the failure in `Trial.handle_error`, then asks `should_recover`, with
    no hook between; so `handle_error` is wrapped, once, to count such a failure as the last
    allowed. Other failures (a worker that died) are retried as before."""
    from ray.exceptions import RayTaskError
    from ray.tune.experiment.trial import Trial

    original = getattr(Trial.handle_error, "__wrapped__", Trial.handle_error)

    def handle_error(self, exc=None):
        original(self, exc)
        cause = exc.as_instanceof_cause() if isinstance(exc, RayTaskError) else exc
        if isinstance(cause, kinds) and self.max_failures >= 0:
            self.run_metadata.num_failures = max(self.run_metadata.num_failures,
                                                 self.max_failures + 1)  # fmt: skip

    handle_error.__wrapped__ = original
    Trial.handle_error = handle_error


def wandb_run_future(callback: Any, trial: Any) -> Any:
    """The object ref of the `run()` of a WandbLoggerCallback's logging actor for `trial` (it
    returns after `wandb.finish()`), or None once Ray's callback has cleaned it up."""
    return callback._trial_logging_futures.get(trial)


def wandb_key_problem() -> str | None:
    """Why Ray's WandbLoggerCallback would refuse to start here (no W&B API key in
    WANDB_API_KEY, no `wandb login`, and WANDB_MODE neither offline nor disabled), or None."""
    from ray.air.integrations.wandb import _set_api_key

    try:
        _set_api_key()
    except ValueError as error:
        return str(error)
    return None


class KeepLocalResults(JsonLoggerCallback):
    """Tune's JSON logger, keeping the driver's own result.json of a trial that starts again in
    the same driver (PBT pauses trials and restarts those it exploits). Tune would copy the
    storage's result.json over it, which lags by up to a sync period: the reports made since
    would be lost. A driver that resumes a sweep has no local file, and gets the storage's."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if not Path(trial.local_path, file_name).exists():
            super()._restore_from_remote(file_name, trial)
