"""What every benchmark that starts Ray sets up first."""
import os
import secrets
import tempfile


def scratch() -> str:
    """A scratch folder with a throwaway Ray token in it (token auth stays on), set for this process."""
    tmp = tempfile.mkdtemp(prefix="raysweep-bench-")
    with open(os.path.join(tmp, "token"), "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.join(tmp, "token")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # Train's report poll; default 2 s
    return tmp
