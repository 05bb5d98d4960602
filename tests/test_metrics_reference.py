"""Reference statistics: computed once, read back from disk, safe under concurrent writers."""

import dataclasses
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from ganlab.data import fingerprint, load, to_float
from ganlab.metrics import Evaluator
from ganlab.metrics.assets import build_assets
from ganlab.metrics.evaluate import build_protocol
from ganlab.metrics.extractors import RawExtractor
from ganlab.metrics.frechet import features_to_statistics, statistics_to_frechet
from ganlab.metrics.reference import (
    FLOOR_SEED,
    REFERENCE_SEED,
    floor_samples,
    reference_path,
    reference_statistics,
)

RING8 = load("ring8")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path))
    return tmp_path


def test_reference_is_fresh_mixture_samples_from_the_fixed_seed(cache):
    ref = reference_statistics(RING8, RawExtractor(), 2500)
    real = RING8.sample(2500, torch.Generator().manual_seed(REFERENCE_SEED))
    expected = features_to_statistics(real)
    assert (ref.split, ref.n) == ("mixture", 2500)
    assert ref.stats.mean.numpy() == pytest.approx(expected.mean.numpy(), rel=1e-12)
    assert ref.stats.cov.numpy() == pytest.approx(expected.cov.numpy(), rel=1e-12)
    assert ref.features.shape == (2500, 2)


def test_second_call_reads_the_file(cache):
    first = reference_statistics(RING8, RawExtractor(), 500)
    path = reference_path(RING8, RawExtractor(), "mixture", 500)
    mtime = path.stat().st_mtime_ns
    second = reference_statistics(RING8, RawExtractor(), 500)
    assert path.stat().st_mtime_ns == mtime
    assert torch.equal(first.stats.cov, second.stats.cov)
    assert torch.equal(first.features, second.features)
    assert [p.name for p in cache.iterdir() if p.suffix == ".tmp"] == []


_RACER = """
import pathlib, sys, time
from ganlab.data import load
from ganlab.metrics.extractors import RawExtractor
from ganlab.metrics.reference import reference_statistics
barrier = pathlib.Path(sys.argv[1])
(barrier / sys.argv[2]).touch()
while len(list(barrier.iterdir())) < 2:  # start together, once both interpreters are up
    time.sleep(0.005)
ref = reference_statistics(load("grid25"), RawExtractor(), 200_000)
print(float(ref.stats.mean.sum()), float(ref.stats.cov.sum()), ref.n)
"""


def test_two_processes_racing_write_one_valid_file(cache, tmp_path_factory):
    barrier = tmp_path_factory.mktemp("barrier")
    env = {**os.environ, "GANLAB_CACHE": str(cache)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(barrier), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [racer.communicate(timeout=120)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert outputs[0] == outputs[1]
    files = sorted(p.name for p in cache.iterdir())
    grid25 = load("grid25")
    assert [f for f in files if f.endswith(".pt")] == [
        reference_path(grid25, RawExtractor(), "mixture", 200_000).name
    ]
    assert not [f for f in files if f.endswith(".tmp")]
    ref = reference_statistics(grid25, RawExtractor(), 200_000)
    summary = [str(float(ref.stats.mean.sum())), str(float(ref.stats.cov.sum())), "200000"]
    assert outputs[0].split() == summary


# --- held-out reference, real-data floor, data fingerprint, protocol ---------------------------

DIGITS = load("digits")


def test_digits_reference_is_the_held_out_split_not_the_classifiers():
    from ganlab.metrics.extractors import load_extractor

    extractor = load_extractor(DIGITS)
    ref = reference_statistics(DIGITS, extractor, 1000)
    expected = features_to_statistics(extractor(to_float(DIGITS.test)).features)
    assert (ref.split, ref.n, ref.dim) == ("test", len(DIGITS.test), 128)
    # The cached reference may come from another process (a sweep's driver, other threads, other
    # kernels): float32 features then differ by ~5e-6 relative, far below what another split
    # would change.
    for got, want in ((ref.stats.mean, expected.mean), (ref.stats.cov, expected.cov)):
        scale = float(want.abs().max())
        assert got.numpy() == pytest.approx(want.numpy(), rel=1e-5, abs=1e-5 * scale)


def test_memorising_the_training_digits_scores_the_floor_not_below_real_data():
    evaluator = Evaluator(DIGITS)
    memoriser = floor_samples(DIGITS, 1000)  # 1,000 distinct training digits
    fid = evaluator(memoriser)["fid"]
    # The floor may have been cached by a process on another thread count: float32 features
    # then differ in their last bits, and the FIDs by about 1e-8 relative.
    assert fid == pytest.approx(evaluator.protocol.fid_floor, rel=1e-6)
    # Against the training split (the old reference) the memoriser scored 0.3 and held-out
    # digits 9.7; against held-out data a copy of the training set has no advantage.
    assert fid > 3.0
    assert len(set(map(bytes, memoriser.numpy()))) == 1000


def test_mixture_floor_is_fresh_samples_against_the_reference():
    ref = reference_statistics(RING8, RawExtractor(), 2500)
    fresh = RING8.sample(2500, torch.Generator().manual_seed(FLOOR_SEED))
    expected = float(statistics_to_frechet(ref.stats, features_to_statistics(fresh.double())))
    assert ref.floor == pytest.approx(expected, rel=1e-9)
    assert 0 < ref.floor < 0.01


def test_cache_key_changes_with_the_data():
    changed_test = DIGITS.test.clone()
    changed_test[0, 0, 0, 0] += 0.5
    changed = dataclasses.replace(DIGITS, test=changed_test)
    extractor = RawExtractor()
    assert fingerprint(changed) != fingerprint(DIGITS)
    assert reference_path(changed, extractor, "test", 359) != reference_path(
        DIGITS, extractor, "test", 359
    )
    moved = dataclasses.replace(RING8, centres=RING8.centres * 1.01)
    assert reference_path(moved, extractor, "mixture", 50) != reference_path(
        RING8, extractor, "mixture", 50
    )


@pytest.mark.parametrize("n_eval,deficient", [(100, True), (128, True), (1000, False)])
def test_fid_below_the_feature_dimension_is_recorded_as_rank_deficient(n_eval, deficient):
    protocol = Evaluator(DIGITS, n_eval=n_eval).protocol
    assert (protocol.dim, protocol.n_fake, protocol.rank_deficient) == (128, n_eval, deficient)
    assert protocol.features_from == "digits/train"
    assert not protocol.standard_weights


@pytest.mark.parametrize(
    "name,weights,standard",
    [
        ("inception", "6726825d0af5f729", True),
        ("inception", "0123456789abcdef", False),
        ("classifier", "6726825d0af5f729", False),
    ],
)
def test_standard_inception_weights_are_recognised_by_hash(name, weights, standard):
    extractor = types.SimpleNamespace(name=name, weights=weights, has_probs=True)
    protocol = build_protocol(DIGITS, extractor, build_assets(RING8, 50))
    assert protocol.standard_weights is standard
    assert json.loads(protocol.to_json())["standard_weights"] is standard
    assert protocol.sampling == "eval"
