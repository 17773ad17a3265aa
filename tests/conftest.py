import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec file from text and return its path."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance for the whole session (2 CPUs, token auth on with a throwaway token, on
    loopback)."""
    import secrets

    import ray

    from raysweep.session import listen_on_loopback

    listen_on_loopback()  # as raysweep's own local instance: every server on 127.0.0.1
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # Train's report poll; default 2 s
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_client_env(ray_session) -> dict:
    """What a `raysweep` process needs to run on the session's Ray instance (a client of it, as of any
    cluster) instead of starting its own: for tests of the command, not of the local instance it starts."""
    return {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": os.environ["RAY_AUTH_TOKEN_PATH"]}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under `make test`'s workers: a file's tests on one worker, so that its module fixtures start
    once, and all of tests/cluster/ on the one worker that holds the package's cluster. (xdist's
    `loadgroup` cannot do it under pytest 9: it renames node ids through a field pytest 9 dropped.)"""
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "tests/cluster" if file.startswith("tests/cluster/") else file

    return ByFile(config, log)
