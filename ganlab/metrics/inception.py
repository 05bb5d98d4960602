"""The FID InceptionV3: torchvision's Inception3 patched as pytorch-fid does, fed as TF1 was.

The weights are the TensorFlow 2015-12-05 graph converted by pytorch-fid
(`pt_inception-2015-12-05-6726825d.pth`, the file torch-fidelity and torchmetrics use too). The
TF graph differs from torchvision's network in its pooling: average pools exclude the padding,
and the last block max-pools. Inputs go the way of the original FID code and torch-fidelity:
images quantised to 8 bits (as if saved as PNG), resized to 299×299 with TF1's bilinear rule
(no half-pixel offset), scaled by (x − 128)/128. Features are the 2048-d pool3 activations; IS
uses the softmax of the logits without the fc bias over 1008 classes, as torch-fidelity does.

The weights come from `$GANLAB_INCEPTION_WEIGHTS` or `<cache>/pt_inception-2015-12-05.pth`, or
are downloaded into the cache when `GANLAB_ALLOW_DOWNLOAD=1`; otherwise loading fails with a
message saying how to provide the file.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.devices import full_precision
from ganlab.metrics.cache import cache_dir, file_sha256
from ganlab.metrics.features import Features
from ganlab.rundir import atomic_write

WEIGHTS_ENV = "GANLAB_INCEPTION_WEIGHTS"
DOWNLOAD_ENV = "GANLAB_ALLOW_DOWNLOAD"
WEIGHTS_FILE = "pt_inception-2015-12-05.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
WEIGHTS_SHA256_PREFIX = "6726825d"  # of the standard file; any other file is recorded as such
INPUT_SIZE = 299
N_CLASSES = 1008
BATCH = 64
# The network up to pool3, in order (torchvision's names; the state dict's keys).
POOL3_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool",
)  # fmt: skip


def _tf_avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_max_pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _blocks():
    # torchvision is imported here, not at module import: only cifar10 needs it
    from torchvision.models import inception as tv

    class FIDInceptionA(tv.InceptionA):
        def _forward(self, x: Tensor) -> list[Tensor]:
            return [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_tf_avg_pool(x)),
            ]

    class FIDInceptionC(tv.InceptionC):
        def _forward(self, x: Tensor) -> list[Tensor]:
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
                bd = layer(bd)
            pool = self.branch_pool(_tf_avg_pool(x))
            return [self.branch1x1(x), b7, self.branch7x7dbl_5(bd), pool]

    class FIDInceptionE(tv.InceptionE):
        pool = staticmethod(_tf_avg_pool)

        def _forward(self, x: Tensor) -> list[Tensor]:
            b3 = self.branch3x3_1(x)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            return [
                self.branch1x1(x),
                torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1),
                self.branch_pool(self.pool(x)),
            ]

    class FIDInceptionE2(FIDInceptionE):
        pool = staticmethod(_tf_max_pool)  # the TF graph's last block max-pools

    return tv, FIDInceptionA, FIDInceptionC, FIDInceptionE, FIDInceptionE2


def fid_inception_v3() -> nn.Module:
    """The FID InceptionV3 architecture with default (untrained) weights."""
    tv, block_a, block_c, block_e, block_e2 = _blocks()
    net = tv.Inception3(num_classes=N_CLASSES, aux_logits=False, init_weights=False)
    net.Mixed_5b = block_a(192, pool_features=32)
    net.Mixed_5c = block_a(256, pool_features=64)
    net.Mixed_5d = block_a(288, pool_features=64)
    net.Mixed_6b = block_c(768, channels_7x7=128)
    net.Mixed_6c = block_c(768, channels_7x7=160)
    net.Mixed_6d = block_c(768, channels_7x7=160)
    net.Mixed_6e = block_c(768, channels_7x7=192)
    net.Mixed_7b = block_e(1280)
    net.Mixed_7c = block_e2(2048)
    return net


def weights_path() -> Path:
    """The weights file: `$GANLAB_INCEPTION_WEIGHTS`, else `<cache>/pt_inception-2015-12-05.pth`,
    downloaded there first if missing and `GANLAB_ALLOW_DOWNLOAD=1`."""
    if os.environ.get(WEIGHTS_ENV):
        path = Path(os.environ[WEIGHTS_ENV]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{WEIGHTS_ENV}={path} is not a file. {_how_to_provide()}")
        return path
    path = cache_dir() / WEIGHTS_FILE
    if path.is_file():
        return path
    if os.environ.get(DOWNLOAD_ENV) != "1":
        raise FileNotFoundError(f"FID Inception weights not found at {path}. {_how_to_provide()}")
    from filelock import FileLock

    with FileLock(f"{path}.lock"):
        if not path.is_file():
            atomic_write(
                path,
                lambda tmp: torch.hub.download_url_to_file(
                    WEIGHTS_URL, str(tmp), hash_prefix=WEIGHTS_SHA256_PREFIX
                ),
            )
    return path


def _how_to_provide() -> str:
    return (
        f"Provide the standard FID InceptionV3 weights ({WEIGHTS_URL}): set {WEIGHTS_ENV} to "
        f"the file's path, or copy it to {cache_dir() / WEIGHTS_FILE} ($GANLAB_CACHE), or set "
        f"{DOWNLOAD_ENV}=1 to download it where the network allows."
    )


def tf1_resize_matrix(n_in: int, n_out: int, device: str | torch.device = "cpu") -> Tensor:
    """(n_out, n_in) matrix of TF1's bilinear resize, align_corners=False, made on `device`."""
    rows = torch.arange(n_out, device=device)
    source = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    low = source.floor().long()
    high = (low + 1).clamp(max=n_in - 1)
    weight = source - low
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    matrix[rows, low] += 1 - weight
    matrix[rows, high] += weight
    return matrix


class InceptionExtractor:
    """Pool3 features (2048-d) and class probabilities (n, 1, 1008) of images in [-1, 1]."""

    name = "inception"
    has_probs = True

    def __init__(self, path: Path, device: str = "cpu"):
        self.weights = file_sha256(path)[:16]
        self.net = fid_inception_v3()
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.eval().requires_grad_(False).to(device)
        self.device = device
        self._resize: dict[int, Tensor] = {}  # image side -> resize matrix, on the device

    def _resize_matrix(self, n_in: int) -> Tensor:
        if n_in not in self._resize:
            self._resize[n_in] = tf1_resize_matrix(n_in, INPUT_SIZE, self.device).float()
        return self._resize[n_in]

    def _preprocess(self, x: Tensor) -> Tensor:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round()  # the 8-bit image a PNG would hold
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey images as RGB
        rows, cols = self._resize_matrix(x.shape[2]), self._resize_matrix(x.shape[3])
        x = torch.einsum("oh,nchw,pw->ncop", rows, x, cols)
        return (x - 128) / 128

    @torch.inference_mode()
    @full_precision()
    def __call__(self, x: Tensor) -> Features:
        features, probs = [], []
        for batch in x.split(BATCH):
            h = self._preprocess(batch.to(self.device))
            for name in POOL3_LAYERS:
                h = getattr(self.net, name)(h)
            pool = h.flatten(1)
            logits = pool @ self.net.fc.weight.T  # without bias, as torch-fidelity's IS
            features.append(pool)
            probs.append(logits.softmax(1)[:, None])
        return Features(torch.cat(features), torch.cat(probs))
