"""Session-wide test settings; tests/ is on sys.path, so ``testpaths`` imports everywhere."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tests use tiny models, which run fastest single-threaded: two intra-op threads mostly
    synchronise, and under any other load on a 2-core machine they slow down 10-50x."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (4 logical CPUs on any machine).

    Start-up costs ~10 s, so every test that needs Ray shares this one; it is shut down when the
    session ends. Tests using it should be marked ``@pytest.mark.ray``.
    """
    import ray

    # The dashboard serves the state API that Ray Train's placement-group cleaner polls.
    # address="local": the tests' own Ray, never another one running on this machine.
    ray.init(address="local", num_cpus=4, ignore_reinit_error=True, logging_level="WARNING")
    yield ray
    ray.shutdown()
