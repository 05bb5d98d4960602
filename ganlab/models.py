"""Architectures: generator/discriminator pairs and the normalisations they use.

`build(cfg, shape)` returns (G, D) of an `ArchConfig` for data whose samples have `shape`: G
maps noise (N, z_dim) to samples (N, *shape), tanh-bounded for images (C, H, W) and linear for
flat data; D maps samples (N, *shape) to raw logits (N // pack,). `check(arch, shape)` says,
without building anything, whether an architecture can model that shape.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlab.registry import lookup, register


@dataclass(frozen=True)
class ArchConfig:
    """What an architecture is built from; a trial hands over its own (`TrialConfig.arch_config`),
    which also holds the defaults and the checks of these fields."""

    arch: str  # a name in ARCHITECTURES
    width: int  # hidden units (mlp) or base channels (dcgan, resnet)
    depth: int  # hidden layers of the mlp; convolutional architectures follow the resolution
    z_dim: int
    norm_g: str  # a name in NORMS
    norm_d: str
    spectral_norm: bool  # on D
    pack: int  # PacGAN: D judges `pack` samples at once


Shape = tuple[int, ...]
Norm = Callable[[int, bool], nn.Module]
Builder = Callable[[ArchConfig, Shape], tuple[nn.Module, nn.Module]]

IMAGE_SIDES = (8, 16, 28, 32, 64)
"""Square image sides the convolutional architectures support (digits 8, MNIST 28, CIFAR 32)."""

NORMS: dict[str, Norm] = {}
"""name -> fn(features, spatial) -> module normalising `features` channels of (N, C, H, W) maps
(spatial) or (N, C) vectors. A vector has no spatial extent, so `instance` on the MLP normalises
each sample over its own features, which is layer norm."""

ARCHITECTURES: dict[str, Builder] = {}
"""name -> fn(cfg, shape) -> (G, D). The D returned takes packed input (cfg.pack samples
concatenated along dim 1); `build` adds the packing itself and spectral norm."""

SHAPE_PROBLEMS: dict[str, Callable[[Shape], str | None]] = {}
"""name -> fn(shape) -> what the architecture needs that samples of `shape` lack, or None where
it models them: every name of ARCHITECTURES has one (`ganlab.register.architecture`)."""


def build(cfg: ArchConfig, shape: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    """(G, D) of architecture `cfg.arch` for samples of `shape`, with D's spectral norm and
    PacGAN packing as configured. Weights come from torch's global generator: seed it first."""
    shape = tuple(shape)
    check(cfg.arch, shape)
    g, d = lookup(ARCHITECTURES, cfg.arch, "architecture")(cfg, shape)
    if cfg.spectral_norm:
        for layer in [m for m in d.modules() if isinstance(m, nn.Linear | nn.Conv2d)]:
            spectral_norm(layer)
    if cfg.pack > 1:
        d = Packed(d, cfg.pack)
    return g, d


def check(arch: str, shape: Sequence[int]) -> None:
    """Raise ValueError if `arch` is unknown or cannot model samples of `shape`; the message
    names the shapes it supports. Cheap: nothing is built."""
    shape = tuple(shape)
    problem = lookup(SHAPE_PROBLEMS, arch, "architecture")(shape)
    if problem:
        raise ValueError(f"architecture {arch!r} {problem}; got data of shape {shape}")


class Packed(nn.Module):
    """PacGAN packing (Lin et al. 2018): `net` judges `pack` consecutive samples together.

    Samples 0..m-1 form the first group, m..2m-1 the second, and so on. Each group is
    concatenated along dim 1 (channels of images, features of flat data), so a batch
    (N, C, ...) reaches `net` as (N // m, m * C, ...) and D returns (N // m,) logits.
    """

    def __init__(self, net: nn.Module, pack: int):
        super().__init__()
        self.net = net
        self.pack = pack

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if n % self.pack:
            raise ValueError(f"a batch of {n} samples cannot be packed in groups of {self.pack}")
        return self.net(x.reshape(n // self.pack, self.pack * x.shape[1], *x.shape[2:]))


# --- norms -------------------------------------------------------------------------------------


@register(NORMS, "none")
def _no_norm(features: int, spatial: bool) -> nn.Module:
    return nn.Identity()


@register(NORMS, "batch")
def _batch_norm(features: int, spatial: bool) -> nn.Module:
    return nn.BatchNorm2d(features) if spatial else nn.BatchNorm1d(features)


@register(NORMS, "layer")
def _layer_norm(features: int, spatial: bool) -> nn.Module:
    # One group: statistics over each sample's (C, H, W), an affine per channel.
    return nn.GroupNorm(1, features) if spatial else nn.LayerNorm(features)


@register(NORMS, "instance")
def _instance_norm(features: int, spatial: bool) -> nn.Module:
    return nn.InstanceNorm2d(features, affine=True) if spatial else nn.LayerNorm(features)


def _bias(norm: nn.Module) -> bool:
    # Whether the layer feeding `norm` gets a bias: a norm's own learned shift replaces it, and
    # batch or instance norm would cancel it, leaving a parameter whose gradient is always zero.
    return isinstance(norm, nn.Identity)


# --- shapes ------------------------------------------------------------------------------------


def _architecture(name: str, shape_problem: Callable[[Shape], str | None]):
    # Registers a builder together with its shape check, so each name is written once.
    def add(builder: Builder) -> Builder:
        register(SHAPE_PROBLEMS, name)(shape_problem)
        return register(ARCHITECTURES, name)(builder)

    return add


def _any_shape(shape: Shape) -> str | None:
    if not shape or min(shape) < 1:
        return "needs a non-empty shape of positive sizes"
    return None


def _square_image(shape: Shape) -> str | None:
    if len(shape) == 3 and shape[0] >= 1 and shape[1] == shape[2] and shape[1] in IMAGE_SIDES:
        return None
    sides = ", ".join(map(str, IMAGE_SIDES))
    return f"needs square images (C, H, H) with H in {sides} (use 'mlp' for other data)"


def _is_image(shape: Shape) -> bool:
    return len(shape) == 3


def _base_and_doublings(side: int) -> tuple[int, int]:
    # side = base * 2**doublings with base in 4..7: 8 = 4*2, 28 = 7*2*2, 32 = 4*2*2*2.
    base, doublings = side, 0
    while base % 2 == 0 and base >= 8:
        base, doublings = base // 2, doublings + 1
    return base, doublings


def _init_weights(net: nn.Module, init: Callable[[Tensor], object]) -> None:
    for layer in net.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            init(layer.weight)


# --- mlp ---------------------------------------------------------------------------------------


def _mlp_hidden(
    d_in: int, width: int, depth: int, norm: Norm, act: Callable[[], nn.Module]
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(depth):
        n = norm(width, False)
        layers += [nn.Linear(width if i else d_in, width, bias=_bias(n)), n, act()]
    return layers


@_architecture("mlp", _any_shape)
def mlp(cfg: ArchConfig, shape: Shape) -> tuple[nn.Module, nn.Module]:
    """Fully connected G (ReLU) and D (LeakyReLU 0.2), `depth` hidden layers of `width`."""
    features = math.prod(shape)
    g = nn.Sequential(
        *_mlp_hidden(cfg.z_dim, cfg.width, cfg.depth, NORMS[cfg.norm_g], nn.ReLU),
        nn.Linear(cfg.width, features),
        nn.Unflatten(1, shape),
        nn.Tanh() if _is_image(shape) else nn.Identity(),
    )
    leaky = partial(nn.LeakyReLU, 0.2)
    d = nn.Sequential(
        nn.Flatten(),
        *_mlp_hidden(features * cfg.pack, cfg.width, cfg.depth, NORMS[cfg.norm_d], leaky),
        nn.Linear(cfg.width, 1),
        nn.Flatten(0),
    )
    return g, d


# --- dcgan -------------------------------------------------------------------------------------


def _up(
    c_in: int, c_out: int, norm: Norm, kernel: int = 4, stride: int = 2, padding: int = 1
) -> list[nn.Module]:
    n = norm(c_out, True)
    return [nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=_bias(n)), n, nn.ReLU()]


def _down(c_in: int, c_out: int, norm: Norm) -> list[nn.Module]:
    n = norm(c_out, True)
    return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=_bias(n)), n, nn.LeakyReLU(0.2)]


@_architecture("dcgan", _square_image)
def dcgan(cfg: ArchConfig, shape: Shape) -> tuple[nn.Module, nn.Module]:
    """DCGAN (Radford et al. 2016): one stride-2 stage per doubling of a 4-7 px base, so depth
    follows resolution; D has `width` channels at full resolution, doubling per stage."""
    channels, side, _ = shape
    base, doublings = _base_and_doublings(side)
    widths = [cfg.width * 2**i for i in range(doublings)]  # D's stages; G runs them backwards
    g_norm, d_norm = NORMS[cfg.norm_g], NORMS[cfg.norm_d]

    g = [nn.Unflatten(1, (cfg.z_dim, 1, 1))]
    g += _up(cfg.z_dim, widths[-1], g_norm, kernel=base, stride=1, padding=0)
    for c_in, c_out in pairwise(widths[::-1]):
        g += _up(c_in, c_out, g_norm)
    g += [nn.ConvTranspose2d(widths[0], channels, 4, 2, 1), nn.Tanh()]

    d = _down(channels * cfg.pack, widths[0], NORMS["none"])  # DCGAN never normalises D's input
    for c_in, c_out in pairwise(widths):
        d += _down(c_in, c_out, d_norm)
    d += [nn.Conv2d(widths[-1], 1, base), nn.Flatten(0)]

    g_net, d_net = nn.Sequential(*g), nn.Sequential(*d)
    for net in (g_net, d_net):  # the paper's initialisation
        _init_weights(net, partial(nn.init.normal_, mean=0.0, std=0.02))
    return g_net, d_net


# --- resnet ------------------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self, residual: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.residual = residual
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class _SumPool(nn.Module):
    # SNGAN's D sums, rather than averages, its last feature maps over space.
    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=(2, 3))


def _conv3(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def _g_block(c: int, norm: Norm) -> _Residual:
    first, second = norm(c, True), norm(c, True)
    # Every G block's output feeds a norm (the next block's or the last one), so no conv here
    # keeps a bias when G is normalised.
    bias = _bias(first)
    up = partial(nn.Upsample, scale_factor=2)
    residual = nn.Sequential(
        first, nn.ReLU(), up(), _conv3(c, c, bias), second, nn.ReLU(), _conv3(c, c, bias)
    )
    return _Residual(residual, nn.Sequential(up(), nn.Conv2d(c, c, 1, bias=bias)))


def _d_first_block(c_in: int, c: int, norm: Norm) -> _Residual:
    # SNGAN's "optimized" block: no activation on the raw input before the first conv.
    n = norm(c, True)
    residual = nn.Sequential(
        _conv3(c_in, c, _bias(n)), n, nn.ReLU(), _conv3(c, c), nn.AvgPool2d(2)
    )
    return _Residual(residual, nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c_in, c, 1)))


def _d_block(c: int, norm: Norm, down: bool) -> _Residual:
    first, second = norm(c, True), norm(c, True)
    residual = nn.Sequential(
        first, nn.ReLU(), _conv3(c, c, _bias(second)), second, nn.ReLU(), _conv3(c, c),
        nn.AvgPool2d(2) if down else nn.Identity(),
    )  # fmt: skip
    # The shortcut learns only where the block changes the shape, as in SNGAN.
    shortcut = nn.Sequential(nn.Conv2d(c, c, 1), nn.AvgPool2d(2)) if down else nn.Identity()
    return _Residual(residual, shortcut)


@_architecture("resnet", _square_image)
def resnet(cfg: ArchConfig, shape: Shape) -> tuple[nn.Module, nn.Module]:
    """SNGAN's ResNet (Miyato et al. 2018, CIFAR-10 model) with `width` channels throughout.

    G upsamples a 4-7 px base once per doubling (three blocks at 32 px); D downsamples twice,
    then two more blocks, ReLU, sum pooling, linear. SNGAN uses batch norm in G (norm_g: batch)
    and no norm in D."""
    channels, side, _ = shape
    base, doublings = _base_and_doublings(side)
    w, g_norm, d_norm = cfg.width, NORMS[cfg.norm_g], NORMS[cfg.norm_d]
    g = nn.Sequential(
        nn.Linear(cfg.z_dim, w * base * base),
        nn.Unflatten(1, (w, base, base)),
        *[_g_block(w, g_norm) for _ in range(doublings)],
        g_norm(w, True),
        nn.ReLU(),
        _conv3(w, channels),
        nn.Tanh(),
    )
    d = nn.Sequential(
        _d_first_block(channels * cfg.pack, w, d_norm),
        _d_block(w, d_norm, down=True),
        _d_block(w, d_norm, down=False),
        _d_block(w, d_norm, down=False),
        nn.ReLU(),
        _SumPool(),
        nn.Linear(w, 1),
        nn.Flatten(0),
    )
    for net in (g, d):  # Glorot-uniform, as SNGAN initialises
        _init_weights(net, nn.init.xavier_uniform_)
    return g, d
