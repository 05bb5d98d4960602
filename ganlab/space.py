"""The search space, apart from the trial: a define-by-run function built from the sweep file.

It lives in an importable module because OptunaSearch pickles it (a space defined in `__main__`
breaks `--resume`). It only defines: no computation takes place here.
"""

from typing import Any

from ganlab.spec import Param


class SearchSpace:
    """Define-by-run space: `space(optuna_trial)` suggests every field whose `when` holds."""

    def __init__(self, params: tuple[Param, ...]):
        # Conditional fields last, so the fields they depend on are chosen before them.
        self.params = tuple(sorted(params, key=lambda p: bool(p.when)))

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for param in self.params:
            if all(chosen.get(other) in wanted for other, wanted in param.when):
                chosen[param.name] = _suggest(trial, param)


def _suggest(trial: Any, param: Param) -> Any:
    low_high = param.values
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.values))
    if param.kind == "int":
        return trial.suggest_int(param.name, *low_high)
    return trial.suggest_float(param.name, *low_high, log=param.kind == "loguniform")
