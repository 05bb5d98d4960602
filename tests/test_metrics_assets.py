"""Evaluation assets: made once on the CPU, shipped whole, checked, and used as given.

The digits numbers pinned here belong to the shipped classifier: its features differ between
CPUs only by float32 rounding (relative 1e-6), far inside the tolerances.
"""

import pytest
import torch

from ganlab.data import load
from ganlab.metrics import Evaluator
from ganlab.metrics.assets import EvalAssets, ExtractorMismatch, build_assets

DIGITS = load("digits")
RING8 = load("ring8")
DIGITS_FID_FLOOR = 10.549651494528234  # 1,000 training digits against the 359 held out
SHIPPED_WEIGHTS = "302d3f54f0fef791"


@pytest.fixture(scope="module")
def digits_assets() -> EvalAssets:
    return build_assets(DIGITS, 1000)


def test_digits_protocol_is_the_shipped_classifiers(digits_assets):
    protocol = Evaluator(DIGITS, assets=digits_assets).protocol
    assert (protocol.extractor, protocol.weights) == ("classifier", SHIPPED_WEIGHTS)
    assert protocol.fid_floor == pytest.approx(DIGITS_FID_FLOOR, rel=1e-4)
    assert protocol.reference_sha == digits_assets.sha[:16]
    assert (protocol.n_real, protocol.n_fake, protocol.dim) == (359, 1000, 128)


def test_a_file_round_trip_gives_the_same_assets_and_numbers(digits_assets, tmp_path):
    path = tmp_path / "digits-n1000.pt"
    digits_assets.save(path)
    loaded = EvalAssets.load(path)
    assert loaded.sha == digits_assets.sha
    assert torch.equal(loaded.cov_sqrt, digits_assets.cov_sqrt)
    fake = DIGITS.sample(1000, torch.Generator().manual_seed(3))
    shipped = Evaluator(DIGITS, assets=loaded)(fake)
    assert shipped == Evaluator(DIGITS, assets=digits_assets)(fake)  # same process: exact
    assert shipped == Evaluator(DIGITS)(fake)  # assets made here on the spot: the same


def test_changed_assets_are_refused(digits_assets):
    state = digits_assets.to_state()
    state["reference"]["mean"] = state["reference"]["mean"] + 1e-9
    with pytest.raises(ValueError, match="the file was changed"):
        EvalAssets.from_state(state)


def test_an_extractor_other_than_the_protocols_is_refused(digits_assets):
    saved = digits_assets.classifier
    other = {**saved, "state": {**saved["state"], "head.bias": saved["state"]["head.bias"] + 1}}
    wrong = EvalAssets.from_state({**digits_assets.to_state(), "classifier": other})
    with pytest.raises(ExtractorMismatch, match=f"made with {SHIPPED_WEIGHTS}"):
        Evaluator(DIGITS, assets=wrong)


def test_assets_of_another_data_set_or_size_are_refused(digits_assets):
    with pytest.raises(ValueError, match="given for digits at n_fake=500"):
        Evaluator(DIGITS, n_eval=500, assets=digits_assets)


def test_an_evaluator_given_assets_reads_no_cache(digits_assets, tmp_path, monkeypatch):
    empty = tmp_path / "node-cache"
    monkeypatch.setenv("GANLAB_CACHE", str(empty))
    ring8 = build_assets(RING8, 100)  # made where the driver runs: into the driver's cache
    filled = sorted(p.name for p in empty.iterdir())
    Evaluator(DIGITS, assets=digits_assets)  # what a trial on another node does
    Evaluator(RING8, n_eval=100, assets=ring8)
    assert sorted(p.name for p in empty.iterdir()) == filled
