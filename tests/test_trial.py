import copy
import dataclasses
import itertools
import json
import math

import pytest
import torch
from devicecheck import as_written_on_a_card
from torch.utils._pytree import tree_leaves

from ganlab import data as datasets
from ganlab.config import ConfigError, TrialConfig
from ganlab.devices import generator_state, reseed_value, set_generator_state, state_device_type
from ganlab.losses import LOSSES
from ganlab.metrics.assets import build_assets
from ganlab.metrics.fid_infinity import features_to_fid_infinity
from ganlab.models import ARCHITECTURES
from ganlab.penalties import PENALTIES
from ganlab.reports import SeedReport
from ganlab.trial import STREAMS, Trial

TINY = {"width": 8, "depth": 1, "z_dim": 4, "batch_size": 8, "n_eval": 50, "sample_keep": 4}

# One torch thread: on a shared 2-core machine two threads of these tiny kernels wait on each
# other (a 3-step ResNet trial took 22 s instead of 0.2 s while another job used a core).
pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.mark.parametrize("execution", ["batched", "sequential"])
@pytest.mark.parametrize("recorded", [True, False], ids=["types-recorded", "older-checkpoint"])
def test_restored_trial_continues_bit_identically(tmp_path, recorded, execution):
    config = tiny(steps=30, eval_every=10, ema=0.9, penalty="gp", penalty_weight=1.0,
                  execution=execution)  # fmt: skip
    whole = Trial(config)
    whole.run()

    first = Trial(config)
    first.run(until=20)
    state = first.state_dict()
    assert {s["rng_device"] for s in state["seeds"]} == {"cpu"}
    if not recorded:  # written before the generators' device types were: told by length
        for seed in state["seeds"]:
            del seed["rng_device"], seed["eval_rng_device"]
        del state["reseeds"], state["config"]["fp32_precision"], state["config"]["deterministic"]
        del state["config"]["execution"], state["config"]["cuda_graphs"]
    torch.save(state, tmp_path / "state.pt")
    second = Trial(config)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    for a, b in zip(first.seeds, second.seeds, strict=True):  # the same device type: restored
        for stream in STREAMS:
            assert generator_state(getattr(a, stream)) == generator_state(getattr(b, stream))
    second.run()

    assert second.reseeds == []
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
    # Sequential: the hook goes bad on the seed's own D (the batched execution's stacked D runs
    # instead of it there; tests/test_batched.py flags a seed dead in that one).
    trial = Trial(tiny(steps=20, eval_every=10, ema=0.9, seeds=[0, 1], execution="sequential"))
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


# The seeds `devices.reseed_value` gives each stream of seeds 0-2 at step 20: the first 8 bytes of
# SHA-256("ganlab-reseed/{seed}/20/{stream}"), top bit cleared.
RESEEDS_AT_20 = {
    (0, "rng"): 7993345784963969963, (0, "eval_rng"): 5415164677509414387,
    (1, "rng"): 732672225691291218, (1, "eval_rng"): 5277629708038293141,
    (2, "rng"): 8356739852318691123, (2, "eval_rng"): 6213734417983877092,
}  # fmt: skip


@pytest.mark.parametrize("recorded", [True, False], ids=["type-recorded", "type-from-length"])
def test_a_card_checkpoint_resumes_on_a_cpu_with_its_streams_reseeded(tmp_path, recorded):
    config = tiny(steps=30, eval_every=10)
    card = Trial(config)
    card.run(until=20)
    torch.save(as_written_on_a_card(card.state_dict(), recorded), tmp_path / "card.pt")

    cpu = Trial(config)
    cpu.load(tmp_path / "card.pt")  # a CUDA generator's 16 bytes: a CPU one refuses them
    moved = {"step": 20, "from": "cuda", "to": "cpu"}
    assert cpu.reseeds == [moved]
    for s in cpu.seeds:
        for stream in STREAMS:
            assert reseed_value(s.seed, 20, stream) == RESEEDS_AT_20[s.seed, stream]
            reseeded = torch.Generator().manual_seed(RESEEDS_AT_20[s.seed, stream])
            assert generator_state(getattr(s, stream)) == generator_state(reseeded)
    for a, b in zip(card.seeds, cpu.seeds, strict=True):  # everything else as it was saved
        assert _tensors(a.g.state_dict()) == _tensors(b.g.state_dict())
        assert _tensors(a.opt_d.state_dict()) == _tensors(b.opt_d.state_dict())
    cpu.run()
    assert [r.step for r in cpu.history] == [0, 10, 20, 30]
    assert [r.reseeds for r in cpu.history] == [[], [], [], [moved]]
    assert (cpu.history[-1].device, cpu.history[-1].device_name) == ("cpu", "cpu")

    again = Trial(config)  # the reseed is a function of the checkpoint: the same run again
    again.load(tmp_path / "card.pt")
    again.run()
    assert _without_time(again.history) == _without_time(cpu.history)

    cpu.save(tmp_path / "cpu.pt")  # saved and loaded on the same device type: kept, not added
    later = Trial(config)
    later.load(tmp_path / "cpu.pt")
    assert later.reseeds == [moved]
    assert later.state_dict()["reseeds"] == [moved]
    for a, b in zip(cpu.seeds, later.seeds, strict=True):
        for stream in STREAMS:
            assert generator_state(getattr(a, stream)) == generator_state(getattr(b, stream))


def test_a_random_state_of_unknown_size_is_refused():
    assert state_device_type(bytes(5056)) == "cpu"
    assert state_device_type(bytes(16)) == "cuda"
    with pytest.raises(ValueError, match="12 bytes: neither a CPU generator's"):
        state_device_type(bytes(12))


def test_evaluations_before_the_last_use_the_rung_sample_count():
    trial = Trial(tiny(steps=4, eval_every=2, n_eval_rung=20))
    trial.run()
    counts = [json.loads(report.protocol)["n_fake"] for report in trial.history]
    assert counts == [20, 20, 50]  # steps 0 and 2 with the rung count, the last with n_eval
    assert trial.history[-1].last
    assert {len(s) for s in trial.samples.values()} == {4}


@pytest.mark.parametrize("metric", ["good_modes", "fid_inf"])
def test_fid_infinity_is_measured_at_the_last_evaluation_or_where_it_is_the_objective(metric):
    mode = "max" if metric == "good_modes" else "min"
    trial = Trial(tiny(steps=4, eval_every=2, seeds=[0, 1], metric=metric, mode=mode))
    trial.run()
    measured = [all("fid_inf" in r.metrics for r in report.seeds.values())
                for report in trial.history]  # fmt: skip
    assert measured == ([False, False, True] if metric == "good_modes" else [True, True, True])
    # The last one is the fit over the protocol's sizes of the very fakes measured then.
    fakes = trial._generate_seeds(trial.seeds)  # the next draws: measured here both ways
    evaluator = trial.evaluator
    for fake, got in zip(fakes, evaluator.evaluate_seeds(fakes), strict=True):
        features = evaluator.extractor(fake.to(evaluator.device)).features
        sizes, cov_sqrt = evaluator.protocol.fid_inf_n, evaluator._real_cov_sqrt
        alone = features_to_fid_infinity(evaluator._real_stats, features, sizes, cov_sqrt)
        assert got["fid_inf"] == pytest.approx(float(alone), rel=1e-9, abs=1e-12)
        assert "fid_inf" not in evaluator(fake, fid_inf=False)


@pytest.mark.parametrize("count", [5, 51])
def test_a_rung_count_outside_10_to_n_eval_is_refused(count):
    with pytest.raises(ConfigError) as error:
        tiny(n_eval_rung=count)
    assert error.value.field == "n_eval_rung"


def test_a_trial_handed_no_protocol_for_its_rung_count_says_so():
    assets = build_assets(datasets.load("ring8"), 50)
    Trial(tiny(), assets=assets)  # one count, the one handed over
    with pytest.raises(ValueError, match=r"20 fakes.*\[50\] only.*n_eval_rung"):
        Trial(tiny(n_eval_rung=20), assets=assets)
    both = [assets, build_assets(datasets.load("ring8"), 20)]
    assert Trial(tiny(n_eval_rung=20), assets=both).rung_evaluator.n_fake == 20


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_a_checkpoint_loads_with_mutable_fields_changed_and_they_take_effect(execution):
    config = tiny(steps=30, eval_every=10, ema=0.9, execution=execution, seeds=[0, 1])
    first = Trial(config)
    first.run(until=10)
    state = first.state_dict()
    new = {"lr_d": 1e-3, "beta1": 0.3, "beta2": 0.95, "ema": 0.5}
    second = Trial(config.replace(**new))
    changed = second.load_state_dict(state, mutable=("lr_d", "lr_g", "beta1", "beta2", "ema"))
    assert changed == {k: [getattr(config, k), v] for k, v in new.items()}
    assert second.step == 10 and second.history[-1].step == 10
    for a, b in zip(first.seeds, second.seeds, strict=True):
        for p, q in zip(a.g.parameters(), b.g.parameters(), strict=True):
            assert torch.equal(p, q)
        assert [g["lr"] for g in b.opt_d.param_groups] == [1e-3]
        assert [g["lr"] for g in b.opt_g.param_groups] == [config.lr_g]
        assert {g["betas"] for g in [*b.opt_g.param_groups, *b.opt_d.param_groups]} == {
            (0.3, 0.95)
        }
    before = [[p.clone() for p in s.g_ema.parameters()] for s in second.seeds]
    second.train(1)
    if execution == "batched":
        engine = second._batched
        assert engine.opt_d.lr.tolist() == [1e-3, 1e-3]
        assert engine.opt_g.lr.tolist() == [config.lr_g] * 2
        assert (engine.opt_d.beta1, engine.opt_d.beta2) == (0.3, 0.95)
    for s, old in zip(second.seeds, before, strict=True):  # ema += (1 - 0.5) (g - ema)
        for e, p, o in zip(s.g_ema.parameters(), s.g.parameters(), old, strict=True):
            expected = (o + 0.5 * (p - o)).reshape(-1).tolist()
            assert e.reshape(-1).tolist() == pytest.approx(expected, abs=1e-6)


def test_a_checkpoint_of_another_configuration_is_still_refused():
    config = tiny(steps=20, eval_every=10)
    first = Trial(config)
    first.run(until=10)
    with pytest.raises(ValueError, match="different configuration"):
        Trial(config.replace(width=16)).load_state_dict(first.state_dict(), mutable=("lr_d",))
    with pytest.raises(ValueError, match="different configuration"):
        Trial(config.replace(lr_d=1e-3)).load_state_dict(first.state_dict())
