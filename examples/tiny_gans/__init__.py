"""An example plugin: a StyleGAN-like generator, a custom loss, a dataset of PNG files and a
memorisation metric.

Named in a sweep file's `imports: [tiny_gans/]` (examples/plugin_sweep.yaml), it registers

- `mapping-mlp`: a generator whose noise first goes through a mapping network (z normalised,
  then MLP layers to a style w, as in StyleGAN, Karras et al. 2019), and whose synthesis layers
  are modulated by w (a learned scale and shift per feature, FiLM-like, in place of StyleGAN's
  AdaIN); an MLP discriminator. Flat data or images, any size;
- `smooth-non-saturating`: the non-saturating loss with one-sided label smoothing (D's real
  target 0.9, Salimans et al. 2016);
- `png-shapes`: the 8x8 grayscale PNGs of `shapes/` beside this file (drawn by
  examples/make_shapes.py), read with Pillow; the folder is so small that its reference is the
  folder itself (`test` = `train`);
- `memorised`: the share of fakes that are near-copies of a training image, in pixel space: a
  fake nearer its nearest training image than a third of its distance to the next one. On a
  folder this small, FID against the folder itself rewards copying it; this says how much of a
  score is copies.

Every Ray worker gets this directory, images included, through Ray's runtime environment, and
each row of the tables carries its hash (`plugins`).
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab import register
from ganlab.data import Data, to_float

SHAPES = Path(__file__).parent / "shapes"
MAPPING_LAYERS = 2


# --- architecture ------------------------------------------------------------------------------


class Modulated(nn.Module):
    """A linear layer whose output features are scaled and shifted by the style w."""

    def __init__(self, d_in: int, d_out: int, w_dim: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.style = nn.Linear(w_dim, 2 * d_out)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        scale, shift = self.style(w).chunk(2, dim=1)
        return F.relu(self.linear(x) * (1 + scale) + shift)


class MappingGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, depth: int, shape: tuple[int, ...]):
        super().__init__()
        layers = []
        for i in range(MAPPING_LAYERS):
            layers += [nn.Linear(z_dim if i == 0 else width, width), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*layers)
        self.start = nn.Parameter(torch.zeros(width))  # synthesis starts from a learned input
        self.blocks = nn.ModuleList(Modulated(width, width, width) for _ in range(depth))
        self.out = nn.Linear(width, math.prod(shape))
        self.shape, self.image = shape, len(shape) == 3

    def forward(self, z: Tensor) -> Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)  # StyleGAN's pixel norm
        w = self.mapping(z)
        x = self.start.expand(len(z), -1)
        for block in self.blocks:
            x = block(x, w)
        x = self.out(x).view(len(z), *self.shape)
        return torch.tanh(x) if self.image else x


def any_shape(shape: tuple[int, ...]) -> str | None:
    return None if shape and min(shape) >= 1 else "needs a non-empty shape of positive sizes"


@register.architecture("mapping-mlp", any_shape)
def mapping_mlp(cfg, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """G: mapping network + modulated MLP; D: an MLP judging `cfg.pack` samples at once."""
    g = MappingGenerator(cfg.z_dim, cfg.width, cfg.depth, shape)
    features = math.prod(shape) * cfg.pack
    d = nn.Sequential(
        nn.Flatten(), nn.Linear(features, cfg.width), nn.LeakyReLU(0.2),
        nn.Linear(cfg.width, cfg.width), nn.LeakyReLU(0.2), nn.Linear(cfg.width, 1),
        nn.Flatten(0),
    )  # fmt: skip
    return g, d


# --- loss -------------------------------------------------------------------------------------

REAL_TARGET = 0.9


@register.loss("smooth-non-saturating")
def smooth_non_saturating(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """D: cross-entropy against 0.9 on reals and 0 on fakes; G: non-saturating."""
    target = torch.full_like(d_real, REAL_TARGET)
    d_loss = F.binary_cross_entropy_with_logits(d_real, target) + F.softplus(d_fake).mean()
    return d_loss, F.softplus(-d_fake).mean()


# --- dataset ----------------------------------------------------------------------------------


@register.dataset("png-shapes", shape=(1, 8, 8), modes=0, extractor="raw", n_eval=200)
def png_shapes(data_dir: str, download: bool) -> dict[str, Tensor]:
    """Every PNG of `shapes/`, in name order, as uint8 (N, 1, 8, 8)."""
    from PIL import Image

    files = sorted(SHAPES.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"png-shapes: no PNGs in {SHAPES} (run examples/make_shapes.py)")
    images = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    x = torch.from_numpy(images).unsqueeze(1).contiguous()
    return {"train": x, "test": x}


# --- metric -----------------------------------------------------------------------------------

COPY_RATIO = 1 / 3  # a near-copy: its nearest training image this much nearer than the next
COPY_CHUNK = 1024  # fakes compared at once: a (chunk, n_train) distance matrix in memory


@register.metric(
    "memorised",
    mode="min",
    worst=1.0,
    doc="share of fakes that are near-copies of a training image (pixel space)",
)
def memorised(fake: Tensor, features: Tensor, data: Data) -> Tensor:
    """The share of `fake` whose nearest training image is at most COPY_RATIO times as far as
    the next one (`features` unused: copies are judged on pixels)."""
    if data.train is None:  # a 2-D mixture, drawn fresh: no stored sample to copy
        return fake.new_zeros((), dtype=torch.float64)
    # A doubled training image counted once: a copy of it is no nearer one than the other.
    train = to_float(data.train.to(fake.device)).flatten(1).unique(dim=0)
    copies = fake.new_zeros((), dtype=torch.float64)
    for chunk in fake.flatten(1).split(COPY_CHUNK):
        nearest, second = torch.cdist(chunk, train).topk(2, dim=1, largest=False).values.T
        copies += (nearest <= COPY_RATIO * second).sum()
    return copies / len(fake)
