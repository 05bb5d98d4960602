"""Running trials on a device without a GPU, strictly: PyTorch's `meta` device and a host audit.

Why meta rather than FakeTensorMode on "cuda": fake CUDA tensors cannot run a backward pass on a
machine without a driver (the autograd engine asks CUDA for its primary context and gets
"hasPrimaryContext expects a valid device index"). Meta is PyTorch's own device of tensors that
have shapes but no values. Like a card's tensors, meta tensors refuse to meet host tensors in an
op ("Tensor on device meta is not on the expected device cpu") and refuse to be read back
(`.item()`, `bool()`, `.tolist()`, `.cpu()` raise), and autograd runs on them. `HostAudit` adds
what a card would only show as slowness: any op that makes a host tensor inside the audited code
(a draw on the CPU, a tensor built on the host to be copied over at every step) fails.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

META = torch.device("meta")


class HostTouch(RuntimeError):
    """An op inside audited code made a host tensor or read a value back to the host."""


class HostAudit(TorchDispatchMode):
    """Raises `HostTouch` on every op that reads a value to the host, returns a host tensor, or
    copies one to the device.

    One host tensor is allowed: a 0-d one (functorch's vmap lifts a Python number, `0.5 * x`,
    into one). An op on a card takes a 0-d host tensor as a kernel argument, by value, as it
    takes a Python number: no copy, no wait, and a CUDA graph keeps the value it had."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise HostTouch(f"{func} reads a value back to the host")
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu" and leaf.ndim:
                raise HostTouch(f"{func} made a host tensor of shape {tuple(leaf.shape)}")
        if func in _COPIES and _on_host(args[0]) and not _on_host(out):
            raise HostTouch(f"{func} copied a host tensor to the device")
        return out


_COPIES = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


def _on_host(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "cpu"


@contextmanager
def fused_on_meta() -> Iterator[None]:
    """Let fused optimizers take meta parameters. Torch keeps a list of the devices allowed to
    run them, and meta is not on it, though the fused Adam kernel has a meta implementation
    (the one FakeTensorMode runs)."""
    import torch.optim.optimizer as optimizer

    allowed = optimizer._get_fused_kernels_supported_devices
    optimizer._get_fused_kernels_supported_devices = lambda: [*allowed(), "meta"]
    try:
        yield
    finally:
        optimizer._get_fused_kernels_supported_devices = allowed


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts, lists and tuples."""
    return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, torch.Tensor)]


def module_tensors(*modules: torch.nn.Module | None) -> list[torch.Tensor]:
    return [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]


CUDA_STATE = bytes(range(16))  # the size of a CUDA generator's state: Philox seed and offset


def as_written_on_a_card(state: dict, recorded: bool = True) -> dict:
    """`Trial.state_dict()` output as a card writes it, for a machine without one: every random
    state a CUDA generator's 16 bytes, their device type recorded as `cuda`, or, as checkpoints
    written before the type was recorded, not at all (`recorded=False`)."""
    for seed in state["seeds"]:
        for stream in ("rng", "eval_rng"):
            seed[stream] = CUDA_STATE
            seed.pop(f"{stream}_device")
            if recorded:
                seed[f"{stream}_device"] = "cuda"
    return state
