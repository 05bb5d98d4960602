"""Trackers (`loggers:`) on a real local Ray: the quickstart at --smoke with TensorBoard, MLflow
(an SQLite store in the run directory) and W&B (offline), each read back with the tool's own
reader, against the metrics table."""

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from localray import private_ray

from ganlab import cli, loggers, results, rundir, spec, sweep, trackers

QUICKSTART = Path(__file__).parent.parent / "sweeps" / "quickstart.yaml"
ALL = ["tensorboard", "mlflow", "wandb"]
SECRET = "ganlab-test-key-5f0c9a7e31b24d68a1e0c7b9d2f4a6e8"  # a fake W&B API key
TOOL_ENV = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_GROUP",
            "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")  # fmt: skip


def _sweep_file(directory: Path, loggers_: list[str]) -> Path:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["loggers"] = loggers_
    path = directory / "quickstart.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One quickstart sweep at --smoke watched by all three trackers, on a private Ray started
    after the tools' variables are set (Ray's workers take the environment Ray started with)."""
    saved = {key: os.environ.pop(key, None) for key in TOOL_ENV}
    os.environ.update(WANDB_MODE="offline", WANDB_API_KEY=SECRET)
    root = tmp_path_factory.mktemp("tracked")
    s = spec.load(_sweep_file(root, ALL), smoke=True, storage=str(root / "runs"))
    try:
        with private_ray():
            run_dir = sweep.run(s, echo=lambda line: None)
            trials, metrics = results.load(run_dir)
            yield s, run_dir, trials, metrics
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def _series(metrics, trial_id: str, seed: int, column: str) -> tuple[list[int], list[float]]:
    """The metrics table's finite values of `column` for one seed of one trial, by step."""
    rows = metrics[(metrics.trial_id == trial_id) & (metrics.seed == seed)].sort_values("step")
    rows = rows[np.isfinite(rows[column].astype(float))]
    return rows.step.astype(int).tolist(), rows[column].astype(float).tolist()


def _trial_dir(run_dir: Path, trial_id: str) -> Path:
    return run_dir / rundir.EXPERIMENT / rundir.trial_dir_name(trial_id)


def test_tensorboard_has_gan_steps_per_seed_series_hparams_and_sample_pictures(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    s, run_dir, trials, metrics = tracked
    for trial_id, rows in trials.groupby("trial_id"):
        events = EventAccumulator(str(_trial_dir(run_dir, trial_id)), size_guidance={
            "scalars": 0, "images": 0, "tensors": 0})  # fmt: skip
        events.Reload()
        tags = events.Tags()
        assert not any(tag.startswith("ray/") for tag in tags["scalars"])  # not Ray's default
        for seed in s.seeds:
            steps, values = _series(metrics, trial_id, seed, "fid")
            logged = events.Scalars(f"seed_{seed}/fid")
            assert [e.step for e in logged] == steps and steps[0] == 0
            assert [e.value for e in logged] == pytest.approx(values, rel=1e-6)
            pictures = events.Images(f"seed_{seed}/samples")
            assert [p.step for p in pictures] == steps  # one picture per evaluation
            assert pictures[-1].encoded_image_string.startswith(b"\x89PNG")
        steps, objective = _series(metrics, trial_id, s.seeds[0], "objective")
        assert [e.value for e in events.Scalars("objective")] == pytest.approx(objective)
        content = events.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        row = rows.iloc[0]
        assert hparams["lr_d"].number_value == pytest.approx(row.lr_d)
        assert hparams["loss"].string_value == row.loss
        assert "seeds" not in hparams and "lr_d" not in tags["scalars"]  # not as scalars
        experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert {m.name.tag for m in experiment.metric_infos} == set(loggers.HPARAM_METRICS)
        status = events.Tensors("status/text_summary")[-1]
        text = status.tensor_proto.string_val[0].decode()
        for seed, seed_status in zip(rows.seed, rows.status, strict=True):
            assert f"seed {seed}: {seed_status}" in text


def test_mlflow_has_a_run_per_trial_with_steps_params_status_and_images(tracked):
    from mlflow.tracking import MlflowClient

    s, run_dir, trials, metrics = tracked
    client = MlflowClient(f"sqlite:///{run_dir / loggers.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(s.name)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(trials.trial_id)
    for trial_id, rows in trials.groupby("trial_id"):
        run = runs[trial_id]
        assert run.info.status == "FINISHED" and run.data.tags["sweep"] == s.name
        assert float(run.data.params["lr_g"]) == pytest.approx(rows.iloc[0].lr_g)
        assert run.data.params["loss"] == rows.iloc[0].loss and "seeds" not in run.data.params
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        for seed, seed_status in zip(rows.seed, rows.status, strict=True):
            steps, values = _series(metrics, trial_id, seed, "fid")
            history = client.get_metric_history(run.info.run_id, f"seed_{seed}/fid")
            history = sorted(history, key=lambda m: m.step)
            assert [m.step for m in history] == steps
            assert [m.value for m in history] == pytest.approx(values)
            assert run.data.tags[f"seed_{seed}/status"] == seed_status
            for step in steps:
                assert any(f"seed_{seed}~samples+step+{step}+" in p and p.endswith(".png")
                           for p in images)  # fmt: skip


def _wandb_records(path: Path) -> list:
    """The records of a W&B `.wandb` file: a 7-byte header (':W&B', magic, version), then
    LevelDB-log framing (32 KiB blocks of 7-byte-headed chunks) of protobuf `Record`s."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunk, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        if kind == 0 and length == 0:
            break
        chunk += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_wandb_offline_runs_hold_gan_steps_config_summary_and_images(tracked):
    import json

    _, run_dir, trials, metrics = tracked
    for trial_id, rows in trials.groupby("trial_id"):
        (offline,) = (_trial_dir(run_dir, trial_id) / "wandb").glob(f"offline-run-*-{trial_id}")
        records = _wandb_records(offline / f"run-{trial_id}.wandb")
        kinds = [r.WhichOneof("record_type") for r in records]
        history = {}  # step -> {key: value}
        for record in (r for r in records if r.WhichOneof("record_type") == "history"):
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in record.history.item}  # fmt: skip
            history.setdefault(record.history.step.num, {}).update(items)
        config = {}
        for record in (r for r in records if r.WhichOneof("record_type") == "config"):
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        summary = {}
        for record in (r for r in records if r.WhichOneof("record_type") == "summary"):
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.summary.update})  # fmt: skip
        assert "exit" in kinds  # wandb.finish() ran before Tune's last copy to the storage
        assert config["loss"] == rows.iloc[0].loss
        assert config["lr_d"] == pytest.approx(rows.iloc[0].lr_d)
        for seed, seed_status in zip(rows.seed, rows.status, strict=True):
            steps, values = _series(metrics, trial_id, seed, "fid")
            logged = [(step, row[f"seed_{seed}/fid"]) for step, row in sorted(history.items())
                      if f"seed_{seed}/fid" in row]  # fmt: skip
            assert [step for step, _ in logged] == steps
            assert [value for _, value in logged] == pytest.approx(values)
            media = offline / "files" / "media" / "images" / f"seed_{seed}"
            for step in steps:  # a wandb.Image at every evaluation, its PNG in the run's files
                assert history[step][f"seed_{seed}/samples/_type"] == "image-file"
                (png,) = media.glob(f"samples_{step}_*.png")
                assert png.read_bytes().startswith(b"\x89PNG")
            assert summary[f"seed_{seed}/status"] == seed_status


def test_no_credential_reaches_the_run_directory(tracked):
    _, run_dir, _, _ = tracked
    secret = SECRET.encode()
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []
    # W&B links files in its own directory; Ray's copy to the storage follows the links, and
    # a link in the run directory would make `--resume` refuse it (`preflight.check_trusted`).
    assert [p for p in run_dir.rglob("*") if p.is_symlink()] == []
    assert (run_dir / loggers.MLFLOW_DB).is_file()  # the trackers did write there


# --- the sweep file and the packages -------------------------------------------------------------


def test_loggers_default_to_tensorboard_and_take_none_or_all(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(QUICKSTART.read_text())
    assert spec.load(path).loggers == ("tensorboard",)
    assert spec.load(_sweep_file(tmp_path, [])).loggers == ()
    assert spec.load(_sweep_file(tmp_path, ALL)).loggers == tuple(ALL)
    assert "loggers" not in spec.load(path).record()  # a resume may watch it with other tools


@pytest.mark.parametrize("given, message", [
    (["tensorboard", "neptune"], "'neptune' is not one of: tensorboard, mlflow, wandb"),
    ("wandb", "must be a list of tracker names"),
    (["mlflow", "mlflow"], "names a tracker twice"),
])  # fmt: skip
def test_a_bad_loggers_field_exits_2_naming_it_and_the_allowed_names(
    tmp_path, capsys, given, message
):
    path = _sweep_file(tmp_path, given)
    assert cli.main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: loggers: " in err and message in err
    assert not (tmp_path / "runs").exists()


def test_a_missing_package_exits_2_naming_the_extra_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    path = _sweep_file(tmp_path, ["tensorboard", "mlflow"])
    assert cli.main(["sweep", str(path), "--smoke", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "loggers: mlflow needs the `mlflow` package" in err
    assert "pip install 'ganlab[mlflow]'" in err
    assert not (tmp_path / "runs").exists()
    assert trackers.missing(["tensorboard", "wandb"]) == []


def test_wandb_without_a_key_or_offline_mode_exits_2_before_any_work(
    tmp_path, capsys, monkeypatch
):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: never logged in
    path = _sweep_file(tmp_path, ["wandb"])
    assert cli.main(["sweep", str(path), "--smoke", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "loggers: wandb: No WandB API key found" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "runs").exists()


def test_without_tensorboard_tune_adds_no_tensorboard_files_of_its_own(tmp_path):
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    s = spec.load(_sweep_file(tmp_path, []))
    made = _create_default_callbacks(loggers.callbacks(s, tmp_path), metric="objective")
    tensorboards = [c for c in made if isinstance(c, TBXLoggerCallback)]
    assert [type(c) for c in tensorboards] == [loggers.NoTensorBoard]
    s = spec.load(_sweep_file(tmp_path, ["tensorboard"]))
    made = _create_default_callbacks(loggers.callbacks(s, tmp_path), metric="objective")
    assert [type(c) for c in made if isinstance(c, TBXLoggerCallback)] == [
        loggers.TensorBoardLogger
    ]


# --- pictures --------------------------------------------------------------------------------


def test_points_are_drawn_over_the_real_data_and_images_tiled_and_enlarged():
    real = np.array([[2.0, 0.0], [-2.0, 0.0]], np.float32)
    points = trackers.picture(np.array([[2.0, 0.0], [50.0, 0.0]], np.float32), real)
    assert points.shape == (trackers.POINTS_SIZE, trackers.POINTS_SIZE, 3)
    assert points.dtype == np.uint8
    blue = np.all(points == trackers.FAKE_BLUE, axis=-1)
    assert blue[:, -2:].any()  # the fake far outside is drawn on the right border
    grey = np.all(points == trackers.REAL_GREY, axis=-1)
    assert grey[:, : trackers.POINTS_SIZE // 2].any()  # (-2, 0) on the left half
    digits = trackers.picture(np.zeros((40, 1, 8, 8), np.float32))  # grey 0.0: 128
    assert digits.ndim == 3 and digits.shape[-1] == 3
    assert digits.shape[1] == 4 * (8 * 8 + 9)  # 8 columns of 8 px, 9 px of padding, ×4
    assert (digits == 128).any() and math.isclose(digits.shape[0], 4 * (4 * 9 + 1))
