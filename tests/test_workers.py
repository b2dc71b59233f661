"""The worker processes of the library's pools (twostream_lib.workers)."""
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from twostream_lib.workers import PRELOAD, worker_context


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's (spawn elsewhere)")
def test_workers_start_with_the_library_imported_and_without_the_plotting_and_display_packages():
    """A worker is forked from a server that imported PRELOAD once; what the workers never use (matplotlib
    and IPython, seconds of imports) stays out of the server, so out of every worker."""
    with ProcessPoolExecutor(1, mp_context=worker_context()) as pool:
        modules = set(pool.submit(eval, "list(__import__('sys').modules)").result(timeout=300))
    assert set(PRELOAD) <= modules
    assert "twostream_lib.experiments.fusion" in modules  # the heads' and towers' code is there before any job
    assert not {"matplotlib", "IPython", "seaborn"} & modules
