"""Reference statistics: computed once, read back from disk, safe under concurrent writers."""

import os
import subprocess
import sys

import pytest
import torch

from ganlab.data import load
from ganlab.metrics.extractors import RawExtractor
from ganlab.metrics.frechet import features_to_statistics
from ganlab.metrics.reference import REFERENCE_SEED, reference_path, reference_statistics

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
