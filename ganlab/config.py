"""The typed configuration of one trial: one GAN configuration trained over several seeds.

`TrialConfig.from_dict` is the only way a dict becomes a config: unknown keys, wrong types and
names missing from a registry fail at once, naming the field and what is allowed.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ganlab.metrics import METRICS, MODES

if TYPE_CHECKING:
    from ganlab.models import ArchConfig

DEVICES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """A configuration value that is not allowed: `field` names the offending key, `message`
    says what is wrong with it and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
    penalty: str = "none"  # a name in ganlab.penalties.PENALTIES
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
    metric: str = "fid"  # the metric the robust objective is built from
    mode: str = "min"
    # stability
    seeds: tuple[int, ...] = (0, 1, 2)
    max_grad_norm: float = 1e6  # a gradient norm above this marks the seed diverged
    device: str = "auto"  # cpu, cuda, or auto: cuda when the trial was given a GPU
    sample_keep: int = 64  # samples of each seed kept from the last evaluation, for reports

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
        # The registries are imported here, not with this module: they import torch (seconds),
        # which readers of the results tables, and `ganlab results`, never need.
        from ganlab.data import DATASETS
        from ganlab.losses import LOSSES
        from ganlab.models import ARCHITECTURES, NORMS
        from ganlab.penalties import PENALTIES

        for name, registry in [
            ("dataset", DATASETS), ("arch", ARCHITECTURES), ("norm_g", NORMS),
            ("norm_d", NORMS), ("loss", LOSSES), ("penalty", PENALTIES),
            ("metric", METRICS),
        ]:  # fmt: skip
            _check_choice(name, getattr(self, name), sorted(registry))
        _check_choice("mode", self.mode, MODES)
        self._validate_against_data()
        self._validate_direction()
        _check_choice("device", self.device, DEVICES)
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
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", "must be a non-empty list of distinct integers")
        if self.n_eval is not None and self.n_eval < 10:
            raise ConfigError("n_eval", f"must be at least 10 (k-NN metrics), got {self.n_eval}")

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


def _check_choice(name: str, value: Any, allowed: typing.Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of: {', '.join(allowed)}")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check `value` against the field's type; ints become floats where a float is wanted."""
    hint = typing.get_type_hints(TrialConfig)[name]
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
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(name, f"expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
