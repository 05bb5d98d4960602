"""What the Optuna study is told of a Tune trial: optuna-dashboard, TPE and the tables agree.

Ray's `OptunaSearch` reports a trial's objective at Tune's iteration count and tells a trial
stopped by ASHA as COMPLETE, its value at the rung taken for a final one. ganlab's searcher
(`sweep.JournalSearch`) tells Optuna through these functions instead:

- every evaluation is an intermediate value at its GAN step (`EvalReport.step`), the value the
  metrics table holds as `objective` at that step (so a resumed trial's repeated steps, and
  Tune's repeat of the last result, are told once);
- how a trial ended is read from its last report, not from the scheduler: a trial that ends
  without an error on a report that is not its `last` (neither every step trained nor every seed
  diverged) was stopped early (by ASHA, or the sweep's time budget) and is PRUNED, and Optuna
  gives a pruned trial its last intermediate value as its value. This holds whichever scheduler
  or stopper ended it, and keeps a trial whose seeds all diverged early COMPLETE (it ended: its
  objective counts each seed as the worst value). A trial that ends in an error is FAIL;
- user attributes: `trial_id` (Tune's, the tables' `trial_id`), `config_id` (the tables'),
  `status` (`running`, `completed`, `pruned`, `error`) and `seed_status` (each seed's status in
  the trials table, `collect.seed_status`).

`sweep` hands these functions the Optuna trial and study of Ray's searcher; they speak to Optuna
only (its one private name, a frozen trial's live trial, through `ganlab.rayprivate`).
"""

from typing import Any

import optuna

from ganlab import rayprivate
from ganlab.collect import seed_status
from ganlab.reports import EvalReport
from ganlab.results import config_hash

State = optuna.trial.TrialState
DELIMITER = "/"  # Tune hands searchers its results flattened, nested keys joined by "/"


def nested(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Tune result as `sweep.train` reported it: Tune flattens nested dicts (`seeds/0/fid`)
    before a searcher sees them. None where there is none, or it holds no report of ours."""
    if not result:
        return None
    out: dict[str, Any] = {}
    for key, value in result.items():
        *parents, name = key.split(DELIMITER)
        place = out
        for parent in parents:
            place = place.setdefault(parent, {})
        place[name] = value
    return out if "seeds" in out else None


def report(
    trial: optuna.Trial, tune_id: str, result: dict[str, Any], told: int | None
) -> int | None:
    """Tell `trial` the evaluation in `result` (a Tune result of `sweep.train`, flat or nested)
    at its GAN step, unless a step up to `told` (the last step told, None for none) was told
    already; returns the last step told."""
    result = nested(result)
    if result is None:  # a result without a report of ours: nothing to tell
        return told
    evaluation = EvalReport.from_dict(result)
    if told is None:  # the first report: name the trial as the tables do
        config = result["trial_config"]
        trial.set_user_attr("trial_id", tune_id)
        trial.set_user_attr("config_id", config_hash(config))
        trial.set_user_attr("status", "running")
    if told is not None and evaluation.step <= told:
        return told
    trial.report(evaluation.objective, evaluation.step)
    return evaluation.step


def outcome(result: dict[str, Any] | None, error: bool) -> tuple[State, str]:
    """The Optuna state and ganlab status of a trial that ended with `result` as its last."""
    if error:
        return State.FAIL, "error"
    if result is None:  # stopped before its first report
        return State.PRUNED, "pruned"
    if EvalReport.from_dict(result).last:
        return State.COMPLETE, "completed"
    return State.PRUNED, "pruned"


def finish(
    study: optuna.Study, trial: optuna.Trial, result: dict[str, Any] | None, error: bool
) -> State:
    """Tell the study how `trial` ended (its last `result`, flat or nested, already reported),
    with its seeds' statuses; returns the state told."""
    result = nested(result)
    state, status = outcome(result, error)
    trial.set_user_attr("status", status)
    if result is not None:
        trial.set_user_attr("seed_status", seed_statuses(result, error))
    value = EvalReport.from_dict(result).objective if state == State.COMPLETE else None
    _tell(study, trial, value, state)
    return state


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, state: State) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as error:
        # GridSampler calls `study.stop()` once its last point is told, which raises outside
        # `study.optimize`; Optuna has stored the trial's state by then.
        if "Study.stop" not in str(error):
            raise


def seed_statuses(result: dict[str, Any], error: bool) -> dict[str, str]:
    """Each seed's status in the trials table, from the trial's last report."""
    last = EvalReport.from_dict(result)
    steps = result["trial_config"]["steps"]
    return {str(seed): seed_status(s, last, error, steps) for seed, s in last.seeds.items()}


def prune_unfinished(study: optuna.Study) -> list[int]:
    """Close the trials a sweep left RUNNING (stopped by its time budget) as PRUNED, each with
    its last intermediate value; returns their numbers."""
    closed = []
    for frozen in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        trial = rayprivate.optuna_trial(study, frozen)
        trial.set_user_attr("status", "pruned")
        _tell(study, trial, None, State.PRUNED)
        closed.append(frozen.number)
    return closed
