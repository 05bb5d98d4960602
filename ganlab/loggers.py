"""Ray Tune's own logger callbacks for TensorBoard, MLflow and W&B, fed ganlab's view of a trial
(`ganlab.trackers`) in place of Ray's flattened result keyed by its report count.

Each subclass keeps its Ray parent's run handling (TensorBoard's event files in the trial's
directory, MLflow's run per trial, W&B's logging actor per trial) and replaces what is written:
ganlab's scalars at the GAN step, the configuration as hyperparameters, each live seed's
samples as a picture when the report's checkpoint is registered (`log_trial_save`), and each
seed's status at the end. A tracker that fails is reported once and the sweep goes on: Tune
would end the whole sweep on an exception from a callback.

Credentials stay in the environment, where each tool looks for them (MLFLOW_TRACKING_URI and
MLFLOW_TRACKING_TOKEN, WANDB_API_KEY, WANDB_MODE, ...); nothing here writes them anywhere.
"""

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from ganlab import rayprivate, trackers
from ganlab.reports import EvalReport
from ganlab.rundir import SAMPLES_FILE
from ganlab.spec import SweepSpec

HPARAM_METRICS = ("objective", "div_rate", "collapse_rate")  # TensorBoard's hparams table
MLFLOW_DB = "mlflow.db"  # the run directory's own MLflow store, where no tracking URI is set
MLFLOW_ARTIFACTS = "mlflow-artifacts"
MLFLOW_BATCH = 1000  # MLflow's limit of metrics in one log_batch
REAL_POINTS = 1000  # real 2-D points drawn under the fakes


class _TrialView:
    """What the three loggers share: ganlab's reading of Tune's hooks. A subclass writes with
    `_scalars(trial, step, values)`, `_pictures(trial, step, pictures)` and
    `_end(trial, step, statuses, failed)`."""

    def _view(self, spec: SweepSpec, run_dir: Path) -> None:
        self.spec, self.run_dir = spec, run_dir
        self._last: dict[Any, EvalReport] = {}  # Tune's trial -> its latest report
        self._real: dict[tuple[str, str], np.ndarray | None] = {}
        self._failed: set[str] = set()  # what already failed once, reported then

    def _hyperparameters(self, trial) -> dict[str, Any]:
        return trackers.hyperparameters(self.spec.trial_config(trial.config).to_dict())

    def log_trial_start(self, trial) -> None:
        self._guard("starting a run", self._start, trial)

    def _start(self, trial) -> None:
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        report = self._guard("reading a report", EvalReport.from_dict, result)
        if report is None:
            return
        self._last[trial] = report
        self._guard("logging metrics", self._scalars, trial, report.step, trackers.scalars(report))

    def log_trial_save(self, trial) -> None:
        report, checkpoint = self._last.get(trial), trial.checkpoint
        if report is None or checkpoint is None:
            return
        shown = self._guard("reading samples", self._pictures_of, trial, checkpoint, report)
        if shown:
            self._guard("logging samples", self._pictures, trial, report.step, shown)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        report = self._last.pop(trial, None)
        if report is not None:
            steps = self.spec.trial_config(trial.config).steps
            seeds = trackers.statuses(report, failed, steps)
            self._guard("logging the status", self._end, trial, report.step, seeds, failed)
        self._guard("closing the run", super().log_trial_end, trial, failed)

    def _pictures_of(self, trial, checkpoint, report: EvalReport) -> dict[str, np.ndarray]:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{SAMPLES_FILE}") as f:
            samples = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        samples = {int(seed): x.numpy() for seed, x in samples.items()}
        points = any(x.ndim == 2 for x in samples.values())
        real = self._real_points(trial) if points else None
        return trackers.pictures(samples, report, real)

    def _real_points(self, trial) -> np.ndarray | None:
        """Real 2-D data to draw the fakes over, once per data set (None: not readable here)."""
        config = self.spec.trial_config(trial.config)
        key = (config.dataset, config.data_dir)
        if key not in self._real:
            from ganlab import data

            try:
                loaded = data.load(config.dataset, config.data_dir)
                real = loaded.sample(REAL_POINTS, torch.Generator().manual_seed(0))
                self._real[key] = real.numpy()
            except FileNotFoundError:
                self._real[key] = None
        return self._real[key]

    def _guard(self, what: str, fn, *args) -> Any:
        try:
            return fn(*args)
        except Exception as error:  # a tracker must not end the sweep
            if what not in self._failed:
                self._failed.add(what)
                print(f"{type(self).__name__}: {what} failed ({type(error).__name__}: "
                      f"{error}); the sweep goes on without it")  # fmt: skip
            return None


def _status_line(seeds: dict[int, str]) -> str:
    return ", ".join(f"seed {seed}: {status}" for seed, status in seeds.items())


# --- TensorBoard ------------------------------------------------------------------------------


class TensorBoardLogger(_TrialView, TBXLoggerCallback):
    """Event files in each trial's directory (`tensorboard --logdir runs/<sweep>/experiment`):
    scalars and sample pictures at the GAN step, the hparams plugin's table of configurations."""

    def __init__(self, spec: SweepSpec, run_dir: Path):
        super().__init__()
        self._view(spec, run_dir)

    def _start(self, trial) -> None:
        from tensorboardX.summary import hparams

        super()._start(trial)
        experiment, session_start, _ = hparams(
            self._hyperparameters(trial), dict.fromkeys(HPARAM_METRICS, 0.0)
        )
        writer = self._writer(trial).file_writer
        writer.add_summary(experiment)
        writer.add_summary(session_start)

    def _writer(self, trial):
        if trial not in rayprivate.tbx_writers(self):
            self.log_trial_start(trial)
        return rayprivate.tbx_writers(self)[trial]

    def _scalars(self, trial, step: int, values: dict[str, float]) -> None:
        writer = self._writer(trial)
        for key, value in values.items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def _pictures(self, trial, step: int, shown: dict[str, np.ndarray]) -> None:
        writer = self._writer(trial)
        for key, pixels in shown.items():
            writer.add_image(key, pixels, global_step=step, dataformats="HWC")
        writer.flush()

    def _end(self, trial, step: int, seeds: dict[int, str], failed: bool) -> None:
        from tensorboardX.summary import hparams

        writer = self._writer(trial)
        line = _status_line(seeds) + (" (the trial failed)" if failed else "")
        writer.add_text("status", line, global_step=step)
        if not failed:  # tensorboardX writes only a successful end; a failed one stays open
            writer.file_writer.add_summary(hparams({}, {})[2])
        writer.flush()


class NoTensorBoard(TBXLoggerCallback):
    """Given to Tune for `loggers: []` (or one without tensorboard): Tune adds its own
    TensorBoard files, keyed by report count, unless a TensorBoard logger is in the list."""

    def __init__(self):  # no tensorboardX writer is needed
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


# --- MLflow -----------------------------------------------------------------------------------


class MLflowLogger(_TrialView, MLflowLoggerCallback):
    """An MLflow run per trial, in the experiment named after the sweep: metrics with their
    GAN step, the configuration as params, sample pictures as images, statuses as tags. The
    store is MLFLOW_TRACKING_URI, else an SQLite file in the run directory."""

    def __init__(self, spec: SweepSpec, run_dir: Path):
        given = os.environ.get("MLFLOW_TRACKING_URI")
        here = Path(run_dir).resolve()
        self.artifact_location = None if given else (here / MLFLOW_ARTIFACTS).as_uri()
        super().__init__(
            tracking_uri=given or f"sqlite:///{here / MLFLOW_DB}",
            experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or spec.name,
            tags={"sweep": spec.name},
        )
        self._view(spec, run_dir)

    def setup(self, *args, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        if self.artifact_location is not None:  # ganlab's own store: its artifacts beside it
            own = MlflowClient(self.tracking_uri)
            if own.get_experiment_by_name(self.experiment_name) is None:
                own.create_experiment(self.experiment_name, self.artifact_location)
        super().setup(*args, **kwargs)
        self.client = MlflowClient()  # at the tracking URI Ray's setup set

    def _start(self, trial) -> None:
        from mlflow.entities import Param

        runs = rayprivate.mlflow_runs(self)
        if trial in runs:
            return
        tags = {**self.tags, "trial_id": trial.trial_id}
        run = self.mlflow_util.start_run(tags=tags, run_name=trial.trial_id)
        runs[trial] = run.info.run_id
        params = [Param(k, str(v)) for k, v in self._hyperparameters(trial).items()]
        self.client.log_batch(run.info.run_id, params=params)

    def _run_id(self, trial) -> str:
        runs = rayprivate.mlflow_runs(self)
        if trial not in runs:
            self.log_trial_start(trial)
        return runs[trial]

    def _scalars(self, trial, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(
                self._run_id(trial), metrics=metrics[start : start + MLFLOW_BATCH]
            )

    def _pictures(self, trial, step: int, shown: dict[str, np.ndarray]) -> None:
        for key, pixels in shown.items():
            self.client.log_image(self._run_id(trial), pixels, key=key, step=step)

    def _end(self, trial, step: int, seeds: dict[int, str], failed: bool) -> None:
        run_id = self._run_id(trial)
        for seed, status in seeds.items():
            self.client.set_tag(run_id, f"seed_{seed}/status", status)
        self.client.set_tag(run_id, "status", _status_line(seeds))


# --- Weights & Biases -------------------------------------------------------------------------

SUMMARY = "ganlab_summary"  # a result key the logging actor writes to the run's summary
WANDB_FINISH_S = 60.0  # how long a trial's end waits for its W&B run to finish writing


class _SummaryActor(rayprivate.wandb_logging_actor()):
    """Ray's W&B logging actor, which also writes a result's `SUMMARY` to the run's summary."""

    def _handle_result(self, result: dict) -> tuple[dict, dict]:
        summary = result.pop(SUMMARY, None)
        if summary:
            self._wandb.run.summary.update(summary)
        return super()._handle_result(result)


class WandbLogger(_TrialView, WandbLoggerCallback):
    """A W&B run per trial (project WANDB_PROJECT, else the sweep's name; grouped by sweep):
    history at the GAN step (W&B's step; Ray's actor takes it from `training_iteration`, so that
    series is the GAN step too), the configuration as config, pictures as images, statuses in the
    summary. WANDB_MODE=offline keeps the run in the trial's directory, under `wandb/`."""

    _logger_actor_cls = _SummaryActor

    def __init__(self, spec: SweepSpec, run_dir: Path):
        super().__init__(
            project=os.environ.get("WANDB_PROJECT") or spec.name,
            group=os.environ.get("WANDB_RUN_GROUP") or spec.name,
        )
        self._view(spec, run_dir)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)  # the status, then Ray's: the actor is told to end
        # Tune copies the trials' directories to the storage for the last time before its
        # callbacks' `on_experiment_end`, where Ray's callback waits for its actors: a run
        # still writing then would reach the storage cut short.
        running = rayprivate.wandb_run_future(self, trial)
        if running is not None:
            ray.wait([running], timeout=WANDB_FINISH_S)

    def _log(self, trial, step: int, values: dict[str, Any]) -> None:
        result = {TRAINING_ITERATION: step, **values}
        WandbLoggerCallback.log_trial_result(self, step, trial, result)

    def _scalars(self, trial, step: int, values: dict[str, float]) -> None:
        self._log(trial, step, {**values, "config": self._hyperparameters(trial)})

    def _pictures(self, trial, step: int, shown: dict[str, np.ndarray]) -> None:
        self._log(trial, step, shown)  # Ray's callback makes a wandb.Image of an (H, W, 3) array

    def _end(self, trial, step: int, seeds: dict[int, str], failed: bool) -> None:
        summary = {f"seed_{seed}/status": status for seed, status in seeds.items()}
        self._log(trial, step, {SUMMARY: {**summary, "status": _status_line(seeds)}})


def callbacks(spec: SweepSpec, run_dir: Path) -> list[Callback]:
    """The sweep's trackers, as Tune callbacks."""
    made = [trackers.TRACKERS[name].make(spec, run_dir) for name in spec.loggers]
    if "tensorboard" not in spec.loggers:
        made.append(NoTensorBoard())
    return made
