"""The FID InceptionV3: loading from a file, the weights hash in the protocol, the clear error.

No network here, so the test saves a randomly initialised network of the same architecture and
loads it exactly as the real `pt_inception-2015-12-05` file would be loaded.
"""

import pytest
import torch

from ganlab.data import Data
from ganlab.metrics import Evaluator
from ganlab.metrics.cache import file_sha256
from ganlab.metrics.extractors import load_extractor
from ganlab.metrics.inception import WEIGHTS_FILE, tf1_resize_matrix

TINY = Data(
    "tiny-images", (3, 8, 8), "inception", n_eval=6,
    train=torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0)),
    train_labels=torch.zeros(7, dtype=torch.long),
    test=torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8,
                       generator=torch.Generator().manual_seed(1)),
    test_labels=torch.zeros(7, dtype=torch.long),
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def weights(inception_weights):
    return inception_weights


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("GANLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("GANLAB_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


def test_loads_weights_from_the_file_named_by_the_env_var(weights, monkeypatch):
    monkeypatch.setenv("GANLAB_INCEPTION_WEIGHTS", str(weights))
    extractor = load_extractor(TINY)
    assert extractor.weights == file_sha256(weights)[:16]
    out = extractor(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert out.features.shape == (2, 2048)
    assert out.probs.shape == (2, 1, 1008)
    assert out.probs.sum(2).flatten().tolist() == pytest.approx([1.0, 1.0])


def test_weights_hash_goes_into_the_protocol(weights, monkeypatch):
    monkeypatch.setenv("GANLAB_INCEPTION_WEIGHTS", str(weights))
    evaluator = Evaluator(TINY)
    assert evaluator.protocol.extractor == "inception"
    assert evaluator.protocol.weights == file_sha256(weights)[:16]
    assert (evaluator.protocol.n_real, evaluator.protocol.n_fake) == (7, 6)
    assert set(evaluator.metrics) == {"fid", "kid", "precision", "recall", "density",
                                      "coverage", "is", "fid_inf", "kid_std"}  # fmt: skip


def test_missing_weights_without_permission_say_how_to_provide_them(no_weights):
    with pytest.raises(FileNotFoundError) as error:
        load_extractor(TINY)
    message = str(error.value)
    assert "GANLAB_INCEPTION_WEIGHTS" in message
    assert "GANLAB_ALLOW_DOWNLOAD=1" in message
    assert str(no_weights / WEIGHTS_FILE) in message


def test_env_var_naming_a_missing_file_is_an_error(no_weights, monkeypatch):
    missing = no_weights / "nowhere.pth"
    monkeypatch.setenv("GANLAB_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_extractor(TINY)


def test_tf1_resize_keeps_constant_images_and_samples_without_half_pixel_offset():
    matrix = tf1_resize_matrix(4, 8)
    assert matrix.sum(1).tolist() == pytest.approx([1.0] * 8)
    # output pixel i reads source position i · 4/8: 0, 0.5, 1, ..., the last clamped to 3
    ramp = torch.arange(4, dtype=torch.float64)
    assert (matrix @ ramp).tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
