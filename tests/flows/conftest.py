import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(autouse=True, scope="module")
def prefect_server():
    """A real temporary Prefect server (own process, own SQLite db), stopped cleanly after the module.

    The startup timeout comes from PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (generous in CI).
    """
    with prefect_test_harness(server_startup_timeout=None):
        yield
