import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_datasets.py, tests/runs.py


@pytest.fixture(scope="session", autouse=True)
def ganlab_cache(tmp_path_factory):
    """One cache (classifier weights, reference statistics) shared by the whole test session."""
    cache = os.environ.get("GANLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("ganlab-cache"))
    os.environ["GANLAB_CACHE"] = cache
    return Path(cache)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: on a shared 2-core machine two OpenMP threads of big
    convolutions or small LAPACK calls wait on each other (measured 6x to 100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A file of random FID Inception weights: the real network, without its download."""
    import torch

    from ganlab.metrics.inception import fid_inception_v3

    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(fid_inception_v3().state_dict(), path)
    return path
