"""What raysweep starts listens on loopback only, except Ray's own servers: the listening sockets of a
`raysweep sweep` and of a `raysweep run` (its pipeline through the coarse stage), read from the driver's
process tree while it runs (Ray's GCS, raylet, agents and workers are its children).

Ray 2.60 binds its gRPC servers (GCS, raylet, every worker's core worker, the driver's included) to the
wildcard address and its agents to the machine's address, whatever node IP it is given, and has no option
to change it (ray-project/ray#59852 binds them to the node IP in later versions). Those are listed and
counted; anything else that listens off loopback fails the test."""
import subprocess
import sys
import time

import psutil

from tests.support import ROOT

SMALL = ["--set", "resources.cpus_per_worker=0.25", "--set", "stopping.max_epochs=2", "--set", "parameters.hidden=32",
         "--set", "search.num_samples=3", "--set", "stages.coarse={num_samples: 3, epochs: 2, top_k: 2}",
         "--set", "stages.lr_range_test.num_steps=20"]
LOOPBACK = {"127.0.0.1", "::1"}


def who(proc, driver_pid) -> str:
    if proc.pid == driver_pid:
        return "driver"
    cmd = " ".join(proc.cmdline())
    ray = proc.name() in ("gcs_server", "raylet") or cmd.startswith("ray::") or "site-packages/ray/" in cmd
    return f"ray:{proc.name()}" if ray else f"{proc.name()}: {cmd[:160]}"


# Ray's servers in the driver's process: its core worker's gRPC server (one port, on the wildcard)
RAY_IN_DRIVER = 1


def listening_while_running(args) -> tuple[int, set]:
    """The driver's exit code and every (process, address, port) its process tree listened on; a process
    is named by its command line ("ray:" for Ray's own processes, "driver" for raysweep's)."""
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
                seen |= {(who(proc, driver.pid), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
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
        assert {"ray:gcs_server", "ray:raylet"} <= names, seen  # it did look at Ray's own servers
        off = [(name, ip, port) for name, ip, port in seen if ip not in LOOPBACK]
        ours = [x for x in off if not x[0].startswith("ray:") and x[0] != "driver"]
        driver_ports = {port for name, _, port in off if name == "driver"}
        assert not ours, ours  # nothing raysweep starts itself listens beyond loopback
        assert len(driver_ports) <= RAY_IN_DRIVER, off  # the driver: Ray's core worker only
        figures[command[0]] = {"listening": len(seen), "off_loopback_all_ray": len(off),
                               "ray_processes_off_loopback": sorted({n for n, _, _ in off})}
    print("\nlistening sockets:", figures)
