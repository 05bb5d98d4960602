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


def test_ray_tracker_callbacks_keep_their_runs_and_actor_where_ganlab_reads_them(tmp_path):
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    assert rayprivate.tbx_writers(TBXLoggerCallback()) == {}
    mlflow = MLflowLoggerCallback(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="x")
    mlflow.setup()
    assert rayprivate.mlflow_runs(mlflow) == {}
    actor = rayprivate.wandb_logging_actor()
    assert WandbLoggerCallback._logger_actor_cls is actor
    assert rayprivate.wandb_run_future(WandbLoggerCallback(project="p"), "a trial") is None
    assert callable(actor._handle_result) and callable(actor.run)


def test_optuna_search_says_which_trials_it_finished():
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min"
    )
    searcher.suggest("t1")
    searcher.suggest("t2")
    searcher.on_trial_complete("t1", {"m": 0.5})
    assert rayprivate.search_trial_done(searcher, "t1")
    assert not rayprivate.search_trial_done(searcher, "t2")


def test_a_frozen_trial_gives_its_live_trial():
    study = optuna.create_study()
    study.ask()
    (frozen,) = study.get_trials(deepcopy=False)
    trial = rayprivate.optuna_trial(study, frozen)
    trial.set_user_attr("status", "pruned")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    (told,) = study.trials
    assert told.state == optuna.trial.TrialState.PRUNED and told.user_attrs == {"status": "pruned"}


def test_a_tuners_search_algorithm_is_found(tmp_path):
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min"
    )
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=searcher),
                       run_config=tune.RunConfig(storage_path=str(tmp_path)))  # fmt: skip
    assert rayprivate.restored_search_alg(tuner) is searcher


def test_optuna_search_and_its_running_trials_move_to_another_journal(tmp_path):
    from ganlab import journal

    first = journal.journal_storage(tmp_path / "a.log")
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min",
        study_name="s", storage=first,
    )  # fmt: skip
    suggested = searcher.suggest("t1")
    (tmp_path / "b.log").write_bytes((tmp_path / "a.log").read_bytes())  # the copy elsewhere
    (tmp_path / "a.log").unlink()
    moved = journal.journal_storage(tmp_path / "b.log")
    rayprivate.set_search_storage(searcher, moved)
    assert rayprivate.search_study(searcher)._storage is moved
    (trial,) = rayprivate.search_trials(searcher).values()
    assert trial.storage is moved and trial.study is rayprivate.search_study(searcher)
    searcher.on_trial_complete("t1", {"m": 0.5, **suggested})
    (done,) = optuna.load_study(study_name="s", storage=moved).trials
    assert (done.state, done.value, done.params) == (optuna.trial.TrialState.COMPLETE, 0.5,
                                                     suggested)  # fmt: skip
    assert not (tmp_path / "a.log").exists()


def test_the_json_logger_restores_a_trials_results_through_the_method_ganlab_overrides(tmp_path):
    from types import SimpleNamespace

    from ray.tune.logger import JsonLoggerCallback

    calls = []
    original = JsonLoggerCallback._restore_from_remote
    try:
        JsonLoggerCallback._restore_from_remote = lambda self, name, trial: calls.append(name)
        trial = SimpleNamespace(local_path=str(tmp_path))
        rayprivate.KeepLocalResults()._restore_from_remote("result.json", trial)
        (tmp_path / "result.json").write_text("{}\n")  # the driver's own: kept
        rayprivate.KeepLocalResults()._restore_from_remote("result.json", trial)
    finally:
        JsonLoggerCallback._restore_from_remote = original
    assert calls == ["result.json"]
    import inspect

    assert "_restore_from_remote(EXPR_RESULT_FILE" in inspect.getsource(
        JsonLoggerCallback.log_trial_start
    )
