"""The typed configuration of one trial: one GAN configuration trained over several seeds.

`TrialConfig.from_dict` is the only way a dict becomes a config: unknown keys, wrong types and
names missing from a registry fail at once, naming the field and what is allowed.
"""

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ganlab.metrics import METRICS, MODES

if TYPE_CHECKING:
    from ganlab.models import ArchConfig

DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("ieee", "tf32")  # float32 matmuls and convolutions on a card (`devices.numerics`)
EXECUTIONS = ("auto", "batched", "sequential")  # how a trial's seeds train (`ganlab.execution`)


class ConfigError(ValueError):
    """A configuration value that is not allowed: `field` names the offending key, `message`
    says what is wrong with it and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # Ray pickles a worker's error: rebuilt from both arguments
        return type(self), (self.field, self.message)


@dataclass(frozen=True)
class TrialConfig:
    # data
    dataset: str = "ring8"  # a name in ganlab.data.DATASETS
    data_dir: str = "data"  # where the torchvision datasets are read from
    download: bool = False  # let torchvision download missing data (where the network allows)
    # architecture
    arch: str = "mlp"  # a name in ganlab.models.ARCHITECTURES
    width: int = 128  # hidden units (mlp) or base channels (dcgan, resnet)
    depth: int = 3  # hidden layers of the mlp; ignored by convolutional architectures
    z_dim: int = 32
    spectral_norm: bool = False  # on D
    norm_g: str = "none"  # a name in ganlab.models.NORMS
    norm_d: str = "none"
    pack: int = 1  # PacGAN: D judges `pack` samples at once
    # objective
    loss: str = "non-saturating"  # a name in ganlab.losses.LOSSES
    clip: float = 0.0  # weight clipping of D, only with loss `wasserstein`; 0 is off
    penalty: str = "none"  # a name in ganlab.penalties.PENALTIES, or a sum such as r1+r2
    penalty_weight: float = 10.0
    # optimisation: Adam with separate learning rates (TTUR)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # D updates per G update
    batch_size: int = 64
    steps: int = 2000  # G updates
    ema: float = 0.0  # decay of an exponential moving average of G's weights; 0 is off
    # evaluation
    eval_every: int = 500
    n_eval: int | None = None  # fake samples per evaluation; None takes the dataset's protocol
    # Fake samples per evaluation before the last (ASHA's rungs, the curves); None: n_eval. The
    # last evaluation always uses n_eval; each report records its own count in its protocol.
    n_eval_rung: int | None = None
    metric: str = "fid"  # the metric the robust objective is built from
    mode: str = "min"
    # stability
    seeds: tuple[int, ...] = (0, 1, 2)
    max_grad_norm: float = 1e6  # a gradient norm above this marks the seed diverged
    device: str = "auto"  # cpu, cuda, or auto: cuda when the trial was given a GPU
    # Training float32 on a card: ieee (the same numbers on every card) or tf32 (faster on
    # Ampere and later, 10-bit mantissas in matmuls and convolutions). CPUs compute ieee.
    fp32_precision: str = "ieee"
    # cuDNN's deterministic algorithms and torch's deterministic mode: off, as its cost on a card
    # is unmeasured and a sweep's findings rest on seeds, not on bitwise repeats (README: GPUs).
    deterministic: bool = False
    sample_keep: int = 64  # samples of each seed kept from the last evaluation, for reports
    # How the seeds train: `batched` (one stacked model, a constant number of ops per step),
    # `sequential` (seed after seed), or `auto`: the rule of `ganlab.execution` for the device
    # and architecture. Either way each seed's numbers are the same, up to float rounding.
    execution: str = "auto"
    # Capture the batched step in a CUDA graph and replay it: off until measured on a card.
    cuda_graphs: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        """Build and validate; raises ConfigError naming the first bad field."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(key, f"unknown field; allowed: {', '.join(known)}")
        coerced = {key: _coerce(key, value, known[key].type) for key, value in values.items()}
        config = cls(**coerced)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["seeds"] = list(self.seeds)
        return values

    def replace(self, **changes: Any) -> "TrialConfig":
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    @property
    def arch_config(self) -> "ArchConfig":
        """The architecture fields, as `ganlab.models.build` takes them."""
        from ganlab.models import ArchConfig

        fields = dataclasses.fields(ArchConfig)
        return ArchConfig(**{f.name: getattr(self, f.name) for f in fields})

    def validate(self) -> None:
        names = named_choices()
        for name in REGISTRY_FIELDS:
            _check_choice(name, getattr(self, name), sorted(names[name]))
        self._validate_penalty()
        _check_choice("mode", self.mode, MODES)
        self._validate_against_data()
        self._validate_direction()
        _check_choice("device", self.device, DEVICES)
        _check_choice("fp32_precision", self.fp32_precision, PRECISIONS)
        _check_choice("execution", self.execution, EXECUTIONS)
        self._validate_cuda_graphs()
        for name in ("width", "depth", "z_dim", "pack", "d_steps", "batch_size", "steps",
                     "eval_every", "sample_keep"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.clip < 0 or (self.clip > 0 and self.loss != "wasserstein"):
            raise ConfigError("clip", "weight clipping is an option of loss `wasserstein` only")
        if self.penalty_weight < 0:
            raise ConfigError("penalty_weight", f"must be >= 0, got {self.penalty_weight}")
        if self.batch_size % self.pack:
            raise ConfigError("pack", f"must divide batch_size ({self.batch_size})")
        if self.depth > MAX_DEPTH:
            raise ConfigError("depth", f"must be at most {MAX_DEPTH:,} hidden layers, got "
                              f"{self.depth:,}")  # fmt: skip
        check_seeds(self.seeds)
        if self.n_eval is not None and self.n_eval < 10:
            raise ConfigError("n_eval", f"must be at least 10 (k-NN metrics), got {self.n_eval}")
        self._validate_rung_count()

    def _validate_penalty(self) -> None:
        from ganlab.batched import batchable
        from ganlab.penalties import PENALTIES, parse

        try:
            parse(self.penalty, PENALTIES)
        except ValueError as error:
            raise ConfigError("penalty", str(error)) from None
        if self.execution == "batched" and not batchable(self):
            raise ConfigError("execution", f"'batched' needs a batched form of every penalty "
                              f"of {self.penalty!r} (ganlab.register.penalty's `batched`); "
                              "use execution auto or sequential")  # fmt: skip

    def _validate_rung_count(self) -> None:
        if self.n_eval_rung is None:
            return
        from ganlab.data import DATASETS

        final = DATASETS[self.dataset].n_eval if self.n_eval is None else self.n_eval
        if not 10 <= self.n_eval_rung <= final:
            raise ConfigError("n_eval_rung", f"must be at least 10 (k-NN metrics) and at most "
                              f"n_eval ({final}), got {self.n_eval_rung}")  # fmt: skip

    def _validate_cuda_graphs(self) -> None:
        if not self.cuda_graphs:
            return
        import torch

        if self.device == "cpu" or not torch.cuda.is_available():
            where = "device 'cpu'" if self.device == "cpu" else "this machine, which has no CUDA"
            raise ConfigError("cuda_graphs", f"CUDA graphs need a CUDA device, not {where}")
        if self.execution == "sequential":
            raise ConfigError("cuda_graphs", "CUDA graphs capture the batched step; execution "
                              "'sequential' has none")  # fmt: skip

    def _validate_direction(self) -> None:
        from ganlab.objective import check_direction

        problem = check_direction(self.metric, self.mode)
        if problem:
            raise ConfigError("mode", problem)

    def _validate_against_data(self) -> None:
        from ganlab.data import DATASETS
        from ganlab.models import check

        source = DATASETS[self.dataset]
        try:
            check(self.arch, source.shape)
        except ValueError as error:
            raise ConfigError("arch", f"{error} (dataset {self.dataset!r})") from None
        if METRICS[self.metric].needs_modes and not source.modes:
            raise ConfigError("metric", f"{self.metric!r} needs a dataset with modes; "
                              f"{self.dataset!r} has none")  # fmt: skip
        if self.metric == "is" and source.extractor == "raw":
            raise ConfigError("metric", f"'is' needs class probabilities; {self.dataset!r} is 2-D")


REGISTRY_FIELDS = ("dataset", "arch", "norm_g", "norm_d", "loss", "metric")
"""The fields that take a registry's name as it is (`penalty` also takes sums of names)."""


def named_choices() -> dict[str, list[str]]:
    """Every field that takes a name -> the names, in their registry's (or list's) order: what
    `validate` checks and `ganlab.fieldhelp` lists. The registries are imported here, not with
    this module: they import torch (seconds), which readers of the tables never need."""
    from ganlab.data import DATASETS
    from ganlab.losses import LOSSES
    from ganlab.models import ARCHITECTURES, NORMS
    from ganlab.penalties import PENALTIES

    return {
        "dataset": list(DATASETS), "arch": list(ARCHITECTURES), "norm_g": list(NORMS),
        "norm_d": list(NORMS), "loss": list(LOSSES), "penalty": list(PENALTIES),
        "metric": list(METRICS), "mode": list(MODES), "device": list(DEVICES),
        "fp32_precision": list(PRECISIONS), "execution": list(EXECUTIONS),
    }  # fmt: skip


def _check_choice(name: str, value: Any, allowed: typing.Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of: {', '.join(allowed)}")


# Hidden layers of an mlp at most: each is a Python module (built once more, on the meta device,
# to estimate a trial's memory), and no GAN study goes near a thousand.
MAX_DEPTH = 1000
# Seeds of one trial at most. They train in turn (or stacked) at every step and every report
# carries all of them (each report line grows by about 1 kB a seed), while the objective is their
# median, which a few dozen seeds already pin down: more belong in more trials.
MAX_SEEDS = 1000


def seed_limit() -> int:
    """One past the largest seed: a seed's evaluation stream is seeded with seed +
    `trial.EVAL_SEED_OFFSET`, and both must stay below 2**63, what the tables' int64 columns and
    every generator take."""
    from ganlab.trial import EVAL_SEED_OFFSET

    return 2**63 - EVAL_SEED_OFFSET


def check_seeds(seeds: typing.Sequence[int]) -> None:
    """Raise ConfigError unless `seeds` are 1 to MAX_SEEDS distinct integers in [0, seed_limit)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", "must be a non-empty list of distinct integers")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError("seeds", f"at most {MAX_SEEDS:,} seeds a trial, got {len(seeds):,}; "
                          "run more trials instead")  # fmt: skip
    limit = seed_limit()
    for seed in seeds:
        if not 0 <= seed < limit:
            raise ConfigError("seeds", f"each seed must be in [0, {limit}) (2**63 less the "
                              f"evaluation stream's offset), got {seed}")  # fmt: skip


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check `value` against the field's type; ints become floats where a float is wanted."""
    return coerce(name, value, typing.get_type_hints(TrialConfig)[name])


def coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as type `hint` (bool, int, float, str, tuple[int, ...], or a union of them with
    None), by the trial fields' rule: a bool is no number, an int is a float where a float is
    wanted. Raises ConfigError naming `name`. Sweep files read their own fields with it too."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(name, "may not be empty")
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is tuple:
            if isinstance(value, list | tuple) and all(_is_int(v) for v in value):
                return tuple(int(v) for v in value)
            continue
        if option is bool and isinstance(value, bool):
            return value
        if option is int and _is_int(value):
            return int(value)
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > _FLOAT_MAX:  # float() would raise
                raise ConfigError(name, f"beyond the largest float ({_FLOAT_MAX:.3g})")
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(name, f"expected {expected}, got {value!r}")


_FLOAT_MAX = sys.float_info.max


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
