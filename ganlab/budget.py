"""A trial's memory, estimated from its configuration before anything starts.

A trial that cannot fit is refused with exit code 2, naming the estimate and the limit, instead
of growing until the kernel kills it (`width: 100000000` reached 13 GB before it was). The
estimate counts, in bytes, the tensors that grow with the configuration (float32 unless said):

    per seed     16 (P_G + P_D)       weights, gradients and Adam's two moments of G and D
               + 4 P_G                with `ema`: G's averaged copy
               + 4 (B_G + B_D)        buffers: BatchNorm statistics, spectral norm's vectors
               + 4 keep S             the samples kept for the report, keep = min(sample_keep, n)
               + batched: 12 (P_G + P_D) + 4 P_G with `ema` + 4 (B_G + B_D)
                                      the stacked copy `batched` execution trains (weights,
                                      gradients, moments), beside the seeds' own weights and
                                      moments, which keep no gradients then
    × seeds                           each seed has networks and optimisers of its own
  + one step     4 batch (z + S + A_G + (2 + 2 penalty) A_D)
                                      noise, a real batch, G's graph and D's graphs on the real
                                      and the fake batch (a gradient penalty's double backward
                                      holds D's twice more); × seeds when batched, where all
                                      seeds step at once, and one at a time when sequential
  + evaluation   n (4 S + 24 F)       n = n_eval samples; in float64 their features, PRDC's copy
                                      of them and the real side's features

P and B are G's and D's parameter and buffer elements and A their activation elements per
sample (the outputs of every leaf module), all counted by building them on PyTorch's `meta`
device (shapes, no memory) and passing one batch through. S is the elements of a sample, z the
noise dimension, F the extractor's feature dimension (the sample's own for 2-D data, 128 for
the classifier, 2048 for Inception). Whether seeds train batched is `ganlab.execution`'s rule
for the device the trial runs on. Left out: the process itself (Python and torch, some
hundreds of MB), the data set, the extractor's weights and the metrics' fixed-size blocks, so
the estimate is low rather than high and a refusal is never in doubt.

The limits: `CEILING` for any trial, anywhere (`spec` checks a sweep file against it as
written); on this machine, its memory (the smaller of RAM and its cgroup's limit) for `ganlab
trial` or a card's for a trial on one, and for a local sweep that memory shared among the trials
that run at once, or the share of a card `resources.gpu` gives. On a cluster (`--address`) the
nodes are not known before they start, so only the ceiling applies.
"""

import functools
import itertools
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ganlab.config import ConfigError, TrialConfig

if TYPE_CHECKING:
    from ganlab.models import ArchConfig
    from ganlab.spec import SweepSpec

CEILING = 2**40
"""1 TiB: more than any card holds (the largest hold under 200 GB) and more than nearly any
machine; a trial estimated above it is a typo (`width: 1e8`), not a GAN."""
FLOAT, DOUBLE = 4, 8  # bytes: training is float32, the metrics' features float64
INCEPTION_FEATURES = 2048  # pool3
MAX_COMBINATIONS = 20_000  # searched memory-relevant values tried for the largest trial
MONOTONE = ("width", "depth", "z_dim", "batch_size", "n_eval", "sample_keep", "ema")
"""Fields whose larger values never need less memory: with many combinations, only the largest."""
MEMORY_FIELDS = (*MONOTONE, "dataset", "arch", "norm_g", "norm_d", "spectral_norm", "pack",
                 "penalty")  # fmt: skip
CULPRITS = {
    "networks": ("width", "depth", "z_dim", "pack"),
    "step": ("batch_size", "width", "depth", "z_dim", "pack"),
    "evaluation": ("n_eval",),
}  # the fields each part grows with, named in a refusal by how far they exceed their defaults
DEFAULTS = {name: getattr(TrialConfig, name) for name in ("width", "depth", "z_dim", "pack",
                                                          "batch_size")}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """Bytes a trial holds at its peak; `per_seed` None where torch cannot even index G and D."""

    per_seed: int | None
    seeds: int
    step: int
    evaluation: int
    ema: bool = False

    @property
    def networks(self) -> float:
        return math.inf if self.per_seed is None else self.per_seed * self.seeds

    @property
    def total(self) -> float:
        return self.networks + self.step + self.evaluation

    def describe(self, config: TrialConfig, n: int) -> str:
        """The parts, for a message (of a trial whose networks can be built)."""
        ema = ", EMA" if self.ema else ""
        return (f"networks {size(self.networks)}: {self.seeds} seeds × {size(self.per_seed)} of "
                f"weights, gradients, Adam moments{ema}; a training step "
                f"{size(self.step)} at batch_size {config.batch_size}; an evaluation "
                f"{size(self.evaluation)} of {n:,} samples")  # fmt: skip


class Problem(NamedTuple):
    """Why a trial cannot run: the field most to blame, and a message naming estimate and limit."""

    field: str
    message: str


class _Networks(NamedTuple):
    params_g: int
    params_d: int
    buffers: int
    acts_g: float  # activation elements per sample
    acts_d: float


def estimate(config: TrialConfig, device: str = "cpu") -> Estimate:
    """What `config` holds at its peak on a `device` of that type (the formula in the module's
    docstring)."""
    import torch

    from ganlab import execution
    from ganlab.data import DATASETS
    from ganlab.penalties import PENALTIES, parse

    source = DATASETS[config.dataset]
    sample = math.prod(source.shape)
    n = source.n_eval if config.n_eval is None else config.n_eval
    nets = _networks(config.arch_config, source.shape)
    features = sample if source.extractor == "raw" else _feature_dim(source.extractor)
    evaluation = n * (FLOAT * sample + 3 * DOUBLE * features)
    ema = config.ema > 0
    if nets is None:
        return Estimate(None, len(config.seeds), 0, evaluation, ema)
    batched = execution.choose(config, torch.device(device)) == "batched"
    params = nets.params_g + nets.params_d
    stacked = 3 * params + ema * nets.params_g + nets.buffers if batched else 0
    per_seed = FLOAT * (4 * params + ema * nets.params_g + nets.buffers + stacked
                        + min(config.sample_keep, n) * sample)  # fmt: skip
    terms = [name for _, name in parse(config.penalty, PENALTIES) if name != "none"]
    d_graphs = 2 + 2 * len(terms)  # each penalty's graphs live until D's backward
    per_sample = config.z_dim + sample + nets.acts_g + d_graphs * nets.acts_d
    at_once = len(config.seeds) if batched else 1
    step = math.ceil(FLOAT * config.batch_size * per_sample * at_once)
    return Estimate(per_seed, len(config.seeds), step, evaluation, ema)


def _feature_dim(extractor: str) -> int:
    if extractor == "inception":
        return INCEPTION_FEATURES
    from ganlab.metrics.classifier import FEATURES

    return FEATURES


@functools.lru_cache(maxsize=256)
def _networks(arch: "ArchConfig", shape: tuple[int, ...]) -> _Networks | None:
    """G's and D's sizes, counted on the meta device; None where torch cannot index them."""
    import torch

    from ganlab import models

    try:
        with torch.device("meta"), torch.no_grad():
            g, d = models.build(arch, shape)
            batch = 2 * arch.pack  # BatchNorm wants two samples, packing `pack` per group
            acts_g = _activations(g, torch.empty(batch, arch.z_dim))
            acts_d = _activations(d, torch.empty(batch, *shape))
    except (RuntimeError, ValueError, OverflowError, MemoryError):  # sizes past int64
        return None
    buffers = sum(b.numel() for net in (g, d) for b in net.buffers())
    return _Networks(_count(g), _count(d), buffers, acts_g / batch, acts_d / batch)


def _count(net: Any) -> int:
    return sum(p.numel() for p in net.parameters())


def _activations(net: Any, x: Any) -> int:
    """Elements every leaf module of `net` outputs for `x` (what autograd keeps for backward)."""
    total = 0

    def add(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        total += output.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(add) for m in leaves]
    try:
        net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


# --- the largest trial of a sweep ---------------------------------------------------------------


def largest(spec: "SweepSpec") -> tuple[TrialConfig, Estimate]:
    """The trial of the sweep's search that needs the most memory, and its estimate: every
    combination of the searched values memory depends on (ranges at their high end), with each
    `when` applied as the search applies it."""
    base = spec.trial_config({})
    best = (base, estimate(base, _device(spec, base)))
    for params in itertools.islice(_combinations(spec), MAX_COMBINATIONS):
        try:
            config = spec.trial_config(params)
        except ConfigError:  # a combination no trial can be (pack not dividing batch_size...)
            continue
        found = estimate(config, _device(spec, config))
        if found.total > best[1].total:
            best = (config, found)
    return best


def _device(spec: "SweepSpec", config: TrialConfig) -> str:
    """The device type a trial of the sweep trains on: a card where Ray gives it one."""
    return "cuda" if spec.resources.gpu > 0 and config.device != "cpu" else "cpu"


def _combinations(spec: "SweepSpec"):
    relevant = [p for p in spec.search if p.name in MEMORY_FIELDS]
    needed = {other for p in relevant for other, _ in p.when}
    involved = [p for p in spec.search if p in relevant or p.name in needed]
    options = [list(p.values) if p.kind == "choice" else [p.values[1]] for p in involved]
    if math.prod(map(len, options)) > MAX_COMBINATIONS:
        options = [
            _at_most_largest(p.name, values) for p, values in zip(involved, options, strict=True)
        ]
    ordered = sorted(range(len(involved)), key=lambda i: bool(involved[i].when))  # as searched
    for values in itertools.product(*options):
        chosen: dict[str, Any] = {}
        for i in ordered:
            if all(chosen.get(other) in wanted for other, wanted in involved[i].when):
                chosen[involved[i].name] = values[i]
        yield chosen


def _at_most_largest(name: str, values: list[Any]) -> list[Any]:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return [max(values)] if name in MONOTONE and numbers else values


# --- limits ---------------------------------------------------------------------------------


class Limit(NamedTuple):
    bytes: float
    text: str  # what it is, for a message: "this machine's memory (7.8 GiB)"


def over_ceiling(spec: "SweepSpec") -> Problem | None:
    """Whether the sweep's largest trial needs more than any machine holds (`CEILING`)."""
    config, found = largest(spec)
    limit = Limit(CEILING, f"the {size(CEILING)} any trial may take, anywhere")
    return judge(config, found, limit)


def check_sweep(spec: "SweepSpec", address: str | None) -> Problem | None:
    """Whether the sweep's largest trial fits what a trial gets on a local Ray."""
    if address is not None:
        return None  # a cluster's nodes are not known before the autoscaler starts them
    from ganlab import rayprivate

    limit = sweep_limit(spec, rayprivate.machine_cpus())
    if limit is None:
        return None
    config, found = largest(spec)
    return judge(config, found, limit)


def check_trial(config: TrialConfig) -> Problem | None:
    """Whether `config` fits the device `ganlab trial` will train it on."""
    import torch

    from ganlab.devices import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda":
        card = torch.cuda.get_device_properties(device).total_memory
        limit = Limit(card, f"the memory of {device} ({size(card)})")
    else:
        memory = machine_memory()
        limit = Limit(memory, f"this machine's memory ({size(memory)})")
    return judge(config, estimate(config, device.type), limit)


def sweep_limit(spec: "SweepSpec", cpus: float) -> Limit | None:
    """What one trial of a local sweep may hold: a card's share where trials take GPUs (None
    where no card's memory can be read), else this machine's memory over the trials that run
    at once."""
    gpu = spec.resources.gpu
    if gpu > 0:
        card = card_memory()
        if card is None:
            return None
        share = min(gpu, 1.0)  # a trial trains on one card
        return Limit(card * share, f"the {size(card * share)} of a {size(card)} card that a "
                     f"trial of resources.gpu {gpu:g} gets")  # fmt: skip
    memory = machine_memory()
    at_once = trials_at_once(spec, cpus)
    if at_once == 1:
        return Limit(memory, f"this machine's memory ({size(memory)})")
    share = memory / at_once
    return Limit(share, f"the {size(share)} of this machine's {size(memory)} that each of the "
                 f"{at_once} trials running at once gets")  # fmt: skip


def trials_at_once(spec: "SweepSpec", cpus: float) -> int:
    """How many trials a local Ray runs together: max_concurrent, num_samples and the CPUs
    allow (at least one)."""
    at_once = min(spec.max_concurrent, spec.num_samples)
    if spec.resources.cpu > 0:
        at_once = min(at_once, int(cpus // spec.resources.cpu))
    return max(1, at_once)


def judge(config: TrialConfig, found: Estimate, limit: Limit) -> Problem | None:
    """None if `found` fits `limit`; else the Problem, naming the field most to blame."""
    if found.total <= limit.bytes:
        return None
    from ganlab.data import DATASETS

    n = DATASETS[config.dataset].n_eval if config.n_eval is None else config.n_eval
    field = culprit(config, found, limit.bytes)
    trial = f"a trial of {_settings(config, field)}"
    if found.per_seed is None:
        return Problem(field, f"{trial} cannot be built: G and D would have more elements than "
                       f"torch can index; make {field} smaller")  # fmt: skip
    return Problem(field, f"{trial} needs at least {size(found.total)} "
                   f"({found.describe(config, n)}), more than {limit.text}; make {field} "
                   "smaller")  # fmt: skip


def culprit(config: TrialConfig, found: Estimate, limit: float) -> str:
    """The field most to blame: in the largest part, the field furthest above its default; the
    seeds where one seed's networks would fit."""
    parts = {"networks": found.networks, "step": found.step, "evaluation": found.evaluation}
    part = max(parts, key=parts.__getitem__)
    if part == "networks" and found.per_seed is not None and found.per_seed <= limit:
        return "seeds"
    if part == "evaluation":
        return "n_eval"
    names = [n for n in CULPRITS[part] if n != "depth" or config.arch == "mlp"]  # mlp's only
    return max(names, key=lambda name: getattr(config, name) / DEFAULTS[name])


def _settings(config: TrialConfig, field: str) -> str:
    if field == "seeds":
        return f"{len(config.seeds)} seeds"
    return f"{field} {getattr(config, field):,}"


def location(spec: "SweepSpec", field: str) -> str:
    """Where the sweep file sets `field`: `search.<field>`, `base.<field>` or `seeds`."""
    if field == "seeds":
        return field
    searched = any(p.name == field for p in spec.search)
    return f"search.{field}" if searched else f"base.{field}"


def machine_memory() -> int:
    """This machine's memory: its RAM, or the limit of the cgroup it runs in where lower (a
    container's)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min([physical, *_cgroup_limits()])


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_limits() -> list[int]:
    limits = []
    for path in CGROUP_LIMITS:  # v2, v1; "max" (or a huge v1 number) where unlimited
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return limits


def card_memory() -> int | None:
    """The smallest card's memory on this machine, read with nvidia-smi (which, unlike torch,
    leaves no CUDA context in the sweep's driver); None where it cannot be read."""
    query = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        mebibytes = [int(line) for line in out.stdout.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(mebibytes) * 2**20 if mebibytes else None


UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size(n: float) -> str:
    """Bytes for people: `3.9 GiB`."""
    value, unit = float(min(n, 1e300)), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.3g} {UNITS[unit]}"
