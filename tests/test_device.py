"""GPU correctness without a GPU: whole trials on the `meta` device, audited for host contact.

A trial that passes here keeps every tensor on its device, mixes no devices and reads nothing
back to the host inside a training step or an evaluation's device stage: on a card it would run
the steps between two evaluations without a single synchronisation. See tests/devicecheck.py for
why `meta` and what the audit adds. The checks fail on the bug they were written for (data drawn
on the host with the trial's generator) when it is put back.
"""

import dataclasses
import io
import itertools
import operator
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from devicecheck import META, HostAudit, HostTouch, fused_on_meta, module_tensors, tensors
from fake_datasets import write_cifar10, write_mnist

import ganlab.data
import ganlab.trial
from ganlab import data as datasets
from ganlab.config import TrialConfig
from ganlab.losses import LOSSES
from ganlab.metrics import Evaluator
from ganlab.metrics.extractors import load_extractor
from ganlab.models import ARCHITECTURES, NORMS
from ganlab.penalties import PENALTIES
from ganlab.reports import EvalReport
from ganlab.trial import Trial

TINY = {"width": 8, "depth": 1, "z_dim": 4, "batch_size": 8, "n_eval": 50, "sample_keep": 4,
        "steps": 4, "eval_every": 2, "penalty_weight": 1.0, "device": "cpu"}  # fmt: skip
NORM_NAMES = sorted(NORMS)


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
    for s in trial.seeds:
        state = [s.dead, s.signals, s.dead_steps]
        held = module_tensors(s.g, s.d, s.g_ema) + state
        held += tensors([s.opt_g.state_dict()["state"], s.opt_d.state_dict()["state"]])
        assert {t.device.type for t in held} == {"meta"}
    data = trial.data
    assert {t.device.type for t in tensors(list(vars(data).values()))} == {"meta"}


def _every_architecture_option() -> list[dict]:
    """Every arch × norm_g × norm_d, with spectral norm, packing and EMA each on for half."""
    cases = []
    for i, (arch, norm_g, norm_d) in enumerate(
        itertools.product(sorted(ARCHITECTURES), NORM_NAMES, NORM_NAMES)
    ):
        cases.append({"arch": arch, "norm_g": norm_g, "norm_d": norm_d,
                      "spectral_norm": bool(i % 2), "pack": 1 + i // 2 % 2,
                      "ema": 0.9 * (i // 4 % 2)})  # fmt: skip
    return cases


def _every_objective() -> list[dict]:
    """Every loss × penalty × arch, with the architecture options cycling."""
    cases = []
    for i, (loss, penalty, arch) in enumerate(
        itertools.product(sorted(LOSSES), sorted(PENALTIES), sorted(ARCHITECTURES))
    ):
        clip = 0.05 if loss == "wasserstein" and penalty == "none" else 0.0
        cases.append({"loss": loss, "penalty": penalty, "arch": arch, "clip": clip,
                      "norm_g": NORM_NAMES[i % 4], "norm_d": NORM_NAMES[i // 4 % 4],
                      "spectral_norm": bool(i % 3 == 0), "pack": 1 + i % 2,
                      "ema": 0.9 * (i % 5 == 0), "d_steps": 1 + i % 2})  # fmt: skip
    return cases


def _dataset(arch: str) -> str:
    return "ring8" if arch == "mlp" else "digits"


@pytest.mark.parametrize(
    "values",
    _every_objective() + _every_architecture_option(),
    ids=lambda v: "-".join(str(x) for x in v.values()),
)
def test_training_steps_stay_on_the_device_and_off_the_host(values):
    trial = on_meta(config(dataset=_dataset(values["arch"]), seeds=[0, 1], **values))
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
                 data_dir=str(torchvision_data), seeds=[0])  # fmt: skip
    trial = on_meta(cfg)
    (seed,) = trial.seeds
    with HostAudit():
        trial.train(1)
        fake = trial._generate(seed)
        values, finite = trial.evaluator.measure(fake)
    assert fake.device == META and fake.shape == (n_eval, *trial.data.shape)
    assert set(values) == set(trial.evaluator.metrics)
    for value in [*values.values(), finite]:
        assert value.device == META and value.shape == ()
    with pytest.raises(NotImplementedError, match="meta"):
        trial.evaluator(fake)  # its one read to the host: where a card would synchronise


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


def test_the_check_fails_when_data_is_drawn_on_the_host_again(monkeypatch):
    # The bug this check was written for: indices and noise drawn on the CPU with the trial's
    # generator, which a card refuses.
    def sample_on_host(self, n, generator):
        if self.centres is not None:
            idx = torch.randint(0, len(self.centres), (n,), generator=generator)
            return self.centres[idx] + self.sigma * torch.randn(n, 2, generator=generator)
        idx = torch.randint(0, len(self.train), (n, self.stacked), generator=generator)
        return ganlab.data.to_float(self.train[idx.flatten()])

    for dataset, arch in (("ring8", "mlp"), ("digits", "dcgan")):
        trial = on_meta(config(dataset=dataset, arch=arch, seeds=[0]))
        trial.train(1)  # unaudited, correct: the trial itself is sound
        monkeypatch.setattr(ganlab.data.Data, "sample", sample_on_host)
        with pytest.raises(HostTouch, match="randint"), HostAudit():
            trial.train(1)
        monkeypatch.undo()


def test_the_check_fails_on_a_host_read_in_the_step(monkeypatch):
    # The divergence check as it was: one `bool()` per step, a synchronisation on a card.
    def check_on_host(s, signals, limits):
        if not bool((signals.abs() <= limits).all()):
            s.dead.fill_(1.0)

    trial = on_meta(config(seeds=[0]))
    monkeypatch.setattr(ganlab.trial, "_check", check_on_host)
    with pytest.raises(HostTouch, match="_local_scalar_dense"), HostAudit():
        trial.train(1)
    with pytest.raises(RuntimeError, match="meta"):
        trial.train(1)  # without the audit, meta itself refuses the read


def test_the_check_fails_on_mixed_devices(monkeypatch):
    trial = on_meta(config(seeds=[0]))
    monkeypatch.setattr(Trial, "_noise", lambda self, n, rng: torch.randn(n, 4, generator=rng))
    with pytest.raises(RuntimeError, match="meta|device"):
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


def test_gpu_benchmark_needs_a_card_and_says_so_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("a card is here: the benchmark would measure it")
    done = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py"], capture_output=True,
                          text=True, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in done.stderr
