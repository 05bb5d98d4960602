"""Devices: where a trial runs, its random streams, and its float32 precision and determinism.

A trial's tensors all live on one device and every random draw lands there, made by a generator
of that device. The one exception is `meta`, whose tensors hold shapes but no values: it has no
generator of its own, so its draws take a CPU generator, which is all `tests/test_device.py`
needs to run whole trials on it and prove them device-correct on a machine without a GPU.

Random states are kept as bytes, so a checkpoint loaded with `map_location` onto any device still
hands each generator the host-side state it wants. A state only fits a generator of the device
type that wrote it (a CPU generator's state is 5,056 bytes of Mersenne Twister, a CUDA one's 16
bytes of Philox seed and offset), so a stream that moves between device types is reseeded
(`reseed_value`) instead of restored.

Precision and determinism are process-global in PyTorch. They are set only through
`numerics` and `full_precision`, which put back what they found, so two trials that take turns
in one process (a reused Ray worker) each train with their own. TF32 is set through PyTorch's
`fp32_precision` API alone (matmul, conv and rnn together), never its legacy flags, and the
legacy flags are never read: the new setters leave them as they were, and torch 2.14 raises ("a
mix of the legacy and new APIs") on reading `torch.backends.cudnn.allow_tf32` (and so on entering
`torch.backends.cudnn.flags()`) once conv or rnn differs from the legacy cuDNN flag, which is
True until set (so inside `full_precision`), and on reading `torch.backends.cuda.matmul.allow_tf32`
or `torch.get_float32_matmul_precision()` once matmul is `tf32`. (That torch's own kernels take
`tf32` from the new API without that error is what `benchmarks/gpu_throughput.py --device-check`
confirms on a card.)
"""

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

# cuBLAS reads its workspace configuration once, when it starts in this process; deterministic
# algorithms want this one (PyTorch warns otherwise). Set when this module is imported, before
# any trial's first matmul, since a later trial in the same process may ask for determinism. A
# value the user set is kept.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CPU_STATE_BYTES = 5056  # torch.Generator("cpu").get_state(): Mersenne Twister and normal cache
CUDA_STATE_BYTES = 16  # torch.Generator("cuda").get_state(): Philox seed and offset
DRIVER_FOR_CUDA = {13: "R580", 12: "R525", 11: "R450"}
"""The oldest NVIDIA driver branch that runs a CUDA major version's builds of torch."""


class DeviceError(RuntimeError):
    """A trial cannot have the device it asked for or was given; the message says why and what
    to check."""


# --- placement ------------------------------------------------------------------------------


def trial_device(
    requested: str, gpu_ids: Sequence[int | str] | None, cuda_available: bool | None = None
) -> torch.device:
    """The device a trial asking for `requested` (`auto`, `cuda`, `cpu`, `meta`) runs on.

    `gpu_ids` are the GPUs Ray assigned the trial (`ray.get_gpu_ids()`), or None outside Ray
    (`ganlab trial`). Inside Ray, `auto` is cuda only when Ray assigned a GPU: a zero-GPU task
    sees every card of its node (Ray leaves CUDA_VISIBLE_DEVICES alone for it), and must not
    take cuda:0 from the trials that were given it. Outside Ray, `auto` is cuda when torch sees
    one. `cuda_available` defaults to `torch.cuda.is_available()`. Raises `DeviceError` for
    `cuda` without a GPU from Ray, and for a GPU that torch cannot use.
    """
    if requested not in ("auto", "cuda"):
        return torch.device(requested)
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if gpu_ids is None:
        if requested == "auto":
            return torch.device("cuda" if available else "cpu")
        if not available:
            raise DeviceError(f"device 'cuda' was asked for, but {_no_cuda()}")
        return torch.device("cuda")
    if not gpu_ids:
        if requested == "cuda":
            raise DeviceError("device 'cuda' was asked for, but Ray assigned this trial no GPU "
                              "(resources.gpu is 0); give it a GPU or use device 'auto' or "
                              "'cpu'")  # fmt: skip
        return torch.device("cpu")
    if not available:
        ids = ", ".join(str(i) for i in gpu_ids)
        raise DeviceError(f"Ray assigned this trial GPU {ids}, but {_no_cuda()}")
    return torch.device("cuda")


def _no_cuda() -> str:
    """Why torch may see no card here, with torch's build and the driver it needs."""
    cuda = torch.version.cuda
    if cuda is None:
        return (f"torch {torch.__version__} sees no CUDA device: it is a CPU-only build "
                "(torch.version.cuda is None); install a CUDA build of torch")  # fmt: skip
    driver = DRIVER_FOR_CUDA.get(int(cuda.split(".")[0]))
    needs = f"an NVIDIA driver {driver} or newer" if driver else "an NVIDIA driver made for it"
    return (f"torch {torch.__version__} sees no CUDA device: it is built for CUDA {cuda}, "
            f"which needs {needs} (`nvidia-smi` shows the driver's version; if it fails, "
            "the node has no driver or no card)")  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """The device `name` stands for outside Ray (`trial_device(name, None)`), a card with its
    index (`cuda:0`); raises `DeviceError` if it asks for a card that is not there."""
    device = trial_device(name, None)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def device_name(device: torch.device | str) -> str:
    """What `device` is: the card's name for cuda (`torch.cuda.get_device_name`), else its
    type (`cpu`, `meta`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (on a card, timings are otherwise of the queue)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- random streams -------------------------------------------------------------------------


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator for draws on `device`, seeded: on the device itself (CPU for `meta`)."""
    home = torch.device("cpu") if device.type == "meta" else device
    return torch.Generator(home).manual_seed(seed)


def generator_state(generator: torch.Generator) -> bytes:
    """The generator's state as bytes: device-independent, safe for `weights_only` loading."""
    return generator.get_state().numpy().tobytes()


def set_generator_state(generator: torch.Generator, state: bytes) -> None:
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


def state_device_type(state: bytes) -> str:
    """The device type of the generator that wrote `state`, from its length: for checkpoints
    written before they recorded it."""
    kinds = {CPU_STATE_BYTES: "cpu", CUDA_STATE_BYTES: "cuda"}
    if len(state) not in kinds:
        raise ValueError(f"a random state of {len(state)} bytes: neither a CPU generator's "
                         f"({CPU_STATE_BYTES}) nor a CUDA one's ({CUDA_STATE_BYTES})")  # fmt: skip
    return kinds[len(state)]


def reseed_value(seed: int, step: int, stream: str) -> int:
    """The seed a stream takes when its state cannot move to another device type.

    The first 8 bytes of SHA-256("ganlab-reseed/{seed}/{step}/{stream}"), big-endian, with the top
    bit cleared (a 63-bit integer any generator takes): the same on every machine, different for
    every seed, step and stream (`rng`, `eval_rng`), and apart from the seeds streams start from.
    """
    digest = hashlib.sha256(f"ganlab-reseed/{seed}/{step}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def restore_generator(
    generator: torch.Generator, state: bytes, written_on: str, seed: int, step: int, stream: str
) -> bool:
    """Give `generator` the `state` a generator of device type `written_on` saved, when the
    types match; otherwise reseed it with `reseed_value(seed, step, stream)`. True if reseeded."""
    if written_on == generator.device.type:
        set_generator_state(generator, state)
        return False
    generator.manual_seed(reseed_value(seed, step, stream))
    return True


# --- precision and determinism --------------------------------------------------------------

_FP32_OPS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
"""Every CUDA op family with its own float32 precision: all set together, so none is left at a
precision of its own."""


@contextmanager
def numerics(precision: str, deterministic: bool) -> Iterator[None]:
    """Train in `precision` (`ieee` or `tf32`: float32 matmuls, convolutions and RNNs on a card;
    a CPU computes IEEE float32 either way) and, if `deterministic`, with cuDNN's deterministic
    algorithms, its benchmark off and `torch.use_deterministic_algorithms(True,
    warn_only=True)` (an op without a deterministic implementation warns instead of failing the
    trial). The settings are process-global: the ones found are put back afterwards."""
    saved = _fp32_precisions(), _determinism()
    _set_fp32_precisions((precision,) * len(_FP32_OPS))
    # Benchmark off either way, as PyTorch starts: its timing runs pick algorithms by load.
    _set_determinism((deterministic, False, deterministic, deterministic))
    try:
        yield
    finally:
        _set_fp32_precisions(saved[0])
        _set_determinism(saved[1])


@contextmanager
def full_precision() -> Iterator[None]:
    """float32 matmuls and convolutions in IEEE float32, not TF32, restoring the settings after.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later cards, so feature
    extractors would give different features on an A100 than on a V100 or a CPU; the evaluation
    protocol wants the same features everywhere.
    """
    saved = _fp32_precisions()
    _set_fp32_precisions(("ieee",) * len(_FP32_OPS))
    try:
        yield
    finally:
        _set_fp32_precisions(saved)


def _fp32_precisions() -> tuple[str, ...]:
    return tuple(op.fp32_precision for op in _FP32_OPS)


def _set_fp32_precisions(precisions: Sequence[str]) -> None:
    for op, precision in zip(_FP32_OPS, precisions, strict=True):
        op.fp32_precision = precision


def _determinism() -> tuple[bool, bool, bool, bool]:
    cudnn = torch.backends.cudnn
    return (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


def _set_determinism(settings: tuple[bool, bool, bool, bool]) -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = settings[:2]
    torch.use_deterministic_algorithms(settings[2], warn_only=settings[3])
