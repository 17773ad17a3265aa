"""What raysweep starts listens on loopback only: the listening sockets of a `raysweep sweep` and of a
`raysweep run` (its pipeline through the coarse stage), read from the driver's process tree while it runs
(Ray's GCS, raylet, agents and workers are its children)."""
import subprocess
import sys
import time

import psutil

from tests.support import ROOT

SMALL = ["--set", "resources.cpus_per_worker=0.25", "--set", "stopping.max_epochs=2", "--set", "parameters.hidden=32",
         "--set", "search.num_samples=3", "--set", "stages.coarse={num_samples: 3, epochs: 2, top_k: 2}",
         "--set", "stages.lr_range_test.num_steps=20"]
LOOPBACK = {"127.0.0.1", "::1"}


def listening_while_running(args) -> tuple[int, set]:
    """The driver's exit code and every (process, address, port) its process tree listened on."""
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", *map(str, args)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set()
    root = psutil.Process(driver.pid)
    while driver.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for proc in tree:
            try:
                seen |= {(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN}
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        time.sleep(0.3)
    return driver.wait(), seen


def test_a_sweep_and_a_pipeline_listen_on_loopback_only(tmp_path):
    figures = {}
    for command in (["sweep"], ["run", "--until", "coarse"]):
        code, seen = listening_while_running([*command, "search_spaces/digits_mlp.yaml", *SMALL, "--runs-dir", tmp_path])
        assert code == 0
        names = {name for name, _, _ in seen}
        assert {"gcs_server", "raylet"} <= names, seen  # it did look at Ray's own servers
        exposed = sorted({(name, ip) for name, ip, _ in seen if ip not in LOOPBACK})
        figures[command[0]] = (len(seen), exposed)
        assert not exposed, exposed
    print("\nlistening sockets (count, not on loopback):", figures)
