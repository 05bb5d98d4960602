"""The batched execution (`ganlab.batched`) against the sequential one, seed by seed.

Both executions must give every seed the same numbers up to float rounding: the same random
draws (generator states compared bitwise), weights, buffers, EMA, Adam state, signals, metrics,
fate and diverged step, compared within this process. What "up to float rounding" allows after
a few Adam steps on tiny networks:

- a relative 1e-3 of the largest value of a kind (one network's weights, one Adam moment, one
  report's signals): the tiniest ResNets reach gradient norms of 1e4, where rounding counts;
- a few `lr` on weights and logits: a parameter whose gradient is zero in exact arithmetic
  (D's output bias under the Wasserstein loss, G's output bias under a batch-normalised D) gets
  a rounding-noise gradient, which Adam's normalisation turns into a step of up to `lr` in
  either direction, whichever kernel rounded;
- and a small `lr` keeps those noise steps small: some configurations are chaotic at these
  sizes (a ResNet whose D normalises 2x2 maps per instance turns one such flipped step of 2 lr
  at lr 1e-4 into a 30% change of an Adam moment two steps later).
"""

import copy
import operator

import pytest
import torch
from combinations import case_id, dataset_of, every_architecture_option, every_objective
from torch import nn

from ganlab import execution, initial, models, stacked
from ganlab.adam import BatchedAdam
from ganlab.config import ConfigError, TrialConfig
from ganlab.models import ArchConfig
from ganlab.reports import SeedReport
from ganlab.trial import Trial

LR = 1e-5
STEPS = 3
TINY = {"width": 8, "depth": 1, "z_dim": 4, "batch_size": 8, "n_eval": 50, "sample_keep": 4,
        "steps": STEPS, "eval_every": STEPS, "penalty_weight": 1.0, "lr_g": LR, "lr_d": LR,
        "seeds": [0, 1], "device": "cpu"}  # fmt: skip
WEIGHTS = ("g", "d", "g_ema")
SCALE_REL = 1e-3  # of the largest value of a kind
NUDGE = 5 * LR * STEPS  # what Adam's steps on rounding noise can move a weight by

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**values) -> TrialConfig:
    return TrialConfig.from_dict({**TINY, **values})


def both(**values) -> tuple[Trial, Trial]:
    """The sequential and the batched trial of one configuration, each run to its end."""
    trials = tuple(Trial(config(**values, execution=e)) for e in ("sequential", "batched"))
    for trial in trials:
        trial.run()
    return trials


# --- whole trials ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", every_objective() + every_architecture_option(), ids=case_id)
def test_every_combination_trains_each_seed_as_the_sequential_execution(values):
    sequential, batched = both(dataset=dataset_of(values["arch"]), **values)
    assert (sequential.execution, batched.execution) == ("sequential", "batched")
    assert_same_history(batched.history, sequential.history)
    for ours, theirs in zip(batched.state_dict()["seeds"], sequential.state_dict()["seeds"],
                            strict=True):  # fmt: skip
        assert_same_seed_state(ours, theirs)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_a_seed_that_diverges_mid_run_diverges_at_the_same_step_and_the_others_go_on(arch):
    trials = {}
    for mode in ("sequential", "batched"):
        trial = Trial(config(dataset=dataset_of(arch), arch=arch, ema=0.9, seeds=[0, 1, 2],
                             steps=6, eval_every=2, execution=mode))  # fmt: skip
        trial.run(until=2)
        with torch.no_grad():  # seed 1's D goes bad: its next step's logits are NaN
            next(trial.seeds[1].d.parameters()).view(-1)[0] = float("nan")
        trial.run()
        trials[mode] = trial
    sequential, batched = trials["sequential"], trials["batched"]
    assert batched.history[-1].seeds[1] == SeedReport(diverged_step=3)
    assert_same_history(batched.history, sequential.history)
    assert [s.seed for s in batched._batched.seeds] == [0, 2], "the dead seed is not stacked"
    states = zip(batched.state_dict()["seeds"], sequential.state_dict()["seeds"], strict=True)
    for ours, theirs in states:
        assert_same_seed_state(ours, theirs)


def test_a_dead_seed_takes_no_update_in_the_batched_step():
    trial = Trial(config(ema=0.9, steps=20, eval_every=10, execution="batched"))
    trial.run(until=10)
    before = copy.deepcopy(trial.state_dict()["seeds"])
    trial.seeds[1].dead.fill_(1.0)  # flagged on the device, as a step's check flags it
    trial.train(5)
    after = trial.state_dict()["seeds"]
    for part in ("g", "d", "g_ema", "opt_g", "opt_d"):  # weights, Adam moments and steps, EMA
        assert _tensors(after[1][part]) == _tensors(before[1][part]), part
        assert _tensors(after[0][part]) != _tensors(before[0][part]), part
    assert float(trial.seeds[1].dead_steps) == 5
    trial.evaluate()
    assert trial.history[-1].seeds[1] == SeedReport(diverged_step=11)


@pytest.mark.parametrize("first,then", [("sequential", "batched"), ("batched", "sequential")])
def test_a_checkpoint_of_one_execution_resumes_in_the_other(tmp_path, first, then):
    values = {"dataset": "digits", "arch": "dcgan", "norm_g": "batch", "spectral_norm": True,
              "ema": 0.9, "penalty": "gp", "steps": 6, "eval_every": 3}  # fmt: skip
    whole = Trial(config(**values, execution=first))
    whole.run()
    part = Trial(config(**values, execution=first))
    part.run(until=3)
    part.save(tmp_path / "state.pt")
    resumed = Trial(config(**values, execution=then))
    resumed.load(tmp_path / "state.pt")
    assert resumed.reseeds == []
    resumed.run()
    assert_same_history(resumed.history, whole.history)
    for ours, theirs in zip(resumed.state_dict()["seeds"], whole.state_dict()["seeds"],
                            strict=True):  # fmt: skip
        assert_same_seed_state(ours, theirs)


def test_both_executions_write_one_checkpoint_layout():
    sequential, batched = both(ema=0.9, norm_g="batch", spectral_norm=True)
    ours, theirs = batched.state_dict(), sequential.state_dict()
    assert _layout(ours) == _layout(theirs)


# --- evaluation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,arch", [("ring8", "mlp"), ("digits", "dcgan")])
def test_one_extractor_pass_over_every_seed_measures_each_as_alone(dataset, arch):
    trial = Trial(config(dataset=dataset, arch=arch, seeds=[0, 1, 2], execution="batched"))
    trial.train(2)
    fakes = trial._generate_seeds(trial.seeds)
    alone = [trial._generate(s) for s in _rewound(trial)]
    for stacked_fake, fake in zip(fakes, alone, strict=True):  # the same draws, the same G
        assert _list(stacked_fake) == pytest.approx(_list(fake), abs=1e-5)
    fakes[1] = torch.full_like(fakes[1], float("nan"))
    together = trial.evaluator.evaluate_seeds(fakes)
    assert together[1] is None, "a seed with non-finite samples: the trial marks it diverged"
    for i in (0, 2):
        one = trial.evaluator(fakes[i])
        assert together[i].keys() == one.keys()
        for name, value in together[i].items():
            assert value == pytest.approx(one[name], rel=1e-5, abs=1e-9), name


def _rewound(trial: Trial) -> list:
    """The trial's seeds with their evaluation streams back where `_generate_seeds` found
    them (its draws are each seed's own: a fresh trial's streams are those)."""
    fresh = Trial(trial.config)
    for s, new in zip(trial.seeds, fresh.seeds, strict=True):
        s.eval_rng.set_state(new.eval_rng.get_state())
    return trial.seeds


def test_trials_that_start_alike_share_their_step_0_evaluation(monkeypatch):
    initial.clear()
    measured = Trial(config(lr_g=3e-4))  # measures its own step 0
    measured.run()
    initial.clear()
    Trial(config(lr_g=1e-4, loss="hinge")).run()  # other loss and rates, the same generators
    taker = Trial(config(lr_g=3e-4))
    monkeypatch.setattr(taker, "_evaluate_seeds", _fail)
    taker.evaluate()  # step 0: taken, with the evaluation streams where measuring leaves them
    monkeypatch.undo()
    taker.run()
    assert _without_time(taker.history) == _without_time(measured.history)
    assert [s.eval_rng.get_state().tolist() for s in taker.seeds] == [
        s.eval_rng.get_state().tolist() for s in measured.seeds
    ]
    assert {k: v.tolist() for k, v in taker.samples.items()} == {
        k: v.tolist() for k, v in measured.samples.items()
    }
    other_arch = Trial(config(lr_g=3e-4, width=16))
    monkeypatch.setattr(other_arch, "_evaluate_seeds", _fail)
    with pytest.raises(AssertionError, match="ran again"):  # other generators: measured anew
        other_arch.evaluate()


def _fail(*args):
    raise AssertionError("the step-0 evaluation ran again")


def _without_time(history):
    import dataclasses

    return [dataclasses.replace(r, wall_s=0.0, samples_per_s=0.0) for r in history]


# --- the stacked network and its optimiser ------------------------------------------------------

NORM_PAIRS = [("none", "none"), ("batch", "batch"), ("layer", "instance"), ("instance", "layer")]
SHAPES = {"mlp": (2,), "dcgan": (1, 8, 8), "resnet": (3, 8, 8)}


@pytest.mark.parametrize("norms", NORM_PAIRS, ids="-".join)
@pytest.mark.parametrize("spectral", [False, True], ids=["plain", "sn"])
@pytest.mark.parametrize("pack", [1, 2])
@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_a_stacked_network_computes_each_seeds_network(arch, pack, spectral, norms):
    cfg = ArchConfig(arch, 8, 2, 4, norms[0], norms[1], spectral, pack)
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(models.build(cfg, SHAPES[arch]))
    gs, ds = [g for g, _ in nets], [d for _, d in nets]
    g, d = stacked.stack(gs), stacked.stack(ds)
    z = [torch.randn(6, 4) for _ in gs]
    fakes = [net(x) for net, x in zip(gs, z, strict=True)]
    logits = [net(x) for net, x in zip(ds, fakes, strict=True)]
    stacked_fakes = g(g.layout.join(z))
    stacked_logits = d(stacked_fakes)
    sum(out.square().sum() for out in logits).backward()
    stacked_logits.square().sum().backward()

    for k in range(3):
        assert _list(g.layout.per_seed(stacked_fakes)[k]) == pytest.approx(_list(fakes[k]),
                                                                          abs=1e-5)  # fmt: skip
        scale = _largest(logits[k])
        assert _list(stacked_logits[k]) == pytest.approx(_list(logits[k]), rel=1e-4,
                                                         abs=1e-5 * scale)  # fmt: skip
    for net, nets_ in ((g, gs), (d, ds)):
        grads = [[p.grad for p in _params(net, m)] for m in nets_]
        expected = torch.stack([torch.cat([t.reshape(-1) for t in row]) for row in grads])
        # Instance norm over ResNet's 2x2 maps divides by tiny deviations: float32 rounding
        # counts relative to the largest gradient of the network.
        scale = _largest(expected)
        assert _list(net.flat.grad) == pytest.approx(_list(expected), rel=1e-4,
                                                     abs=1e-4 * scale)  # fmt: skip
        for layer in net.layers:  # BatchNorm statistics and power iterations moved alike
            for name, path in layer.buffer_paths.items():
                for k, module in enumerate(nets_):
                    own = operator.attrgetter(path)(module)
                    assert _list(getattr(layer, name)[k]) == pytest.approx(_list(own), abs=1e-6)


def test_gather_and_scatter_are_the_seeds_own_parameters_in_rows():
    torch.manual_seed(0)
    nets = [models.build(ArchConfig("dcgan", 4, 1, 4, "batch", "none", True, 1), (1, 8, 8))[1]
            for _ in range(2)]  # fmt: skip
    net = stacked.stack(nets)
    assert net.flat.shape == (2, sum(p.numel() for p in nets[0].parameters()))
    doubled = net.flat.detach() * 2
    net.scatter(doubled, nets)
    assert _list(net.gather(nets)) == _list(doubled)


def test_batched_adam_is_fused_adam_with_a_per_seed_skip():
    torch.manual_seed(0)
    own = [torch.randn(50, requires_grad=True) for _ in range(3)]
    optimizers = [torch.optim.Adam([p], lr=2e-4, betas=(0.5, 0.999), fused=True) for p in own]
    flat = torch.stack([p.detach() for p in own]).requires_grad_(True)
    adam = BatchedAdam(flat, 2e-4, (0.5, 0.999))
    for step in range(4):
        grads = torch.randn(3, 50)
        dead = torch.tensor([0.0, 0.0, float(step >= 2)])
        grads[2] = grads[2] if step < 2 else float("nan")  # a dead seed's gradients: garbage
        for k, (p, optimizer) in enumerate(zip(own, optimizers, strict=True)):
            p.grad, optimizer.found_inf = grads[k].clone(), dead[k]
            optimizer.step()
        flat.grad = grads
        adam.step(dead == 0)
    for k, (p, optimizer) in enumerate(zip(own, optimizers, strict=True)):
        state = optimizer.state[p]
        assert _list(flat[k]) == pytest.approx(_list(p), rel=1e-6, abs=1e-9)
        for moment in ("exp_avg", "exp_avg_sq"):  # the same arithmetic: one rounding at most
            assert _list(getattr(adam, moment)[k]) == pytest.approx(_list(state[moment]),
                                                                    rel=1e-6)  # fmt: skip
        assert float(adam.steps[k]) == float(state["step"]) == (4 if k < 2 else 2)


# --- cost and choice ----------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,arch", [("ring8", "mlp"), ("digits", "dcgan")])
def test_a_batched_step_dispatches_about_as_many_ops_for_eight_seeds_as_for_one(dataset, arch):
    counts = {}
    for k in (1, 8):
        trial = Trial(config(dataset=dataset, arch=arch, seeds=list(range(k)),
                             execution="batched"))  # fmt: skip
        trial.train(1)
        with execution.OpCount() as count:
            trial._batched.step()
        counts[k] = count.n
    assert counts[8] <= 1.5 * counts[1], counts


def test_the_rule_batches_where_it_was_measured_faster():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    mlp, dcgan = config(seeds=[0, 1, 2]), config(dataset="digits", arch="dcgan", seeds=[0, 1, 2])
    assert execution.choose(mlp, cpu) == "batched"
    assert execution.choose(mlp.replace(seeds=[0]), cpu) == "sequential"
    assert execution.choose(dcgan, cpu) == "sequential"
    assert execution.choose(dcgan, cuda) == execution.choose(mlp, cuda) == "batched"
    assert execution.choose(dcgan.replace(execution="batched"), cpu) == "batched"
    assert execution.choose(mlp.replace(execution="sequential"), cuda) == "sequential"
    assert Trial(mlp).execution == "batched"


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no CUDA")
def test_cuda_graphs_are_refused_without_cuda_naming_the_field():
    with pytest.raises(ConfigError) as error:
        config(cuda_graphs=True)
    assert error.value.field == "cuda_graphs"
    assert "CUDA" in error.value.message
    assert not TrialConfig().cuda_graphs


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no CUDA")
def test_ganlab_trial_refuses_cuda_graphs_without_cuda_with_exit_2(capsys):
    from ganlab.cli import main

    assert main(["trial", "--cuda-graphs", "true", "--steps", "1"]) == 2
    assert "cuda_graphs" in capsys.readouterr().err


def test_penalty_none_runs_no_penalty_however_heavy_its_weight():
    heavy = Trial(config(penalty="none", penalty_weight=10.0, execution="sequential"))
    assert heavy.penalty is None
    assert Trial(config(penalty="gp", penalty_weight=0.0)).penalty is None
    light = Trial(config(penalty="none", penalty_weight=0.0, execution="sequential"))
    heavy.train(2)
    light.train(2)
    assert _tensors(heavy.state_dict()["seeds"]) == _tensors(light.state_dict()["seeds"])


# --- comparisons --------------------------------------------------------------------------------


def assert_same_history(ours, theirs) -> None:
    """`ours` reports as `theirs` did: fates and flags equal, numbers close."""
    assert [r.step for r in ours] == [r.step for r in theirs]
    for mine, other in zip(ours, theirs, strict=True):
        assert (mine.div_rate, mine.collapse_rate, mine.last) == (
            other.div_rate, other.collapse_rate, other.last)  # fmt: skip
        assert mine.seeds.keys() == other.seeds.keys()
        for seed, report in mine.seeds.items():
            expected = other.seeds[seed]
            assert (report.diverged_step, report.collapsed) == (
                expected.diverged_step, expected.collapsed), seed  # fmt: skip
            for kind in ("signals", "metrics"):
                values, want = getattr(report, kind), getattr(expected, kind)
                assert values.keys() == want.keys(), kind
                allowed = SCALE_REL * max(map(abs, want.values()), default=0.0) + NUDGE
                for name, value in values.items():
                    assert value == pytest.approx(want[name], rel=SCALE_REL, abs=allowed), name


def assert_same_seed_state(ours: dict, theirs: dict) -> None:
    """One seed's checkpoint state as the other execution left it."""
    for key in ("seed", "rng", "eval_rng", "rng_device", "read_at", "diverged_step"):
        assert ours[key] == theirs[key], key
    for key in ("dead", "dead_steps"):
        assert float(ours[key]) == float(theirs[key]), key
    for part in WEIGHTS:
        if theirs[part] is None:
            assert ours[part] is None
            continue
        assert ours[part].keys() == theirs[part].keys()
        keys = list(theirs[part])
        _assert_kind_close([ours[part][k] for k in keys], [theirs[part][k] for k in keys],
                           NUDGE, part)  # fmt: skip
    for part in ("opt_d", "opt_g"):
        mine, other = ours[part]["state"], theirs[part]["state"]
        assert mine.keys() == other.keys()
        assert [float(mine[i]["step"]) for i in other] == [float(other[i]["step"]) for i in other]
        for moment in ("exp_avg", "exp_avg_sq"):
            _assert_kind_close([mine[i][moment] for i in other], [other[i][moment] for i in other],
                               0.0, f"{part}.{moment}")  # fmt: skip
    _assert_kind_close([ours["signals"]], [theirs["signals"]], NUDGE, "signals")


def _assert_kind_close(ours: list, theirs: list, nudge: float, what: str) -> None:
    """Every tensor of a kind within SCALE_REL of the kind's largest value, plus `nudge`."""
    allowed = SCALE_REL * max(_largest(t) for t in theirs if t.is_floating_point()) + nudge
    for i, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.shape == other.shape, (what, i)
        assert _list(mine) == pytest.approx(_list(other), rel=SCALE_REL, abs=allowed,
                                            nan_ok=True), (what, i)  # fmt: skip


def _largest(t: torch.Tensor) -> float:
    """The largest finite magnitude in `t` (a dead seed's weights may hold NaN)."""
    finite = t.detach()[torch.isfinite(t.detach())]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _list(t: torch.Tensor) -> list:
    return t.detach().double().flatten().tolist()


def _tensors(state) -> list:
    from torch.utils._pytree import tree_leaves

    return [t.tolist() for t in tree_leaves(state) if isinstance(t, torch.Tensor)]


def _layout(state):
    """The nest of keys, types and shapes of a state, without its values."""
    if isinstance(state, dict):
        return {k: _layout(v) for k, v in state.items() if k not in ("history", "samples")}
    if isinstance(state, list):
        return [_layout(v) for v in state]
    if isinstance(state, torch.Tensor):
        return ("tensor", state.dtype, tuple(state.shape))
    return type(state).__name__


def _params(net: stacked.StackedNet, module: nn.Module) -> list[torch.Tensor]:
    return [operator.attrgetter(path)(module) for path in net.slots]


def test_the_comparison_tells_another_seed_or_a_wrong_moment():
    # The tolerances above are loose enough for rounding, not for a mistake.
    trial = Trial(config())
    trial.run()
    a, b = trial.state_dict()["seeds"]
    assert_same_seed_state(copy.deepcopy(a), a)
    other = {**b, "seed": a["seed"], "rng": a["rng"], "eval_rng": a["eval_rng"]}
    with pytest.raises(AssertionError):
        assert_same_seed_state(other, a)
    wrong = copy.deepcopy(a)
    wrong["opt_d"]["state"][0]["exp_avg"].mul_(1.01)  # one moment 1 % off
    with pytest.raises(AssertionError, match="opt_d.exp_avg"):
        assert_same_seed_state(wrong, a)
