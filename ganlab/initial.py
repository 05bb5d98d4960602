"""The step-0 evaluation, shared by the trials of a process that start from the same generators.

At step 0 a seed's generator is its initialisation: its weights follow from the seed and the
architecture (`models.build` after `torch.manual_seed(seed)`) and its evaluation noise from the
seed (`eval_rng`). Trials that share their seeds, architecture, data set, evaluation protocol,
device and execution measure exactly the same numbers at step 0, whatever their losses, rates
or penalties, which is what a sweep's trials differ in. So the first such trial of a process
keeps its step-0 reports, kept samples and evaluation streams here (a Ray worker runs trial
after trial), and the next takes them instead of generating and extracting again: on a short
trial the step-0 evaluation is a large share of its time.

The cache is bounded (`KEEP` entries, least recently used dropped) and per process.
"""

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ganlab.config import TrialConfig
from ganlab.devices import generator_state, set_generator_state
from ganlab.reports import SeedReport

if TYPE_CHECKING:
    from ganlab.trial import Seed

KEEP = 32
Entry = tuple[dict[int, SeedReport], dict[int, Tensor], dict[int, bytes]]
_CACHE: OrderedDict[tuple, Entry] = OrderedDict()


def key(
    config: TrialConfig, device: torch.device, execution: str, protocol: str, fid_inf: bool
) -> tuple:
    """What a trial's step-0 numbers depend on. Every architecture field counts, D's too: the
    builders initialise G after constructing D, so D's shape moves G's draws. `fid_inf`: whether
    FID∞ was measured (`Evaluator.measure`)."""
    arch = dataclasses.astuple(config.arch_config)
    return (config.dataset, arch, tuple(config.seeds), config.sample_keep,
            config.deterministic, str(device), execution, protocol, fid_inf)  # fmt: skip


def take(found: tuple, seeds: "Sequence[Seed]") -> tuple[dict[int, SeedReport], Any] | None:
    """The kept reports and samples under `found`, with each seed's evaluation stream set to
    where the kept evaluation left it; None if nothing is kept there."""
    entry = _CACHE.get(found)
    if entry is None:
        return None
    _CACHE.move_to_end(found)
    reports, samples, streams = entry
    for s in seeds:
        set_generator_state(s.eval_rng, streams[s.seed])
    return {seed: _copy(r) for seed, r in reports.items()}, {
        seed: t.clone() for seed, t in samples.items()
    }


def keep(found: tuple, reports: dict[int, SeedReport], samples: dict[int, Tensor],
         seeds: "Sequence[Seed]") -> None:  # fmt: skip
    """Keep a step-0 evaluation under `found`."""
    streams = {s.seed: generator_state(s.eval_rng) for s in seeds}
    kept = {seed: t.clone() for seed, t in samples.items()}
    _CACHE[found] = ({seed: _copy(r) for seed, r in reports.items()}, kept, streams)
    while len(_CACHE) > KEEP:
        _CACHE.popitem(last=False)


def clear() -> None:
    """Forget every kept evaluation (for code that must watch one being made)."""
    _CACHE.clear()


def _copy(report: SeedReport) -> SeedReport:
    return dataclasses.replace(report, metrics=dict(report.metrics), signals=dict(report.signals))
