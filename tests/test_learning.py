"""It really learns, on this CPU: a GAN trained by a `Trial` reaches known-good results.

Each check trains three seeds for well under two minutes on one core and asserts what the trial's
own evaluations measured. The settings were chosen with margin: every other triple of seeds tried
(ring8: 3-11, digits: 3-8) met the bar as well, so a pass does not hang on these seeds' luck.
"""

import pytest
import torch

from ganlab.config import TrialConfig
from ganlab.trial import Trial

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    # Small models train 3-10x faster on one thread than on two when the CPU is shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_ring8_captures_the_modes_with_high_quality_samples():
    config = TrialConfig.from_dict(
        {
            "dataset": "ring8",
            "loss": "non-saturating",
            "depth": 2,  # a third layer let one seed in three collapse to 3 modes
            "batch_size": 256,  # big batches see every mode each step: coverage by 2k steps
            "lr_g": 1e-3,  # 2-D data takes a fast rate; at 2e-4 G has barely moved by 5k steps
            "lr_d": 1e-3,
            "ema": 0.995,  # G's raw weights jitter around the modes; their average sits on them
            "steps": 7000,
            "eval_every": 7000,
            "seeds": [0, 1, 2],
        }
    )
    last = Trial(config).run()[-1].seeds
    modes = sorted(seed.metrics["modes"] for seed in last.values())
    hq = sorted(seed.metrics["hq"] for seed in last.values())
    assert modes[1] >= 7, f"modes captured per seed: {modes}"
    assert hq[1] >= 0.8, f"high-quality share per seed: {hq}"


def test_digits_dcgan_lowers_fid_twentyfold():
    config = TrialConfig.from_dict(
        {
            "dataset": "digits",
            "arch": "dcgan",
            "loss": "non-saturating",
            "norm_g": "batch",  # the DCGAN paper's G; without it FID climbs again after 1.5k
            "ema": 0.99,  # smooths the step-to-step wobble of FID
            "steps": 2000,
            "eval_every": 2000,
            "seeds": [0, 1, 2],
            "metric": "fid",
        }
    )
    history = Trial(config).run()
    first, last = history[0].objective, history[-1].objective  # median FID over the seeds
    assert last <= first / 20, f"FID {first:.0f} -> {last:.0f}"
