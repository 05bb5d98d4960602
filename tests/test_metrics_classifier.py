"""The protocol's digit classifier: accuracy, determinism, the disk cache, stacked reading.

The classifier lands in the session's cache (tests/conftest.py), trained once for all tests.
"""

import dataclasses

import torch

from ganlab.data import load
from ganlab.metrics.cache import tensors_sha256
from ganlab.metrics.classifier import classifier_path, load_classifier, train_classifier
from ganlab.metrics.extractors import load_extractor

DIGITS = load("digits")


def test_held_out_accuracy_on_digits():
    model = load_classifier(DIGITS)
    accuracy = (model(DIGITS.test)[1].argmax(1) == DIGITS.test_labels).double().mean()
    assert accuracy >= 0.95


def test_second_load_reads_the_cache():
    load_classifier(DIGITS)
    path = classifier_path(DIGITS)
    saved = torch.load(path, weights_only=True)
    mtime = path.stat().st_mtime_ns
    # Plant a recognisable change in the cached file: a load must return it, not retrain.
    original = path.read_bytes()
    try:
        saved["state"]["head.bias"] += 1.0
        torch.save(saved, path)
        mtime = path.stat().st_mtime_ns
        model = load_classifier(DIGITS)
        assert torch.equal(model.head.bias, saved["state"]["head.bias"])
        assert path.stat().st_mtime_ns == mtime
    finally:
        path.write_bytes(original)


def test_training_is_deterministic_and_leaves_global_rng_alone():
    cached_hash = tensors_sha256(load_classifier(DIGITS).state_dict())
    rng = torch.get_rng_state()
    model = train_classifier(DIGITS.train, DIGITS.train_labels, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert tensors_sha256(model.state_dict()) == cached_hash


def test_stacked_digits_are_read_per_channel():
    stacked = load("stacked-digits")
    extractor = load_extractor(stacked)
    assert extractor.weights == load_extractor(DIGITS).weights  # one classifier, digits'
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
