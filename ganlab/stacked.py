"""Stacked networks: K seeds' copies of one network, run as one network with a seed dimension.

`stack(nets)` takes K networks that `ganlab.models.build` made from K seeds (one architecture,
each seed's own weights) and returns one `StackedNet` that computes all K at once: every layer
gains a leading seed dimension, and no value of one seed ever meets another's.

Two layouts hold K seeds' batches of B samples in one tensor (`Layout`):

- seed-first, `(K, B, *shape)`, for fully connected networks: each linear layer is one batched
  matmul (`baddbmm`) of (K, B, in) by (K, in, out);
- channels, `(B, K*C, H, W)`, for convolutional ones: seed k owns channels [k*C, (k+1)*C), so a
  convolution is one grouped convolution (`groups=K`), and the norms map exactly: BatchNorm
  over K*C channels is each seed's BatchNorm, GroupNorm(K, K*C) each seed's layer norm
  (GroupNorm(1, C)), instance norm is per channel anyway. Linear layers of a convolutional net
  (ResNet's first and last) run as batched matmuls on a (K, B, F) view.

Spectral norm is a batched power iteration (one u and v per seed, updated in place as torch's
parametrization does); PacGAN packing groups each seed's own consecutive samples.

Parameters: all of a network's parameters live in one tensor `flat` of shape (K, P), row k
holding seed k's parameters in the order its layers take them, so whatever is done per seed to
all parameters (Adam, EMA, clipping, gradient norms, finiteness) is one op on `flat` with a
(K, 1) mask or factor. A forward pass splits `flat` once (`split`: its backward is one cat) and
each layer views its pieces. Other parameter sets of the same network (the EMA of G's weights)
run through the same layers: `net(x, flat=ema)`.

The seeds' own modules stay the trial's record: `gather(nets)` reads their parameters (in
`flat`'s order), `scatter(flat, nets)` writes them back, and `load_buffers` / `store_buffers`
move the buffers (BatchNorm statistics, spectral norm's u and v).
"""

import math
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ganlab import models
from ganlab.registry import register


class Layout:
    """How K seeds' batches share one tensor: seed-first (K, B, ...) or channels (B, K*C, ...).

    `join` stacks per-seed tensors (B, *shape) into the layout; `seeds` views a stacked tensor
    with an explicit seed dimension (`seed_dim`: 0, or 1 for channels) and `merge` undoes it;
    `per_seed` views it as (K, B, ...), strided where the layout is channels.
    """

    def __init__(self, k: int, channels: bool):
        self.k = k
        self.channels = channels
        self.seed_dim = 1 if channels else 0

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.cat(parts, 1) if self.channels else torch.stack(parts)

    def stack(self, parts: Sequence[Tensor]) -> Tensor:
        """Per-seed tensors stacked along the seed dimension (the `seeds` view's shape)."""
        return torch.stack(parts, self.seed_dim)

    def seeds(self, x: Tensor) -> Tensor:
        return x.unflatten(1, (self.k, -1)) if self.channels else x

    def merge(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2) if self.channels else x

    def per_seed(self, x: Tensor) -> Tensor:
        return self.seeds(x).movedim(self.seed_dim, 0)

    def __repr__(self) -> str:
        return f"Layout(k={self.k}, {'channels' if self.channels else 'seed-first'})"


class Layer(nn.Module):
    """K seeds' copies of one module. `slots` are the paths (from the root network) of its
    parameters, in the order it takes them; `first` is where they start in the split `flat`;
    `buffer_paths` maps each stacked buffer (K, ...) to the seeds' own buffer's path."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout
        self.slots: list[str] = []
        self.first = 0
        self.buffer_paths: dict[str, str] = {}

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def _slot(self, prefix: str, name: str) -> int:
        """Register parameter `prefix.name`; its index among this layer's pieces."""
        self.slots.append(f"{prefix}{name}")
        return len(self.slots) - 1

    def _buffer(self, name: str, modules: Sequence[nn.Module], prefix: str, path: str) -> None:
        stacked = torch.stack([operator.attrgetter(path)(m).detach() for m in modules]).clone()
        self.register_buffer(name, stacked)
        self.buffer_paths[name] = f"{prefix}{path}"

    def _piece(self, pieces: Sequence[Tensor], index: int, shape: Sequence[int]) -> Tensor:
        return pieces[self.first + index].view(self.layout.k, *shape)


Stacker = Callable[[Sequence[nn.Module], Layout, str], Layer]
STACKERS: dict[type, Stacker] = {}
"""module type -> fn(the K seeds' modules, layout, path prefix) -> the stacked layer."""


def stack(nets: Sequence[nn.Module]) -> "StackedNet":
    """One network computing `nets` (K copies of one architecture) at once, with their current
    parameters and buffers."""
    first = nets[0]
    convolutional = any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in first.modules())
    layout = Layout(len(nets), channels=convolutional)
    return StackedNet(_stack(nets, layout, ""), layout, nets)


def _stack(modules: Sequence[nn.Module], layout: Layout, prefix: str) -> Layer:
    # A parametrized module (spectral norm) is of a class made for it alone: its base's counts.
    kind = parametrize.type_before_parametrizations(modules[0])
    if any(parametrize.type_before_parametrizations(m) is not kind for m in modules):
        raise TypeError(f"{prefix or 'the network'}: the seeds' modules differ in type")
    if kind not in STACKERS:
        raise TypeError(f"{prefix or 'the network'}: no stacked form of {kind.__name__}")
    return STACKERS[kind](modules, layout, prefix)


class StackedNet(nn.Module):
    """K seeds' networks as one: `forward(x)` maps a stacked batch to a stacked output (G:
    samples in `layout`; D: logits (K, N))."""

    def __init__(self, body: Layer, layout: Layout, nets: Sequence[nn.Module]):
        super().__init__()
        self.body = body
        self.layout = layout
        self.layers = [m for m in body.modules() if isinstance(m, Layer)]
        self.slots: list[str] = []
        for layer in self.layers:
            layer.first = len(self.slots)
            self.slots += layer.slots
        self.shapes = [operator.attrgetter(path)(nets[0]).shape for path in self.slots]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.flat = self.gather(nets).requires_grad_(True)

    @property
    def n_params(self) -> int:
        """Parameters per seed."""
        return sum(self.sizes)

    def forward(self, x: Tensor, flat: Tensor | None = None) -> Tensor:
        pieces = (self.flat if flat is None else flat).split(self.sizes, 1)
        return self.body(x, pieces)

    def gather(self, nets: Sequence[nn.Module]) -> Tensor:
        """The parameters of `nets` (this network's structure, one per seed) as a (K, P)
        tensor in `flat`'s order."""
        rows = [torch.cat([operator.attrgetter(p)(net).detach().reshape(-1) for p in self.slots])
                for net in nets]  # fmt: skip
        return torch.stack(rows)

    @torch.no_grad()
    def scatter(self, flat: Tensor, nets: Sequence[nn.Module]) -> None:
        """Write `flat` (K, P) into the parameters of `nets`, one row per seed."""
        for row, net in zip(flat, nets, strict=True):
            scatter_row(row, [operator.attrgetter(path)(net) for path in self.slots])

    @torch.no_grad()
    def load_buffers(self, nets: Sequence[nn.Module]) -> None:
        for layer in self.layers:
            for name, path in layer.buffer_paths.items():
                own = [operator.attrgetter(path)(net) for net in nets]
                getattr(layer, name).copy_(torch.stack(own))

    @torch.no_grad()
    def store_buffers(self, nets: Sequence[nn.Module]) -> None:
        for layer in self.layers:
            for name, path in layer.buffer_paths.items():
                for stacked, net in zip(getattr(layer, name), nets, strict=True):
                    operator.attrgetter(path)(net).copy_(stacked)


def scatter_row(row: Tensor, targets: Sequence[Tensor]) -> None:
    """Copy `row` (P,) into `targets`, which it holds one after another: one foreach copy."""
    pieces = row.split([t.numel() for t in targets])
    views = [p.view(t.shape) for p, t in zip(pieces, targets, strict=True)]
    torch._foreach_copy_(list(targets), views)


# --- containers --------------------------------------------------------------------------------


class Chain(Layer):
    """`nn.Sequential`: the stacked children in order."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        children = [list(m.children()) for m in modules]
        self.children_ = nn.ModuleList(
            _stack([c[i] for c in children], layout, f"{prefix}{i}.")
            for i in range(len(children[0]))
        )

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        for child in self.children_:
            x = child(x, pieces)
        return x


class Residual(Layer):
    """`models._Residual`: residual(x) + shortcut(x)."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        self.residual = _stack([m.residual for m in modules], layout, f"{prefix}residual.")
        self.shortcut = _stack([m.shortcut for m in modules], layout, f"{prefix}shortcut.")

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        return self.residual(x, pieces) + self.shortcut(x, pieces)


class Packed(Layer):
    """`models.Packed`: each seed's `pack` consecutive samples judged together."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        self.pack = modules[0].pack
        self.net = _stack([m.net for m in modules], layout, f"{prefix}net.")

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        m, n = self.pack, len(x) if self.layout.channels else x.shape[1]
        if n % m:
            raise ValueError(f"a batch of {n} samples cannot be packed in groups of {m}")
        if self.layout.channels:  # (B, K*C, ...) -> (B/m, K*m*C, ...), seed by seed
            k = self.layout.k
            grouped = x.unflatten(1, (k, -1)).unflatten(0, (n // m, m)).transpose(1, 2)
            x = grouped.reshape(n // m, -1, *x.shape[2:])
        else:  # (K, B, C, ...) -> (K, B/m, m*C, ...)
            x = x.reshape(x.shape[0], n // m, m * x.shape[2], *x.shape[3:])
        return self.net(x, pieces)


register(STACKERS, nn.Sequential)(Chain)
register(STACKERS, models._Residual)(Residual)
register(STACKERS, models.Packed)(Packed)


# --- layers without parameters -----------------------------------------------------------------


class Same(Layer):
    """A module without parameters that acts on each element or channel alone (activations,
    pooling, upsampling): the seeds' first copy, applied to the stacked tensor."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        self.module = modules[0]

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        return self.module(x)


class Spatial(Same):
    """Pooling and upsampling: channel by channel, so only in the channels layout."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        if not layout.channels:
            raise TypeError(f"{prefix}: {type(modules[0]).__name__} needs the channels layout")
        super().__init__(modules, layout, prefix)


for _kind in (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh):
    register(STACKERS, _kind)(Same)
for _kind in (nn.Upsample, nn.AvgPool2d, models._SumPool):
    register(STACKERS, _kind)(Spatial)


@register(STACKERS, nn.Flatten)
class Flatten(Layer):
    """`nn.Flatten(1)` (D's input) and `nn.Flatten(0)` (D's logits, which always come out
    seed-first: (K, N))."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        module = modules[0]
        if (module.start_dim, module.end_dim) not in ((0, -1), (1, -1)):
            raise TypeError(f"{prefix}: Flatten({module.start_dim}, {module.end_dim})")
        self.logits = module.start_dim == 0

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        if not self.layout.channels:
            return x.flatten(1 if self.logits else 2)
        if self.logits:  # (B, K*m, ...) -> (K, B*m)
            return x.reshape(len(x), self.layout.k, -1).transpose(0, 1).flatten(1)
        return x.flatten(1)  # (B, K*C, H, W) -> (B, K*C*H*W): seed k's features together


@register(STACKERS, nn.Unflatten)
class Unflatten(Layer):
    """`nn.Unflatten(1, shape)`: flat features to a sample's shape, seed by seed."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        module = modules[0]
        if module.dim != 1:
            raise TypeError(f"{prefix}: Unflatten({module.dim}, ...)")
        self.shape = tuple(module.unflattened_size)

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        if not self.layout.channels:
            return x.unflatten(2, self.shape)
        return x.view(len(x), self.layout.k * self.shape[0], *self.shape[1:])


# --- layers with weights -----------------------------------------------------------------------


class SpectralNorm(nn.Module):
    """torch's spectral-norm parametrization, batched over seeds: one power iteration per
    training-mode forward, u and v (K, h) and (K, w) updated in place, then W / (u^T W v)."""

    def __init__(self, layer: Layer, modules: Sequence[nn.Module], prefix: str):
        super().__init__()
        norm = modules[0].parametrizations.weight[0]
        if norm.dim != 0 or norm.n_power_iterations != 1:
            raise TypeError(f"{prefix}: spectral norm over dim {norm.dim}, "
                            f"{norm.n_power_iterations} iterations")  # fmt: skip
        self.eps = norm.eps
        layer._buffer("sn_u", modules, prefix, "parametrizations.weight.0._u")
        layer._buffer("sn_v", modules, prefix, "parametrizations.weight.0._v")
        self.layer = [layer]  # not a submodule: the buffers are the layer's

    def forward(self, weight: Tensor) -> Tensor:
        layer = self.layer[0]
        u, v = layer.sn_u, layer.sn_v
        matrix = weight.flatten(2)  # (K, h, w)
        if self.training:
            with torch.no_grad():
                F.normalize(torch.bmm(matrix, v.unsqueeze(2)).squeeze(2), dim=1, eps=self.eps,
                            out=u)  # fmt: skip
                F.normalize(torch.bmm(matrix.mT, u.unsqueeze(2)).squeeze(2), dim=1,
                            eps=self.eps, out=v)  # fmt: skip
        # Cloned, as torch does: a second forward's update must not change the first's graph.
        u, v = u.clone(), v.clone()
        sigma = (u * torch.bmm(matrix, v.unsqueeze(2)).squeeze(2)).sum(1)
        return weight / sigma.view(-1, *[1] * (weight.ndim - 1))


class Weighted(Layer):
    """A layer with a weight (maybe spectrally normalised) and maybe a bias."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        module = modules[0]
        self.sn = None
        # Never `module.weight` of a parametrized module: reading it runs a power iteration.
        if parametrize.is_parametrized(module, "weight"):
            self._slot(prefix, "parametrizations.weight.original")
            self.sn = SpectralNorm(self, modules, prefix)
            self.weight_shape = tuple(module.parametrizations.weight.original.shape)
        else:
            self._slot(prefix, "weight")
            self.weight_shape = tuple(module.weight.shape)
        self.has_bias = module.bias is not None
        if self.has_bias:
            self._slot(prefix, "bias")

    def _weight(self, pieces: Sequence[Tensor]) -> Tensor:
        weight = self._piece(pieces, 0, self.weight_shape)
        return self.sn(weight) if self.sn is not None else weight

    def _bias(self, pieces: Sequence[Tensor]) -> Tensor | None:
        return pieces[self.first + 1].reshape(-1) if self.has_bias else None


@register(STACKERS, nn.Linear)
class Linear(Weighted):
    """Batched matmuls over (K, B, in); in the channels layout on a (K, B, F) view."""

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight = self._weight(pieces).mT  # (K, in, out)
        if self.layout.channels:
            x = x.unflatten(1, (self.layout.k, -1)).transpose(0, 1)  # (K, B, in)
        if self.has_bias:
            bias = pieces[self.first + 1].unsqueeze(1)  # (K, 1, out)
            y = torch.baddbmm(bias, x, weight)
        else:
            y = torch.bmm(x, weight)
        return y.transpose(0, 1).flatten(1) if self.layout.channels else y


@register(STACKERS, nn.Conv2d)
class Conv2d(Weighted):
    """One grouped convolution: seed k's filters read only seed k's channels."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        conv = modules[0]
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise TypeError(f"{prefix}: grouped or padded convolutions ({conv})")
        self.options = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight = self._weight(pieces).flatten(0, 1)  # (K*out, in, kh, kw)
        return F.conv2d(x, weight, self._bias(pieces), groups=self.layout.k, **self.options)


@register(STACKERS, nn.ConvTranspose2d)
class ConvTranspose2d(Weighted):
    """One grouped transposed convolution: weights (K*in, out, kh, kw)."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        conv = modules[0]
        if conv.groups != 1 or self.sn is not None:
            raise TypeError(f"{prefix}: grouped or spectrally normalised {conv}")
        self.options = {"stride": conv.stride, "padding": conv.padding,
                        "output_padding": conv.output_padding,
                        "dilation": conv.dilation}  # fmt: skip

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight = self._weight(pieces).flatten(0, 1)
        k = self.layout.k
        return F.conv_transpose2d(x, weight, self._bias(pieces), groups=k, **self.options)


# --- norms -------------------------------------------------------------------------------------


class Affine(Layer):
    """A norm with a per-feature affine (weight, bias): each seed its own."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(layout)
        module = modules[0]
        if getattr(module, "weight", None) is None:
            raise TypeError(f"{prefix}: a norm without an affine ({module})")
        self._slot(prefix, "weight")
        self._slot(prefix, "bias")
        self.eps = module.eps

    def _affine(self, pieces: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return pieces[self.first].reshape(-1), pieces[self.first + 1].reshape(-1)


@register(STACKERS, nn.BatchNorm1d)
@register(STACKERS, nn.BatchNorm2d)
class BatchNorm(Affine):
    """BatchNorm over K*C channels: each seed's BatchNorm, running statistics included."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        norm = modules[0]
        if not norm.track_running_stats or norm.momentum is None:
            raise TypeError(f"{prefix}: BatchNorm without running statistics or momentum")
        self.momentum = norm.momentum
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self._buffer(name, modules, prefix, name)

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight, bias = self._affine(pieces)
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = not self.layout.channels  # (K, B, F) -> (B, K*F) and back
        inputs = x.transpose(0, 1).flatten(1) if flat else x
        y = F.batch_norm(inputs, self.running_mean.view(-1), self.running_var.view(-1), weight,
                         bias, self.training, self.momentum, self.eps)  # fmt: skip
        return y.unflatten(1, (self.layout.k, -1)).transpose(0, 1) if flat else y


@register(STACKERS, nn.LayerNorm)
class LayerNorm(Affine):
    """Each sample over its own features (seed-first), then each seed's affine."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        self.shape = tuple(modules[0].normalized_shape)
        if layout.channels:
            raise TypeError(f"{prefix}: LayerNorm needs the seed-first layout")

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight, bias = (p.unsqueeze(1) for p in pieces[self.first : self.first + 2])
        return torch.addcmul(bias, F.layer_norm(x, self.shape, eps=self.eps), weight)


@register(STACKERS, nn.GroupNorm)
class GroupNorm(Affine):
    """GroupNorm(g, C) per seed is GroupNorm(K*g, K*C): groups never span two seeds."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        self.groups = layout.k * modules[0].num_groups

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight, bias = self._affine(pieces)
        return F.group_norm(x, self.groups, weight, bias, self.eps)


@register(STACKERS, nn.InstanceNorm2d)
class InstanceNorm(Affine):
    """Instance norm is per sample and channel, so over K*C channels it is each seed's."""

    def __init__(self, modules: Sequence[nn.Module], layout: Layout, prefix: str):
        super().__init__(modules, layout, prefix)
        if modules[0].track_running_stats:
            raise TypeError(f"{prefix}: instance norm with running statistics")

    def forward(self, x: Tensor, pieces: Sequence[Tensor]) -> Tensor:
        weight, bias = self._affine(pieces)
        return F.instance_norm(x, weight=weight, bias=bias, eps=self.eps)
