"""Reaching a cluster: one line and exit 2 when there is nothing there or it refuses our token."""
import time

from tests.support import ROOT, cli_on, off_loopback, run_cli

SPEC = ROOT / "search_spaces/digits_mlp.yaml"


def test_an_address_of_nothing_fails_in_one_line_within_seconds(tmp_path):
    started = time.monotonic()
    out = run_cli("sweep", SPEC, "--address", "127.0.0.1:1", "--runs-dir", tmp_path, timeout=60)
    print(f"figure: --address of nothing answered in {time.monotonic() - started:.1f} s")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "raysweep: nothing answers at 127.0.0.1:1 (Connection refused); start the cluster (`make cluster-local`, "
        "`make cluster-up`) or fix --address / RAY_ADDRESS"]
    assert time.monotonic() - started < 30


def test_a_cluster_that_refuses_the_token_says_so(cluster, tmp_path):
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    started = time.monotonic()
    out = cli_on(cluster, "sweep", SPEC, "--address", cluster.address, "--runs-dir", tmp_path, timeout=120,
                 env={"RAY_AUTH_TOKEN_PATH": str(wrong)})
    print(f"figure: a refused token answered in {time.monotonic() - started:.1f} s")
    assert out.returncode == 2, out.stdout + out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"raysweep: the Ray cluster at {cluster.address} refused this client's token "
                           "(RAY_AUTH_MODE=token); set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH")
    assert "InvalidAuthToken" not in out.stdout + out.stderr  # Ray's retries stay in its log file
    assert time.monotonic() - started < 60


RELAY = """
import sys, time, ray
from raysweep.session import connect_ray, route_ray_logs
log = route_ray_logs(sys.argv[1])
connect_ray(sys.argv[2])
# The driver subscribes to the cluster's errors on a thread of its own after connecting: a message
# published before that subscription is not delivered, so publish again until one arrives
deadline = time.monotonic() + 60
while "Raylet is terminated" not in open(log).read() and time.monotonic() < deadline:
    ray._private.utils.publish_error_to_driver("raylet_died", "Raylet is terminated. [state-dump] test",
                                               ray._private.worker.global_worker.gcs_client)
    time.sleep(2)
print("relayed")
"""


def test_cluster_errors_ray_relays_to_the_driver_go_to_its_log_file(cluster, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "ray.log"
    out = subprocess.run([sys.executable, "-c", RELAY, log, cluster.address], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ, **cluster.env()})
    assert out.returncode == 0 and out.stdout.strip() == "relayed", out.stdout + out.stderr
    assert "Raylet is terminated. [state-dump] test" in log.read_text()  # kept, in Ray's log file


def test_every_node_of_the_local_cluster_listens_on_loopback_only(cluster):
    listening, off = off_loopback(cluster.pids())
    names = [name for _, name in listening]
    assert "gcs_server" in names and names.count("raylet") >= 2, listening  # it did look, at worker nodes too
    assert not off, off
