import itertools
import math

import pytest
import torch

from ganlab.config import TrialConfig
from ganlab.losses import LOSSES
from ganlab.models import ARCHITECTURES
from ganlab.objective import robust_objective
from ganlab.penalties import PENALTIES
from ganlab.trial import Trial

TINY = {"width": 8, "depth": 1, "z_dim": 4, "batch_size": 8, "n_eval": 50, "sample_keep": 4}


def tiny(**values) -> TrialConfig:
    return TrialConfig.from_dict({**TINY, **values})


@pytest.mark.parametrize(
    "loss,penalty,arch", list(itertools.product(sorted(LOSSES), sorted(PENALTIES), ARCHITECTURES))
)
def test_every_loss_penalty_and_architecture_trains(loss, penalty, arch):
    dataset = "ring8" if arch == "mlp" else "digits"
    clip = 0.05 if loss == "wasserstein" and penalty == "none" else 0.0
    config = tiny(dataset=dataset, arch=arch, loss=loss, penalty=penalty, clip=clip,
                  penalty_weight=1.0, steps=3, eval_every=3, seeds=[0], d_steps=2)  # fmt: skip
    trial = Trial(config)
    trial.train(3)
    (seed,) = trial.seeds
    assert seed.alive
    signals = seed.signals / seed.signal_steps
    assert seed.signal_steps == 3 and torch.isfinite(signals).all()
    if clip:
        clip32 = torch.tensor(clip).item()  # the clip as float32 weights hold it
        assert max(p.abs().max().item() for p in seed.d.parameters()) == pytest.approx(clip32)


def test_restored_trial_continues_bit_identically(tmp_path):
    config = tiny(steps=30, eval_every=10, ema=0.9, penalty="gp", penalty_weight=1.0)
    whole = Trial(config)
    whole.run()

    first = Trial(config)
    first.run(until=20)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = Trial(config)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    second.run()

    assert [r["step"] for r in second.history] == [0, 10, 20, 30]
    assert _without_time(second.history) == _without_time(whole.history)
    for a, b in zip(whole.seeds, second.seeds, strict=True):
        for p, q in zip(a.g_ema.parameters(), b.g_ema.parameters(), strict=True):
            assert torch.equal(p, q)


def test_trials_are_deterministic_per_seed_and_differ_across_seeds():
    a, b = Trial(tiny(steps=10, eval_every=10)), Trial(tiny(steps=10, eval_every=10))
    a.run()
    b.run()
    assert _without_time(a.history) == _without_time(b.history)
    fids = [a.history[-1]["seeds"][str(s)]["fid"] for s in (0, 1, 2)]
    assert len(set(fids)) == 3


def test_a_blown_up_configuration_marks_seeds_diverged_without_raising():
    # default-sized networks: a tiny one can saturate at lr 10 without blowing up
    config = TrialConfig.from_dict({"lr_g": 10.0, "lr_d": 10.0, "steps": 200, "eval_every": 50})
    trial = Trial(config)
    history = trial.run()
    last = history[-1]
    assert last["div_rate"] == pytest.approx(1.0)
    assert all(s["diverged"] and s["diverged_step"] <= 200 for s in last["seeds"].values())
    assert last["objective"] == pytest.approx(1e5)  # every seed counts as fid's worst
    assert last["last"] is True and math.isfinite(last["objective"])


def test_a_poisoned_seed_diverges_and_leaves_the_others_untouched():
    config = tiny(steps=40, eval_every=10)
    reference = Trial(config)
    reference.run()

    poisoned = Trial(config)
    poisoned.run(until=20)
    with torch.no_grad():
        next(poisoned.seeds[1].g.parameters()).view(-1)[0] = float("nan")
    poisoned.run()

    last, ref = poisoned.history[-1], reference.history[-1]
    assert last["seeds"]["1"] == {"diverged": True, "diverged_step": 21}
    assert last["div_rate"] == pytest.approx(1 / 3)
    for seed in ("0", "2"):
        assert last["seeds"][seed] == ref["seeds"][seed]


@pytest.mark.parametrize(
    "values,mode,expected",
    [
        ([3.0, 1.0, 2.0], "min", 2.0),
        ([3.0, None, 2.0], "min", 3.0),  # a diverged seed counts as the worst: median(2, 3, 1e5)
        ([None, None, 2.0], "min", 1e5),
        ([float("nan"), 1.0], "min", (1.0 + 1e5) / 2),
    ],
)
def test_robust_objective(values, mode, expected):
    per_seed = {
        str(i): ({"diverged": True} if v is None else {"fid": v, "diverged": False})
        for i, v in enumerate(values)
    }
    assert robust_objective(per_seed, "fid", mode) == pytest.approx(expected)


def _without_time(history):
    drop = ("wall_s", "samples_per_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in history]
