import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTE10 = REPO / "latency_tables" / "ofa-note10"


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip when a host resource is missing on a developer machine; under CI=true it must be there."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it)")
    pytest.skip(reason)


@pytest.fixture
def ofa_note10_dir() -> Path:
    """OFA's published Note10 tables, shipped in the repo (latency_tables/ofa-note10)."""
    assert NOTE10.is_dir(), f"{NOTE10} is part of the repository"
    return NOTE10


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a shared 2-core machine a second thread mostly waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
