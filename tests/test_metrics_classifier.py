"""The protocol's digit classifier: shipped weights, their checks, training, the cache, stacks.

Nothing here depends on this machine's floating point: the digits classifier is the file that
ships with the package, and training is tested for its properties (accuracy above a bound,
determinism on one machine), never for the exact weights another CPU would give.
"""

import dataclasses
import shutil

import pytest
import torch

from ganlab.data import load
from ganlab.metrics import classifier
from ganlab.metrics.cache import tensors_sha256
from ganlab.metrics.classifier import (
    SHIPPED,
    ClassifierMismatch,
    classifier_file,
    classifier_path,
    load_classifier,
    train_classifier,
)
from ganlab.metrics.extractors import load_extractor

DIGITS = load("digits")
SHIPPED_WEIGHTS = "302d3f54f0fef791"  # the protocol's `weights` of every digits row


def test_digits_reads_the_shipped_file_whatever_the_cache_holds():
    model = load_classifier(DIGITS)
    assert tensors_sha256(model.state_dict()) == SHIPPED["digits"].sha256
    assert load_extractor(DIGITS).weights == SHIPPED_WEIGHTS
    assert not list(classifier_path(DIGITS).parent.glob("classifier-digits-[0-9a-f]*"))


def test_shipped_classifier_accuracy_on_held_out_digits():
    # 355 of the 359 held-out digits; the smallest top-two probability margin on them is 0.045,
    # far above float32 rounding, so every CPU and card counts the same.
    model = load_classifier(DIGITS)
    correct = (model(DIGITS.test)[1].argmax(1) == DIGITS.test_labels).sum()
    assert int(correct) == 355


def test_a_changed_shipped_file_is_refused(tmp_path, monkeypatch):
    changed = tmp_path / SHIPPED["digits"].file
    shutil.copy(SHIPPED["digits"].path, changed)
    saved = torch.load(changed, weights_only=True)
    saved["state"]["head.bias"] += 1e-3
    torch.save(saved, changed)
    monkeypatch.setattr(classifier, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ClassifierMismatch, match=r"hash to .* not 302d3f54f0fef791"):
        load_classifier(DIGITS)


def test_the_shipped_file_is_refused_for_other_training_data():
    flipped = dataclasses.replace(DIGITS, train=DIGITS.train.flip(0))
    with pytest.raises(ClassifierMismatch, match="the data set changed"):
        load_classifier(flipped)


def test_training_is_deterministic_accurate_and_leaves_global_rng_alone():
    # A data set without a shipped classifier is trained once into the cache (as MNIST is on a
    # sweep's driver); on one machine, training twice gives the same weights.
    other = dataclasses.replace(DIGITS, classifier_data="digits-retrained")
    rng = torch.get_rng_state()
    trained = classifier_file(other)
    assert torch.equal(torch.get_rng_state(), rng)
    again = train_classifier(DIGITS.train, DIGITS.train_labels, seed=0)
    assert tensors_sha256(again.state_dict()) == tensors_sha256(trained["state"])
    model = load_classifier(other)
    accuracy = (model(DIGITS.test)[1].argmax(1) == DIGITS.test_labels).double().mean()
    assert accuracy >= 0.95


def test_a_trained_classifier_is_read_back_from_the_cache():
    other = dataclasses.replace(DIGITS, classifier_data="digits-retrained")
    classifier_file(other)
    path = classifier_path(other)
    original = path.read_bytes()
    try:  # plant a recognisable change in the cached file: a load must return it, not retrain
        saved = torch.load(path, weights_only=True)
        saved["state"]["head.bias"] += 1.0
        torch.save(saved, path)
        mtime = path.stat().st_mtime_ns
        assert torch.equal(load_classifier(other).head.bias, saved["state"]["head.bias"])
        assert path.stat().st_mtime_ns == mtime
    finally:
        path.write_bytes(original)


def test_stacked_digits_are_read_per_channel():
    stacked = load("stacked-digits")
    extractor = load_extractor(stacked)
    assert extractor.weights == SHIPPED_WEIGHTS  # one classifier, digits'
    x, labels = stacked.sample_labelled(300, torch.Generator().manual_seed(0), split="test")
    out = extractor(x)
    assert out.features.shape == (300, 3 * 128)
    assert out.probs.shape == (300, 3, 10)
    modes = (out.probs.argmax(2) * torch.tensor([100, 10, 1])).sum(1)
    assert (modes == labels).double().mean() >= 0.95**3


def test_the_cache_key_follows_the_training_data():
    stacked = load("stacked-digits")  # trains on the digits' own images: one classifier
    assert classifier_path(stacked) == classifier_path(DIGITS)
    changed = dataclasses.replace(DIGITS, train=DIGITS.train.flip(0))
    assert classifier_path(changed) != classifier_path(DIGITS)
