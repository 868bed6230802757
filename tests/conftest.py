import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip when a host resource is missing on a developer machine; under CI=true it must be there."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it)")
    pytest.skip(reason)


@pytest.fixture
def ofa_note10_dir() -> Path:
    path = SHARED / "reference" / "ofa-note10"
    require_or_skip(path.is_dir(), f"OFA Note10 reference tables not found at {path}")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a shared 2-core machine a second thread mostly waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
