"""GPU correctness without a GPU: whole trials on the `meta` device, audited for host contact.

A trial that passes here keeps every tensor on its device, mixes no devices and reads nothing
back to the host inside a training step or an evaluation's device stage: on a card it would run
the steps between two evaluations without a single synchronisation. See tests/devicecheck.py for
why `meta` and what the audit adds. The checks fail on the bug they were written for (data drawn
on the host with the trial's generator) when it is put back.
"""

import dataclasses
import importlib.util
import io
import operator
import pickle
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch
from combinations import case_id, dataset_of, every_architecture_option, every_objective
from devicecheck import (
    META,
    HostAudit,
    HostTouch,
    as_written_on_a_card,
    fused_on_meta,
    module_tensors,
    tensors,
)
from fake_datasets import write_cifar10, write_mnist

import ganlab.batched
import ganlab.data
import ganlab.devices
import ganlab.initial
import ganlab.trial
from ganlab import data as datasets
from ganlab.config import TrialConfig
from ganlab.devices import full_precision, numerics
from ganlab.metrics import Evaluator
from ganlab.metrics.extractors import load_extractor
from ganlab.models import ARCHITECTURES
from ganlab.reports import EvalReport
from ganlab.trial import Trial

TINY = {"width": 8, "depth": 1, "z_dim": 4, "batch_size": 8, "n_eval": 50, "sample_keep": 4,
        "steps": 4, "eval_every": 2, "penalty_weight": 1.0, "device": "cpu"}  # fmt: skip
EXECUTIONS = ("sequential", "batched")
ROOT = Path(__file__).resolve().parents[1]


def config(**values) -> TrialConfig:
    return TrialConfig.from_dict({**TINY, **values})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fused_adam_on_meta():
    with fused_on_meta():
        yield


_WARM: set[tuple] = set()


def on_meta(cfg: TrialConfig) -> Trial:
    """`cfg`'s trial built on the meta device (its reference statistics cached on the CPU
    first: computing them reads features back, which meta tensors cannot)."""
    protocol = (cfg.dataset, cfg.n_eval, cfg.data_dir)
    if protocol not in _WARM:
        Evaluator(datasets.load(cfg.dataset, cfg.data_dir), cfg.n_eval)
        _WARM.add(protocol)
    return Trial(dataclasses.replace(cfg, device="meta"))


def assert_on_meta(trial: Trial) -> None:
    engine = trial._batched
    if engine is not None:  # the stacked seeds: weights, Adam state, EMA, buffers, fates
        held = [engine.g.flat, engine.d.flat, engine.dead, engine.signals, engine.dead_steps]
        held += [
            t
            for opt in (engine.opt_g, engine.opt_d)
            for t in vars(opt).values()
            if isinstance(t, torch.Tensor)
        ] + [*engine.g.buffers(), *engine.d.buffers()]
        held += [engine.ema] if engine.ema is not None else []
        assert {t.device.type for t in held} == {"meta"}
    for s in trial.seeds:
        state = [s.dead, s.signals, s.dead_steps]
        held = module_tensors(s.g, s.d, s.g_ema) + state
        held += tensors([s.opt_g.state_dict()["state"], s.opt_d.state_dict()["state"]])
        assert {t.device.type for t in held} == {"meta"}
    data = trial.data
    assert {t.device.type for t in tensors(list(vars(data).values()))} == {"meta"}


def _executions(cases: list[dict]) -> list:
    """Each case in the batched execution (a card's, and so meta's, choice), every other one in
    the sequential execution too: meta's convolutions are slow, and the options cycle."""
    return [pytest.param(values, EXECUTIONS if i % 2 == 0 else ("batched",), id=case_id(values))
            for i, values in enumerate(cases)]  # fmt: skip


@pytest.mark.parametrize(
    "values,modes", _executions(every_objective() + every_architecture_option())
)
def test_training_steps_stay_on_the_device_and_off_the_host(values, modes):
    for mode in modes:
        trial = on_meta(config(dataset=dataset_of(values["arch"]), seeds=[0, 1], execution=mode,
                               **values))  # fmt: skip
        with HostAudit():
            trial.train(2)
        assert trial.step == 2 and trial.execution == mode
        assert_on_meta(trial)


@pytest.mark.parametrize("mode", EXECUTIONS)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tf32_and_determinism_keep_training_on_the_device(arch, mode):
    cfg = config(dataset=dataset_of(arch), arch=arch, norm_g="batch", penalty="gp", ema=0.9,
                 seeds=[0, 1], fp32_precision="tf32", deterministic=True,
                 execution=mode)  # fmt: skip
    trial = on_meta(cfg)
    with HostAudit():
        trial.train(2)
    assert trial.step == 2
    assert_on_meta(trial)


@pytest.fixture(scope="module")
def torchvision_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_mnist(root, "FashionMNIST")
    write_cifar10(root)
    return root


@pytest.mark.parametrize(
    "dataset,arch,n_eval",
    [("ring8", "mlp", 50), ("grid25", "mlp", 50), ("digits", "dcgan", 50),
     ("stacked-digits", "dcgan", 50), ("mnist", "dcgan", 30), ("fashion-mnist", "resnet", 30),
     ("cifar10", "dcgan", 12)],
)  # fmt: skip
def test_evaluation_stays_on_the_device_until_its_one_read(
    dataset, arch, n_eval, torchvision_data, inception_weights, monkeypatch
):
    monkeypatch.setenv("GANLAB_INCEPTION_WEIGHTS", str(inception_weights))
    cfg = config(dataset=dataset, arch=arch, n_eval=n_eval, norm_g="batch", ema=0.9,
                 data_dir=str(torchvision_data), seeds=[0, 1])  # fmt: skip
    trial = on_meta(cfg)
    seed = trial.seeds[0]
    with HostAudit():
        trial.train(1)
        fake = trial._generate(seed)  # one seed's G
        values, finite = trial.evaluator.measure(fake)
        fakes = trial._generate_seeds(trial.seeds)  # every seed's, in one stacked G pass
        together = trial.evaluator.measure_seeds(fakes)  # and one extractor pass
    assert trial.execution == "batched"
    assert fake.device == META and fake.shape == (n_eval, *trial.data.shape)
    assert [tuple(f.shape) for f in fakes] == [(n_eval, *trial.data.shape)] * 2
    for measured, ok in [(values, finite), *together]:
        assert set(measured) == set(trial.evaluator.metrics)
        for value in [*measured.values(), ok]:
            assert value.device == META and value.shape == ()
    with pytest.raises(NotImplementedError, match="meta"):
        trial.evaluator(fake)  # its one read to the host: where a card would synchronise
    with pytest.raises(NotImplementedError, match="meta"):
        trial.evaluator.evaluate_seeds(fakes)  # all seeds' one read


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta: no data
def test_a_checkpoint_moves_between_devices(tmp_path):
    cfg = config(dataset="digits", arch="dcgan", norm_g="batch", ema=0.9, seeds=[0, 1])
    whole = Trial(cfg)
    whole.run()

    cpu = Trial(cfg)
    cpu.run(until=2)
    cpu.save(tmp_path / "cpu.pt")
    meta = on_meta(cfg)
    meta.load(tmp_path / "cpu.pt")  # written on one device, restored onto another
    assert_on_meta(meta)
    with HostAudit():
        meta.train(2)
    state = meta.state_dict()
    placed = {t.device.type for t in tensors(state["seeds"])}
    assert placed == {"meta"}, "every seed tensor where the trial runs; random states as bytes"
    assert all(isinstance(s[name], bytes) for s in state["seeds"] for name in ("rng", "eval_rng"))

    # A card's checkpoint names its device in the file: it opens here, on the CPU, and goes on.
    with written_by_a_card():
        cpu.save(tmp_path / "card.pt")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(tmp_path / "card.pt", weights_only=True)
    restored = Trial(cfg)
    restored.load(tmp_path / "card.pt")
    restored.run()
    assert _without_time(restored.history) == _without_time(whole.history)


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta: no data
def test_a_cards_checkpoint_on_meta_reseeds_its_cpu_generators(tmp_path):
    cfg = config(seeds=[0, 1])
    cpu = Trial(cfg)
    cpu.run(until=2)
    torch.save(as_written_on_a_card(cpu.state_dict()), tmp_path / "card.pt")
    meta = on_meta(cfg)
    meta.load(tmp_path / "card.pt")
    assert meta.reseeds == [{"step": 2, "from": "cuda", "to": "cpu"}]  # meta draws on the CPU
    with HostAudit():
        meta.train(2)
    assert meta.state_dict()["reseeds"] == meta.reseeds


def test_the_check_fails_when_data_is_drawn_on_the_host_again(monkeypatch):
    # The bug this check was written for: indices and noise drawn on the CPU with the trial's
    # generator, which a card refuses.
    def sample_on_host(self, n, generator):
        if self.centres is not None:
            idx = torch.randint(0, len(self.centres), (n,), generator=generator)
            return self.centres[idx] + self.sigma * torch.randn(n, 2, generator=generator)
        idx = torch.randint(0, len(self.train), (n, self.stacked), generator=generator)
        return ganlab.data.to_float(self.train[idx.flatten()])

    def stacked_on_host(data, layout, n, rngs):
        return layout.join([sample_on_host(data, n, rng) for rng in rngs])

    for dataset, arch in (("ring8", "mlp"), ("digits", "dcgan")):
        for mode, target, name, bug in (
            ("sequential", ganlab.data.Data, "sample", sample_on_host),
            ("batched", ganlab.batched, "sample_real", stacked_on_host),
        ):
            trial = on_meta(config(dataset=dataset, arch=arch, seeds=[0], execution=mode))
            trial.train(1)  # unaudited, correct: the trial itself is sound
            monkeypatch.setattr(target, name, bug)
            with pytest.raises(HostTouch, match="randint"), HostAudit():
                trial.train(1)
            monkeypatch.undo()


def test_the_check_fails_on_a_host_read_in_the_step(monkeypatch):
    # The divergence check as it was: one `bool()` per step, a synchronisation on a card.
    def check_on_host(s, signals, limits):
        if not bool((signals.abs() <= limits).all()):
            s.dead.fill_(1.0)

    for mode, target, name in (("sequential", ganlab.trial, "_check"),
                               ("batched", ganlab.batched.BatchedSeeds, "_check")):  # fmt: skip
        trial = on_meta(config(seeds=[0], execution=mode))
        monkeypatch.setattr(target, name, check_on_host)
        with pytest.raises(HostTouch, match="_local_scalar_dense"), HostAudit():
            trial.train(1)
        with pytest.raises(RuntimeError, match="meta"):
            trial.train(1)  # without the audit, meta itself refuses the read
        monkeypatch.undo()


def test_the_check_fails_on_mixed_devices(monkeypatch):
    trial = on_meta(config(seeds=[0], execution="sequential"))
    monkeypatch.setattr(Trial, "_noise", lambda self, n, rng: torch.randn(n, 4, generator=rng))
    with pytest.raises(RuntimeError, match="meta|device"):
        trial.train(1)
    # The batched step's batched matmuls take a host operand on meta without a word: the audit
    # is what refuses it there.
    trial = on_meta(config(seeds=[0], execution="batched"))
    monkeypatch.setattr(
        ganlab.batched,
        "noise",
        lambda layout, n, z_dim, rngs, device: layout.join(
            [torch.randn(n, z_dim, generator=r) for r in rngs]
        ),
    )
    with pytest.raises(HostTouch, match="randn"), HostAudit():
        trial.train(1)


class written_by_a_card:
    """`torch.save` inside tags every storage `cuda:0`, as a file written on a card is."""

    def __enter__(self):
        self.entry = (1, lambda obj: "cuda:0" if obj.device.type == "cpu" else None, _never)
        torch.serialization._package_registry.insert(0, self.entry)

    def __exit__(self, *exc):
        torch.serialization._package_registry.remove(self.entry)


def _never(obj, location):
    return None


def _without_time(history):
    return [dataclasses.replace(r, wall_s=0.0, samples_per_s=0.0) for r in history]


def test_the_history_pickles():
    # Reports cross process boundaries (Ray) and go into checkpoints loaded with weights_only.
    trial = Trial(config(seeds=[0]))
    trial.run()
    assert pickle.loads(pickle.dumps(trial.history)) == trial.history
    buffer = io.BytesIO()
    torch.save(trial.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)["history"]
    assert [EvalReport.from_dict(report) for report in saved] == trial.history


def test_feature_extractors_compute_in_full_float32(inception_weights, monkeypatch):
    # TF32 convolutions (cuDNN's default on Ampere cards) would change the features by card.
    monkeypatch.setenv("GANLAB_INCEPTION_WEIGHTS", str(inception_weights))
    flags = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = [f.fp32_precision for f in flags]
    for dataset, first_layer in (("digits", "model"), ("cifar10", "net.Conv2d_1a_3x3")):
        data = (
            datasets.load("digits")
            if dataset == "digits"
            else ganlab.data.Data("cifar10", (3, 8, 8), "inception", 4)
        )
        extractor = load_extractor(data)
        seen = []
        operator.attrgetter(first_layer)(extractor).register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append([f.fp32_precision for f in flags])
        )
        extractor(torch.zeros(2, *data.shape))
        assert seen and all(s == ["ieee", "ieee"] for s in seen), dataset
        assert [f.fp32_precision for f in flags] == before, "restored afterwards"


FP32_OPS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)


def _numerics_now() -> tuple:
    cudnn = torch.backends.cudnn
    precisions = tuple(op.fp32_precision for op in FP32_OPS)
    return (precisions, cudnn.deterministic, cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip


def test_each_trial_trains_and_evaluates_with_its_own_numerics():
    # Two trials taking turns in one process, as in a reused Ray worker: each step sees its own
    # trial's settings, evaluation sees IEEE float32, and the process's are back after each.
    outside = _numerics_now()
    seen: dict[str, list] = {"tf32": [], "ieee": []}
    trials = {}
    for precision, deterministic in (("tf32", True), ("ieee", False)):
        trial = Trial(config(seeds=[0], fp32_precision=precision, deterministic=deterministic))
        trial.seeds[0].d.register_forward_pre_hook(
            lambda module, args, seen=seen[precision]: seen.append(_numerics_now())
        )
        trials[precision] = trial
    for precision in ("tf32", "ieee", "tf32"):
        trials[precision].train(1)
        assert _numerics_now() == outside
    trials["tf32"].evaluate()  # D is not evaluated: sampling G shows the evaluation's settings
    assert seen["tf32"] and set(seen["tf32"]) == {(("tf32",) * 3, True, False, True, True)}
    assert seen["ieee"] and set(seen["ieee"]) == {(("ieee",) * 3, False, False, False, False)}
    assert _numerics_now() == outside


def test_evaluation_computes_in_ieee_float32_whatever_the_training_precision():
    ganlab.initial.clear()  # measured here, not taken from an earlier trial's step 0
    trial = Trial(config(seeds=[0], fp32_precision="tf32", deterministic=True))
    during = []
    trial.seeds[0].g.register_forward_pre_hook(lambda module, args: during.append(_numerics_now()))
    trial.evaluate()
    assert during and set(during) == {(("ieee",) * 3, True, False, True, True)}


def test_numerics_put_back_what_they_found_even_when_the_body_raises():
    outside = _numerics_now()
    with pytest.raises(KeyError), numerics("tf32", True), full_precision():
        assert _numerics_now()[0] == ("ieee",) * 3
        raise KeyError("out")
    assert _numerics_now() == outside


def test_ganlab_sets_tf32_through_one_api_only():
    # Reading a legacy flag (`cudnn.allow_tf32`, which `torch.backends.cudnn.flags()` reads too)
    # raises once the new API has set what it cannot represent: ganlab never uses that API.
    with full_precision(), pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        _ = torch.backends.cudnn.allow_tf32
    legacy = {"allow_tf32", "set_float32_matmul_precision", "get_float32_matmul_precision"}
    sources = [*ROOT.glob("ganlab/**/*.py"), *ROOT.glob("benchmarks/*.py"),
               *ROOT.glob("analysis/**/*.py"), *ROOT.glob("tests/*.py")]  # fmt: skip
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sources
        if path != Path(__file__).resolve()  # this test reads the flag above, on purpose
        for line, name in _code_names(path)
        if name in legacy or name == "cudnn.flags"
    ]
    assert found == []


def _code_names(path: Path) -> list[tuple[int, str]]:
    """The names `path` uses in code (not in comments or strings), `cudnn.flags` as one."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
              if t.type in (tokenize.NAME, tokenize.OP)]  # fmt: skip
    names = [(t.start[0], t.string) for t in tokens if t.type == tokenize.NAME]
    for a, dot, b in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if (a.string, dot.string, b.string) == ("cudnn", ".", "flags"):
            names.append((a.start[0], "cudnn.flags"))
    return names


def _gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" /
                                                  "gpu_throughput.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmarks_resume_check_passes_a_card_checkpoint_and_fails_a_wrong_reseed(
    tmp_path, monkeypatch
):
    bench = _gpu_benchmark()
    cfg = bench.small("ring8/mlp", "cpu")
    source = Trial(cfg)
    source.run(until=20)
    torch.save(as_written_on_a_card(source.state_dict()), tmp_path / "card.pt")
    source.save(tmp_path / "cpu.pt")

    passed, line = bench.resume_check(tmp_path / "card.pt", Trial(cfg))
    assert passed, line
    assert line.startswith("cuda -> cpu (cpu) at step 20: reseeds [{'step': 20, 'from': 'cuda'")
    passed, line = bench.resume_check(tmp_path / "cpu.pt", Trial(cfg))
    assert passed, line
    assert line.startswith("cpu -> cpu (cpu) at step 20: reseeds [] (expected [])")

    monkeypatch.setattr(ganlab.devices, "reseed_value", lambda seed, step, stream: 7)
    passed, line = bench.resume_check(tmp_path / "card.pt", Trial(cfg))
    assert not passed and "streams as documented: False" in line


def test_the_gpu_benchmarks_busy_share_counts_overlapping_kernels_once():
    union = _gpu_benchmark().union_ns
    assert union([]) == 0
    assert union([(20, 30), (0, 10), (5, 15), (21, 22), (30, 31)]) == 26  # 0-15, 20-31


def test_gpu_benchmark_needs_a_card_and_says_so_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("a card is here: the benchmark would measure it")
    done = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py"], capture_output=True,
                          text=True, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in done.stderr
