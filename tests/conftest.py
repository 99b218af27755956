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

    from pipelines.runtime import local_ray_options

    # The tests' own Ray, as a job's: never another one running on this machine, and its
    # actors find it without guessing (the dashboard serves Ray Train's state API calls).
    options = local_ray_options(cpus=4)
    ray.init(**options, ignore_reinit_error=True, logging_level="WARNING")
    yield ray
    ray.shutdown()
