"""Which execution trains a trial's seeds: `batched` (one stacked model) or `sequential`.

Both give each seed the same numbers up to float rounding (tests/test_batched.py), so the choice
is one of speed, made per device type and architecture by `RULE` under `execution: auto`;
`execution: batched` or `sequential` forces one.

The rule, and the measurements behind it (benchmarks/trial_throughput.py, one thread):

- cuda (and `meta`, which stands in for a card in the tests): batched, every architecture. On
  a card each op is a kernel launch of 5-10 us of host time, and a batched step dispatches a
  constant number of ops for all K seeds, where the sequential one dispatches K times one seed's
  (benchmarks/gpu_throughput.py measures both on a card);
- cpu: batched for `mlp` from 2 seeds on (one batched matmul per layer beats K small ones:
  ring8/mlp at 1.25x the sequential seed-steps/s at K = 3, 1.56x at K = 8, 1.80x at K = 32);
  sequential for the convolutional architectures, whose grouped convolutions run slower on a
  CPU than K plain ones (digits/dcgan batched at 0.67-0.80x from K = 3 to 32), and for a single
  seed, where stacking has only its overhead to add (0.79x on ring8/mlp).
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ganlab.config import TrialConfig

RULE: dict[str, dict[str, int]] = {
    "cuda": {"mlp": 1, "dcgan": 1, "resnet": 1},
    "meta": {"mlp": 1, "dcgan": 1, "resnet": 1},
    "cpu": {"mlp": 2},
}
"""device type -> {architecture: the fewest seeds trained batched}; absent: sequential."""


def choose(config: TrialConfig, device: torch.device, n_seeds: int | None = None) -> str:
    """`batched` or `sequential` for `config` on `device` with `n_seeds` live seeds (default:
    all of the configuration's)."""
    if config.execution != "auto":
        return config.execution
    from ganlab.batched import batchable  # a plugin's penalty may have no batched form

    if not batchable(config):
        return "sequential"
    n_seeds = len(config.seeds) if n_seeds is None else n_seeds
    fewest = RULE.get(device.type, {}).get(config.arch)
    return "batched" if fewest is not None and n_seeds >= fewest else "sequential"


class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched inside it (one per kernel launch on a card, views aside):
    what the rule weighs, and what benchmarks/trial_throughput.py and the tests count."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))
