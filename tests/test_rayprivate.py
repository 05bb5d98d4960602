"""Each private Ray/Optuna name ganlab uses (`ganlab.rayprivate`), called against the installed
versions: an upgrade that renames or reshapes one fails here, by name."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ganlab import rayprivate, raystart


def test_the_machines_resources_are_read_as_ray_init_reads_them():
    assert rayprivate.machine_cpus() == float(ray._private.utils.get_num_cpus()) >= 1
    assert rayprivate.machine_gpus() >= 0  # 0 on a machine without a card


def test_the_single_machine_switch_exists_and_is_set():
    constants = ray._private.ray_constants
    before = constants.ENABLE_RAY_CLUSTER
    try:
        rayprivate.keep_loopback_address()
        assert constants.ENABLE_RAY_CLUSTER is False
    finally:
        constants.ENABLE_RAY_CLUSTER = before


def test_a_tuners_callbacks_can_be_replaced(tmp_path):
    class Marker(tune.Callback):
        pass

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path)))
    callbacks = [Marker()]
    rayprivate.replace_restored_callbacks(tuner, callbacks)
    assert tuner._local_tuner.get_run_config().callbacks is callbacks


def test_optuna_search_keeps_its_finished_trials_in_a_set():
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min"
    )
    rayprivate.mark_search_trial_done(searcher, "t1")
    assert "t1" in searcher._completed_trials


def test_a_private_clusters_session_directory_is_found_and_removed_with_it():
    """In a process of its own: the session must be this test's, and Ray not yet running."""
    script = textwrap.dedent(
        """
        import json, os
        from ganlab import rayprivate, raystart
        before = rayprivate.own_session_dir()
        started = raystart.start(None)
        session = rayprivate.own_session_dir()
        seen = {"logs": (session / "logs").is_dir(), "pid": str(os.getpid()) in session.name}
        kept = raystart.stop(started)
        print(json.dumps({"before": before, "started": started, "session": str(session),
                          "kept": kept, **seen}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["before"] is None and found["started"] is True and found["kept"] is None
    assert found["logs"] and found["pid"]  # Ray's session_<date>_<pid> of this process
    session = Path(found["session"])
    assert not session.exists()
    latest = session.parent / "session_latest"
    assert not (latest.is_symlink() and Path(latest.readlink()) == session)


def test_a_cluster_not_started_here_is_left_alone(tmp_path, monkeypatch):
    session = tmp_path / "session_x"
    (session / "logs").mkdir(parents=True)
    monkeypatch.setattr(raystart, "_session", session)
    shut = []
    monkeypatch.setattr(ray, "shutdown", lambda: shut.append(True))
    assert raystart.stop(False) is None and shut == [] and session.is_dir()
    assert raystart.stop(True, keep_logs=True) == session and shut == [True]
    assert session.is_dir()  # a failed sweep's workers' output stays
    monkeypatch.setattr(raystart, "_session", session)
    assert raystart.stop(True) is None and not session.exists()


def test_optuna_search_exposes_its_study_and_in_flight_trials():
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min"
    )
    searcher.suggest("t1")
    study = rayprivate.search_study(searcher)
    assert isinstance(study, optuna.Study)
    (trial,) = rayprivate.search_trials(searcher).values()
    assert trial.number == study.trials[0].number == 0


def test_a_grid_samplers_point_is_found_by_its_id():
    sampler = optuna.samplers.GridSampler({"loss": ["a", "b", "c"], "lr": [1, 2]}, seed=3)
    study = optuna.create_study(sampler=sampler)
    for _ in range(6):
        trial = study.ask()
        params = {"loss": trial.suggest_categorical("loss", ["a", "b", "c"]),
                  "lr": trial.suggest_categorical("lr", [1, 2])}  # fmt: skip
        grid_id = study._storage.get_trial(trial._trial_id).system_attrs["grid_id"]
        assert rayprivate.grid_point(sampler, grid_id) == params
