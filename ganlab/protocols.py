"""A sweep's evaluation protocol: made once by its driver, then shipped to every trial.

Every trial of a sweep, on every node, must measure with the same extractor against the same
real statistics, or a number from one node means something else than the same number from
another (training and linear algebra round differently on different CPUs and cards). So the
driver makes the evaluation assets (`ganlab.metrics.assets`) of each (data set, n_fake) the sweep
can run (each `n_eval`, and `base.n_eval_rung` where it is set), on the CPU, before Ray starts a
trial; keeps them in the run directory (`eval-protocol/<data set>-n<n_fake>.pt`, copied to a
remote storage with the tables), where `--resume` reads them back instead of making them anew;
and hands them to the trials through Ray's object store (`tune.with_parameters`), so no node
computes or caches any of it.

`n_eval_rung` is one count for the whole sweep, never searched: every evaluation before the
last uses it, the last (at `steps`) uses `n_eval`. `ganlab.results.ranking` compares finished
trials by their last evaluation and stopped ones at the step they stopped at, so the numbers it
compares were always measured with the same count.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganlab import rundir, storage
from ganlab.config import TrialConfig
from ganlab.data import DATASETS
from ganlab.spec import SpecError, SweepSpec

if TYPE_CHECKING:
    from ganlab.metrics.assets import EvalAssets

Shipped = dict[str, dict[str, Any]]
"""key (`key_of`) -> `EvalAssets.to_state()`: what every trial is handed."""

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
MISSING = "missing"  # a shipped entry the driver could not make: its data are not there


def keys(spec: SweepSpec) -> list[tuple[str, int]]:
    """Every (data set, n_fake) a trial of the sweep can evaluate with: each `n_eval`, and the
    `base.n_eval_rung` of the evaluations before the last where it differs. Raises SpecError
    where `n_eval` is searched over a range or `n_eval_rung` is searched at all (the protocol's
    sample counts are not hyperparameters)."""
    if any(p.name == "n_eval_rung" for p in spec.search):
        raise SpecError(spec.path, "search.n_eval_rung", "the sample count of the evaluations "
                        "before the last is part of the protocol, not a hyperparameter: fix it "
                        "in `base`, so that every trial stopped at a step was measured with "
                        "the same count as the others stopped there")  # fmt: skip
    (rung,) = _values(spec, "n_eval_rung")
    found = []
    for dataset in _values(spec, "dataset"):
        for n_eval in _values(spec, "n_eval"):
            n_fake = DATASETS[dataset].n_eval if n_eval is None else int(n_eval)
            for count in (n_fake, n_fake if rung is None else int(rung)):
                if (dataset, count) not in found:
                    found.append((dataset, count))
    return found


def _values(spec: SweepSpec, name: str) -> list[Any]:
    param = next((p for p in spec.search if p.name == name), None)
    if param is None:
        return [spec.base[name] if name in spec.base else _DEFAULTS[name]]
    if param.kind != "choice":
        raise SpecError(spec.path, f"search.{name}", "the evaluation's sample count is part of "
                        "the protocol: give a `choice` of counts (or fix it in `base`), not a "
                        "range, so every trial's numbers can be compared")  # fmt: skip
    return list(param.values)


def key_of(config: TrialConfig) -> str:
    """The name of the assets `config` evaluates with at its last evaluation: its protocol
    file's name."""
    return rundir.protocol_file(config.dataset, _final_count(config))


def _final_count(config: TrialConfig) -> int:
    return DATASETS[config.dataset].n_eval if config.n_eval is None else config.n_eval


def prepare(spec: SweepSpec, run_dir: Path, echo: Callable[[str], None] = print) -> Shipped:
    """The sweep's evaluation assets, read from the run directory (or its storage) or made
    there, on the CPU, once."""
    from ganlab.metrics.assets import EvalAssets

    shipped: Shipped = {}
    for dataset, n_fake in keys(spec):
        name = rundir.protocol_file(dataset, n_fake)
        path = run_dir / name
        if spec.is_remote_storage:
            storage.pull(spec.storage_uri, run_dir, [name])
        if path.exists():
            assets = EvalAssets.load(path)
            echo(f"evaluation protocol of {dataset} (n_fake {n_fake}): read from {path}")
        else:
            echo(f"evaluation protocol of {dataset} (n_fake {n_fake}): making its reference "
                 "statistics on the CPU, once for every trial")  # fmt: skip
            try:
                assets = _build(spec, dataset, n_fake)
            except FileNotFoundError as missing:  # its trials fail with this; the others run
                echo(f"  cannot be made here: {missing}; its trials will fail")
                shipped[name] = {MISSING: str(missing)}
                continue
            rundir.atomic_write(path, assets.save)
            if spec.is_remote_storage:
                storage.push(run_dir, spec.storage_uri, [name])
        echo(f"  extractor {assets.extractor} {assets.weights or '(none)'}, reference "
             f"{assets.sha[:16]}, FID floor {assets.reference.floor:.6g}")  # fmt: skip
        shipped[name] = assets.to_state()
    return shipped


def _build(spec: SweepSpec, dataset: str, n_fake: int):
    from ganlab.data import load
    from ganlab.metrics.assets import build_assets

    place = {k: spec.base[k] if k in spec.base else _DEFAULTS[k] for k in ("data_dir", "download")}
    return build_assets(load(dataset, place["data_dir"], place["download"]), n_fake)


def assets_for(config: TrialConfig, shipped: Shipped) -> list["EvalAssets"]:
    """The `EvalAssets` a trial of `config` evaluates with, from what the driver shipped: the
    last evaluation's, then, where `n_eval_rung` differs, the earlier evaluations'."""
    from ganlab.metrics.assets import EvalAssets

    final = _final_count(config)
    counts = [final] if config.n_eval_rung in (None, final) else [final, config.n_eval_rung]
    found = []
    for n_fake in counts:
        state = shipped[rundir.protocol_file(config.dataset, n_fake)]
        if MISSING in state:
            raise FileNotFoundError(f"{state[MISSING]} (on the sweep's driver, which makes the "
                                    "evaluation protocol every trial uses)")  # fmt: skip
        found.append(EvalAssets.from_state(state))
    return found
