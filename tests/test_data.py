import math

import pytest
import torch
from fake_datasets import write_cifar10, write_mnist

from ganlab import data


def test_ring8_modes_lie_on_a_circle_of_radius_two():
    ring = data.load("ring8")
    assert ring.centres.norm(dim=1) == pytest.approx([2.0] * 8, rel=1e-6)
    angles = torch.atan2(ring.centres[:, 1], ring.centres[:, 0]) % (2 * math.pi)
    assert sorted(angles.tolist()) == pytest.approx([k * math.pi / 4 for k in range(8)], abs=1e-6)


def test_mixture_samples_have_the_documented_spread():
    grid = data.load("grid25")
    x, modes = grid.sample_labelled(50_000, torch.Generator().manual_seed(0))
    offsets = x - grid.centres[modes]
    assert offsets.std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.bincount(modes, minlength=25).float().div(len(x)).tolist() == pytest.approx(
        [1 / 25] * 25, abs=0.005
    )


def test_sampling_is_deterministic_per_generator():
    digits = data.load("digits")
    a = digits.sample(16, torch.Generator().manual_seed(3))
    b = digits.sample(16, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.shape == (16, 1, 8, 8)
    assert a.min().item() == pytest.approx(-1.0) and a.max().item() == pytest.approx(1.0)


def test_digits_split_is_disjoint_and_complete():
    digits = data.load("digits")
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 359


def test_stacked_digits_labels_read_each_channel():
    stacked = data.load("stacked-digits")
    x, y = stacked.sample_labelled(200, torch.Generator().manual_seed(0))
    assert x.shape == (200, 3, 8, 8)
    assert int(y.min()) >= 0 and int(y.max()) < 1000
    # the label of channel c is the digit whose image it is: check against the training set
    lookup = {tuple(img.flatten().tolist()): int(lbl) for img, lbl in
              zip(stacked.train, stacked.train_labels, strict=True)}  # fmt: skip
    for image, label in zip(x[:20], y[:20], strict=True):
        digits = [lookup[tuple(image[c].flatten().tolist())] for c in range(3)]
        assert label == 100 * digits[0] + 10 * digits[1] + digits[2]


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_formats_load_from_a_data_directory(tmp_path, name, folder):
    write_mnist(tmp_path, folder, n_train=30, n_test=10)
    ds = data.load(name, str(tmp_path))
    assert ds.train.shape == (30, 1, 28, 28) and ds.test.shape == (10, 1, 28, 28)
    assert ds.train_labels.tolist() == [i % 10 for i in range(30)]
    x = ds.sample(8, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0
    assert int(ds.train[3, 0, 8, 10]) == 255  # the bar of class 3 is where it was written


def test_cifar10_loads_from_its_python_batches(tmp_path):
    write_cifar10(tmp_path, per_batch=6)
    ds = data.load("cifar10", str(tmp_path))
    assert ds.train.shape == (30, 3, 32, 32) and ds.test.shape == (6, 3, 32, 32)
    assert ds.extractor == "inception"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_says_how_to_provide_it(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"data_dir.*download: true"):
        data.load(name, str(tmp_path / "empty"))


def test_unknown_dataset_lists_the_allowed_names():
    with pytest.raises(ValueError, match="unknown dataset 'ring9'.*grid25.*ring8"):
        data.load("ring9")


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_a_loaded_dataset_carries_the_facts_registered_for_it(tmp_path, name):
    write_mnist(tmp_path, "MNIST", n_train=10, n_test=10)
    write_mnist(tmp_path, "FashionMNIST", n_train=10, n_test=10)
    write_cifar10(tmp_path, per_batch=2)
    source = data.DATASETS[name]
    ds = data.load(name, str(tmp_path))
    assert (ds.name, ds.shape, ds.n_modes, ds.extractor, ds.n_eval) == (
        name, source.shape, source.modes, source.extractor, source.n_eval
    )  # fmt: skip
    assert (ds.stacked, ds.classifier_data) == (source.stacked, source.classifier_data)
    assert ds.sample(3, torch.Generator().manual_seed(0)).shape == (3, *source.shape)


def test_the_protocol_facts_of_each_dataset():
    facts = {name: (s.shape, s.modes, s.extractor, s.n_eval, s.classifier_data)
             for name, s in data.DATASETS.items()}  # fmt: skip
    assert facts == {
        "ring8": ((2,), 8, "raw", 2500, ""),
        "grid25": ((2,), 25, "raw", 2500, ""),
        "digits": ((1, 8, 8), 10, "classifier", 1000, "digits"),
        "stacked-digits": ((3, 8, 8), 1000, "classifier", 26000, "digits"),
        "mnist": ((1, 28, 28), 10, "classifier", 10000, "mnist"),
        "fashion-mnist": ((1, 28, 28), 10, "classifier", 10000, "fashion-mnist"),
        "cifar10": ((3, 32, 32), 0, "inception", 10000, ""),
    }
