"""Every use of Ray's and Optuna's private API, each in one named function.

Neither project promises these names. tests/test_rayprivate.py calls each one against the
installed versions and fails when one of them changes, so an upgrade breaks there, by name,
rather than in the middle of a user's sweep.
"""

from pathlib import Path
from typing import Any

import ray


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


def mark_search_trial_done(searcher: Any, trial_id: str) -> None:
    """Tell Ray's OptunaSearch that `trial_id` needs no more reports (its Optuna trial is
    finished already)."""
    searcher._completed_trials.add(trial_id)


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
