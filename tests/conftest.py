import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_datasets.py, tests/tables.py


@pytest.fixture(scope="session", autouse=True)
def ganlab_cache(tmp_path_factory):
    """One cache (classifier weights, reference statistics) shared by the whole test session."""
    cache = os.environ.get("GANLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("ganlab-cache"))
    os.environ["GANLAB_CACHE"] = cache
    return Path(cache)
