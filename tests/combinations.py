"""The crosses of trial options that the device and batched-execution tests run.

Every loss × penalty × architecture, and every architecture × norm_g × norm_d, with the other
options (spectral norm, packing, EMA, D steps) cycling through their values so that each is on
in about half of the cases and meets every other option somewhere.
"""

import itertools

from ganlab.losses import LOSSES
from ganlab.models import ARCHITECTURES, NORMS
from ganlab.penalties import PENALTIES

NORM_NAMES = sorted(NORMS)
# Every registered penalty, and a sum of two (R3GAN's R1 + R2) for the path that adds them.
PENALTY_NAMES = [*sorted(PENALTIES), "r1+r2"]


def dataset_of(arch: str) -> str:
    """The tests' data set for an architecture: 2-D points for the MLP, 8x8 digits else."""
    return "ring8" if arch == "mlp" else "digits"


def every_architecture_option() -> list[dict]:
    """Every arch × norm_g × norm_d, with spectral norm, packing and EMA each on for half."""
    cases = []
    for i, (arch, norm_g, norm_d) in enumerate(
        itertools.product(sorted(ARCHITECTURES), NORM_NAMES, NORM_NAMES)
    ):
        cases.append({"arch": arch, "norm_g": norm_g, "norm_d": norm_d,
                      "spectral_norm": bool(i % 2), "pack": 1 + i // 2 % 2,
                      "ema": 0.9 * (i // 4 % 2)})  # fmt: skip
    return cases


def every_objective() -> list[dict]:
    """Every loss × penalty × arch, with the architecture options cycling."""
    cases = []
    for i, (loss, penalty, arch) in enumerate(
        itertools.product(sorted(LOSSES), PENALTY_NAMES, sorted(ARCHITECTURES))
    ):
        clip = 0.05 if loss == "wasserstein" and penalty == "none" else 0.0
        cases.append({"loss": loss, "penalty": penalty, "arch": arch, "clip": clip,
                      "norm_g": NORM_NAMES[i % 4], "norm_d": NORM_NAMES[i // 4 % 4],
                      "spectral_norm": bool(i % 3 == 0), "pack": 1 + i % 2,
                      "ema": 0.9 * (i % 5 == 0), "d_steps": 1 + i % 2})  # fmt: skip
    return cases


def case_id(values: dict) -> str:
    return "-".join(str(x) for x in values.values())
