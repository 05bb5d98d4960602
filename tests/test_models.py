import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from ganlab.config import TrialConfig
from ganlab.models import ARCHITECTURES, IMAGE_SIDES, NORMS, ArchConfig, Packed, build, check

SHAPES = {
    "mlp": [(2,), (1, 8, 8), (3, 8, 8), (1, 28, 28), (3, 32, 32)],
    "dcgan": [(1, 8, 8), (3, 8, 8), (1, 28, 28), (3, 32, 32)],
    "resnet": [(1, 8, 8), (3, 8, 8), (1, 28, 28), (3, 32, 32)],
}
CASES = [(arch, shape) for arch, shapes in SHAPES.items() for shape in shapes]
CASE_IDS = [f"{arch}-{'x'.join(map(str, shape))}" for arch, shape in CASES]
NORM_PAIRS = [("none", "none"), ("batch", "batch"), ("layer", "instance"), ("instance", "layer")]
SMALL_CASES = [("mlp", (2,)), ("dcgan", (3, 8, 8)), ("resnet", (1, 8, 8))]
Z_DIM = 4

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny kernels: two threads wait on each other


SMALL = {"width": 8, "depth": 2, "z_dim": Z_DIM, "norm_g": "none", "norm_d": "none",
         "spectral_norm": False, "pack": 1}  # fmt: skip


def config(arch: str, **changes) -> ArchConfig:
    return ArchConfig(**{**SMALL, "arch": arch, **changes})


def seeded_build(cfg: ArchConfig, shape, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return build(cfg, shape)


def test_registries_hold_the_documented_names():
    assert sorted(ARCHITECTURES) == ["dcgan", "mlp", "resnet"]
    assert sorted(NORMS) == ["batch", "instance", "layer", "none"]
    assert sorted(SHAPES) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("norms", NORM_PAIRS, ids="-".join)
@pytest.mark.parametrize("spectral", [False, True], ids=["plain", "sn"])
@pytest.mark.parametrize("pack", [1, 2])
@pytest.mark.parametrize(("arch", "shape"), CASES, ids=CASE_IDS)
def test_output_shapes_and_ranges(arch, shape, pack, spectral, norms):
    cfg = config(arch, pack=pack, spectral_norm=spectral, norm_g=norms[0], norm_d=norms[1])
    g, d = seeded_build(cfg, shape)
    n = 4
    x = g(torch.randn(n, Z_DIM))
    assert x.shape == (n, *shape)
    assert torch.isfinite(x).all()
    if len(shape) == 3:
        assert x.min() >= -1 and x.max() <= 1
    logits = d(x)
    assert logits.shape == (n // pack,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("side", IMAGE_SIDES)
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_every_supported_side_builds(arch, side):
    g, d = seeded_build(config(arch, width=2), (1, side, side))
    x = g(torch.randn(2, Z_DIM))
    assert x.shape == (2, 1, side, side)
    assert d(x).shape == (2,)


def test_flat_generator_output_is_linear_not_squashed():
    g, _ = seeded_build(config("mlp"), (2,))
    last = [m for m in g.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(5.0)  # a tanh would squash this below 1
    assert g(torch.zeros(3, Z_DIM)).min() > 1


@pytest.mark.parametrize(("arch", "shape"), SMALL_CASES)
def test_packing_judges_concatenated_consecutive_samples(arch, shape):
    _, d = seeded_build(config(arch, pack=2, spectral_norm=True), shape)
    assert isinstance(d, Packed)
    d.eval()  # spectral norm's power iteration would otherwise change D between the two calls
    x = torch.randn(6, *shape)
    pairs = torch.stack([torch.cat([x[i], x[i + 1]]) for i in range(0, 6, 2)])
    assert pairs.shape == (3, 2 * shape[0], *shape[1:])
    with torch.no_grad():
        assert d(x).tolist() == pytest.approx(d.net(pairs).tolist(), rel=1e-5, abs=1e-6)


def test_packing_refuses_a_batch_it_cannot_split():
    _, d = seeded_build(config("mlp", pack=3), (2,))
    with pytest.raises(ValueError, match="groups of 3"):
        d(torch.randn(4, 2))


def test_pack_one_leaves_d_unwrapped():
    _, d = seeded_build(config("mlp"), (2,))
    assert not isinstance(d, Packed)


def _weight_layers(d: nn.Module) -> list[nn.Module]:
    return [m for m in d.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def test_spectral_norm_bounds_the_largest_singular_value_of_linear_layers():
    _, d = seeded_build(config("mlp", width=16, depth=3, spectral_norm=True), (2,))
    for _ in range(10):  # each training-mode forward runs one power iteration
        d(torch.randn(8, 2))
    layers = _weight_layers(d)
    assert len(layers) == 4
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), 2).item()
        assert sigma == pytest.approx(1.0, abs=0.01)


def test_spectral_norm_covers_conv_layers_as_matrices():
    _, d = seeded_build(config("dcgan", spectral_norm=True), (1, 28, 28))
    for _ in range(10):
        d(torch.randn(4, 1, 28, 28))
    for layer in _weight_layers(d):
        matrix = layer.weight.detach().flatten(1)  # (out, in * kh * kw), as spectral_norm sees it
        assert torch.linalg.matrix_norm(matrix, 2).item() == pytest.approx(1.0, abs=0.01)


def test_without_spectral_norm_weights_are_not_normalised():
    _, d = seeded_build(config("mlp", width=16, depth=3), (2,))
    sigmas = [torch.linalg.matrix_norm(m.weight.detach(), 2).item() for m in _weight_layers(d)]
    assert sigmas != pytest.approx([1.0] * len(sigmas), abs=0.02)


@pytest.mark.parametrize(("arch", "shape"), SMALL_CASES)
def test_same_seed_same_weights_different_seed_different(arch, shape):
    cfg = config(arch, pack=2, spectral_norm=True, norm_g="batch")
    first = [net.state_dict() for net in seeded_build(cfg, shape, seed=0)]
    again = [net.state_dict() for net in seeded_build(cfg, shape, seed=0)]
    other = [net.state_dict() for net in seeded_build(cfg, shape, seed=1)]
    for a, b, c in zip(first, again, other, strict=True):
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)


def test_forward_passes_are_deterministic():
    g, d = seeded_build(config("resnet", norm_g="batch", spectral_norm=True), (1, 8, 8))
    g.eval()
    d.eval()
    z = torch.randn(4, Z_DIM)
    assert torch.equal(g(z), g(z))
    assert torch.equal(d(g(z)), d(g(z)))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize(
    "shape", [(2,), (64,), (3, 30, 30), (1, 8, 16), (8, 8), (1, 1, 8, 8), (3, 12, 12)]
)
def test_check_rejects_shapes_naming_the_supported_ones(arch, shape):
    with pytest.raises(ValueError, match=r"square images \(C, H, H\) with H in 8, 16, 28, 32, 64"):
        check(arch, shape)


def test_build_checks_the_shape_first():
    with pytest.raises(ValueError, match="'dcgan' needs square images"):
        build(config("dcgan"), (2,))


def test_check_accepts_supported_shapes():
    for arch, shapes in SHAPES.items():
        for shape in shapes:
            check(arch, shape)
    check("mlp", (5, 7))
    check("mlp", [3])


def test_check_rejects_unknown_architectures_and_empty_shapes():
    with pytest.raises(ValueError, match="unknown architecture 'vae'; allowed: dcgan, mlp"):
        check("vae", (2,))
    with pytest.raises(ValueError, match="'mlp' needs a non-empty shape"):
        check("mlp", ())


@pytest.mark.parametrize("norms", NORM_PAIRS, ids="-".join)
@pytest.mark.parametrize("spectral", [False, True], ids=["plain", "sn"])
@pytest.mark.parametrize(("arch", "shape"), CASES, ids=CASE_IDS)
def test_gradients_reach_every_parameter(arch, shape, spectral, norms):
    cfg = config(arch, pack=2, spectral_norm=spectral, norm_g=norms[0], norm_d=norms[1])
    g, d = seeded_build(cfg, shape)
    real = torch.rand(4, *shape) * 2 - 1
    fake = g(torch.randn(4, Z_DIM))
    # The minimax loss: a Wasserstein-style difference would cancel D's output bias.
    (nn.functional.softplus(-d(real)).mean() + nn.functional.softplus(d(fake)).mean()).backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_a_trial_hands_over_its_architecture_fields():
    trial = TrialConfig(arch="dcgan", width=16, depth=2, z_dim=8, norm_g="batch",
                        norm_d="layer", spectral_norm=True, pack=2, loss="hinge")  # fmt: skip
    arch = trial.arch_config
    assert arch == ArchConfig("dcgan", 16, 2, 8, "batch", "layer", True, 2)
    for field in dataclasses.fields(ArchConfig):  # every field is a trial field of that name
        assert getattr(arch, field.name) == getattr(trial, field.name)
    torch.manual_seed(0)
    g, d = build(arch, (1, 8, 8))
    assert isinstance(d, Packed) and g(torch.randn(2, 8)).shape == (2, 1, 8, 8)


def test_models_import_without_the_trial_configuration():
    # The building blocks sit below the configuration: no import of ganlab.config, no cycle.
    script = (
        "import sys, ganlab.models, ganlab.data, ganlab.losses, ganlab.penalties, ganlab.metrics\n"
        "print(sorted(m for m in sys.modules if m in ('ganlab.config', 'ganlab.trial')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
