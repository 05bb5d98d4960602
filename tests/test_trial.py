import copy
import dataclasses
import itertools
import math

import pytest
import torch
from torch.utils._pytree import tree_leaves

from ganlab.config import TrialConfig
from ganlab.devices import generator_state, set_generator_state
from ganlab.losses import LOSSES
from ganlab.models import ARCHITECTURES
from ganlab.penalties import PENALTIES
from ganlab.reports import SeedReport
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
    assert seed.dead_steps == 0 and torch.isfinite(seed.signals).all()
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

    assert [r.step for r in second.history] == [0, 10, 20, 30]
    assert _without_time(second.history) == _without_time(whole.history)
    for a, b in zip(whole.seeds, second.seeds, strict=True):
        for p, q in zip(a.g_ema.parameters(), b.g_ema.parameters(), strict=True):
            assert torch.equal(p, q)


def test_trials_are_deterministic_per_seed_and_differ_across_seeds():
    a, b = Trial(tiny(steps=10, eval_every=10)), Trial(tiny(steps=10, eval_every=10))
    a.run()
    b.run()
    assert _without_time(a.history) == _without_time(b.history)
    fids = [a.history[-1].seeds[s].metrics["fid"] for s in (0, 1, 2)]
    assert len(set(fids)) == 3


def test_a_blown_up_configuration_marks_seeds_diverged_without_raising():
    # default-sized networks: a tiny one can saturate at lr 10 without blowing up
    config = TrialConfig.from_dict({"lr_g": 10.0, "lr_d": 10.0, "steps": 200, "eval_every": 50})
    trial = Trial(config)
    history = trial.run()
    last = history[-1]
    assert last.div_rate == pytest.approx(1.0)
    assert all(s.diverged and s.diverged_step <= 200 for s in last.seeds.values())
    assert last.objective == pytest.approx(1e5)  # every seed counts as fid's worst
    assert last.last is True and math.isfinite(last.objective)


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
    assert last.seeds[1] == SeedReport(diverged_step=21)
    assert last.div_rate == pytest.approx(1 / 3)
    for seed in (0, 2):
        assert last.seeds[seed] == ref.seeds[seed]


def _without_time(history):
    return [dataclasses.replace(r, wall_s=0.0, samples_per_s=0.0) for r in history]


def test_a_diverged_seed_takes_no_update_from_its_bad_step_on():
    trial = Trial(tiny(steps=20, eval_every=10, ema=0.9, seeds=[0, 1]))
    trial.run(until=10)
    bad = trial.seeds[1]
    before = copy.deepcopy(trial.state_dict()["seeds"][1])
    bad.d.register_forward_hook(lambda module, args, out: out * float("nan"))  # D goes bad
    trial.train(5)
    after = trial.state_dict()["seeds"][1]
    for part in ("g", "d", "g_ema", "opt_g", "opt_d"):  # weights, Adam moments and steps, EMA
        assert _tensors(after[part]) == _tensors(before[part]), part
    assert float(bad.dead) == 1.0 and bad.diverged_step is None  # flagged on the device only
    trial.evaluate()
    assert bad.diverged_step == 11  # read by the host at the evaluation
    last = trial.history[-1].seeds
    assert last[1] == SeedReport(diverged_step=11)
    assert not last[0].diverged and math.isfinite(last[0].signals["loss_d"])


def test_evaluation_samples_with_batchnorm_in_inference_mode():
    trial = Trial(tiny(dataset="digits", arch="dcgan", norm_g="batch", seeds=[0]))
    trial.train(3)
    (s,) = trial.seeds
    norms = [m for m in s.g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    running = [m.running_mean.clone() for m in norms]
    state = generator_state(s.eval_rng)
    fake = trial._generate(s)
    assert s.g.training, "back in training mode"
    assert all(torch.equal(m.running_mean, r) for m, r in zip(norms, running, strict=True))
    # A sample does not depend on the others drawn with it: the first 5, drawn alone, match.
    set_generator_state(s.eval_rng, state)
    s.g.eval()
    with torch.no_grad():
        alone = s.g(torch.randn(len(fake), 4, generator=s.eval_rng)[:5])
    assert alone.flatten().tolist() == pytest.approx(fake[:5].flatten().tolist(), abs=1e-6)
    assert trial.evaluator.protocol.sampling == "eval"


def _tensors(state) -> list:
    return [t.tolist() for t in tree_leaves(state) if isinstance(t, torch.Tensor)]
