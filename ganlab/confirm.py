"""`ganlab confirm`: a sweep's best configurations retrained on seeds the search never saw.

A configuration picked as the best of many is flattered by the seeds it was picked on (the
winner's curse). The confirmation retrains the `top` configurations the search ranked best
(`results.summarise`, the one ranking) on `n_seeds` fresh seeds, numbered after the largest seed
the search used, for the full budget (no early stopping), through the same Ray machinery as a
sweep: a sweep of its own whose Optuna study is handed exactly those configurations
(`points_to_evaluate`). It runs in `<run dir>/confirmation/<sweep name>/` with the search's
evaluation protocol (copied, never made anew: its numbers are comparable with the search's), and
`results.load` reads its rows into the run's tables with `phase` = `confirm`.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ganlab import results, rundir
from ganlab.config import TrialConfig
from ganlab.spec import BadInput, Param, Resources, Scheduler, SweepSpec


class ConfirmError(BadInput):
    """A confirmation that cannot run as asked."""


class Plan(NamedTuple):
    """What a confirmation trains: the configurations (trial fields without seeds, best first),
    their ids, and the fresh seeds."""

    configs: list[dict[str, Any]]
    config_ids: list[str]
    seeds: tuple[int, ...]


def plan(run_dir: Path, top: int, n_seeds: int) -> Plan:
    """The `top` best configurations of the search in `run_dir`, and `n_seeds` fresh seeds."""
    if top < 1 or n_seeds < 1:
        raise ConfirmError(f"{run_dir}: --top and --seeds must be at least 1 (got {top}, "
                           f"{n_seeds})")  # fmt: skip
    trials, _ = results.load(run_dir)
    trials = trials[trials.phase == results.SEARCH]
    ranked = results.summarise(trials)
    if ranked.empty:
        raise ConfirmError(f"{run_dir}: no configuration of the search has a result to rank")
    ids = list(ranked.config_id.head(top))
    configs = [config_of(trials, config_id) for config_id in ids]
    first = int(trials.seed.max()) + 1
    return Plan(configs, ids, tuple(range(first, first + n_seeds)))


def config_of(trials: pd.DataFrame, config_id: str) -> dict[str, Any]:
    """The trial fields of `config_id` (seeds aside), as a config file would write them: a field
    the table leaves blank (one that does not apply) takes its default."""
    values = results.row_fields(trials, trials[trials.config_id == config_id].iloc[0])
    config = TrialConfig.from_dict({**values, "seeds": [0]}).to_dict()  # checked as a trial's
    del config["seeds"]
    return config


def spec_of(run_dir: Path, chosen: Plan) -> SweepSpec:
    """The confirmation's sweep: the configurations' common fields fixed (where not the
    defaults), the others a choice of exactly their values, FIFO to the end, and the rest as
    the search's record says."""
    record = json.loads((run_dir / rundir.RECORD).read_text())
    fields = [k for k in chosen.configs[0] if k not in ("seeds", "metric", "mode")]
    varying = [k for k in fields if any(c[k] != chosen.configs[0][k] for c in chosen.configs)]
    defaults = TrialConfig.from_dict({"seeds": [0]}).to_dict()
    base = {k: chosen.configs[0][k] for k in fields
            if k not in varying and chosen.configs[0][k] != defaults[k]}  # fmt: skip
    search = tuple(Param(k, "choice", tuple(_unique(c[k] for c in chosen.configs)))
                   for k in varying)  # fmt: skip
    return SweepSpec(
        path=str(run_dir / rundir.RECORD),
        name=record["name"],
        base=base,
        search=search,
        seeds=chosen.seeds,
        search_alg="random",  # never asked: the study is handed every configuration first
        search_seed=record["search_seed"],
        scheduler=Scheduler(name="none"),
        num_samples=len(chosen.configs),
        max_concurrent=record["max_concurrent"],
        resources=Resources(**record["resources"]),
        metric=record["metric"],
        mode=record["mode"],
        storage=str(run_dir / rundir.CONFIRM),
        max_failures=record["max_failures"],
    )


def points(spec: SweepSpec, chosen: Plan) -> list[dict[str, Any]]:
    """Optuna's `points_to_evaluate`: each configuration's searched values, best first."""
    return [{p.name: config[p.name] for p in spec.search} for config in chosen.configs]


def run(
    run_dir: Path,
    top: int,
    n_seeds: int,
    address: str | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Confirm the search of `run_dir`; returns the confirmation's run directory."""
    from ganlab import preflight, sweep

    chosen = saved_plan(run_dir) if resume else plan(run_dir, top, n_seeds)
    spec = spec_of(run_dir, chosen)
    preflight.check(spec, resume, address)
    target = preflight.run_dir_of(spec)
    if not resume:
        _copy_protocol(run_dir, target)
        plan_file = target.parent / rundir.CONFIRM_PLAN
        rundir.atomic_write_text(plan_file, json.dumps(chosen._asdict()) + "\n")
    echo(f"confirming {len(chosen.configs)} configurations on fresh seeds "
         f"{list(chosen.seeds)}: {', '.join(chosen.config_ids)}")  # fmt: skip
    return sweep.run(spec, address=address, resume=resume, echo=echo,
                     points=points(spec, chosen))  # fmt: skip


def saved_plan(run_dir: Path) -> Plan:
    """The plan of the confirmation started in `run_dir`."""
    path = run_dir / rundir.CONFIRM / rundir.CONFIRM_PLAN
    if not path.exists():
        raise ConfirmError(f"{run_dir}: --resume: no confirmation to resume ({path} is missing)")
    saved = json.loads(path.read_text())
    return Plan(saved["configs"], saved["config_ids"], tuple(saved["seeds"]))


def _copy_protocol(run_dir: Path, target: Path) -> None:
    """The search's evaluation assets, for the confirmation to measure with the same ones."""
    source = run_dir / rundir.PROTOCOL_DIR
    if source.is_dir():
        shutil.copytree(source, target / rundir.PROTOCOL_DIR, dirs_exist_ok=True)


def _unique(values) -> list[Any]:
    return list(dict.fromkeys(values))  # first seen first
