"""Nothing a sweep or a pipeline starts listens beyond loopback, Ray's own servers included: the
listening sockets of a `raysweep sweep` and of a `raysweep run` (its pipeline through the coarse stage),
run side by side, read from each driver's process tree while it runs (Ray's GCS, raylet, agents and
workers are its children)."""
import ipaddress
import subprocess
import sys
import time

import psutil

from tests.support import ROOT

SMALL = ["--set", "resources.cpus_per_worker=0.25", "--set", "stopping.max_epochs=2", "--set", "parameters.hidden=32",
         "--set", "search.num_samples=2", "--set", "stages.coarse={num_samples: 2, epochs: 2, top_k: 1}",
         "--set", "stages.lr_range_test.num_steps=10"]


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def who(proc, driver_pid) -> str:
    if proc.pid == driver_pid:
        return "driver"
    cmd = " ".join(proc.cmdline())
    ray = proc.name() in ("gcs_server", "raylet") or cmd.startswith("ray::") or "site-packages/ray/" in cmd
    return f"ray:{proc.name()}" if ray else f"{proc.name()}: {cmd[:160]}"


def listening_while_running(commands: dict) -> tuple[dict, dict]:
    """Each driver's exit code and every (process, address, port) its process tree listened on; a process
    is named by its command line ("ray:" for Ray's own processes, "driver" for raysweep's)."""
    drivers = {name: subprocess.Popen([sys.executable, "-m", "raysweep", *map(str, args)], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for name, args in commands.items()}
    seen = {name: set() for name in commands}
    while any(d.poll() is None for d in drivers.values()):
        for name, driver in drivers.items():
            try:
                root = psutil.Process(driver.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    seen[name] |= {(who(proc, driver.pid), c.laddr.ip, c.laddr.port)
                                   for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
        time.sleep(0.3)
    return {name: d.wait() for name, d in drivers.items()}, seen


def test_a_sweep_and_a_pipeline_listen_on_loopback_only(tmp_path):
    spec = "search_spaces/digits_mlp.yaml"
    codes, seen = listening_while_running({
        "sweep": ["sweep", spec, *SMALL, "--runs-dir", tmp_path / "sweep"],
        "run": ["run", "--until", "coarse", spec, *SMALL, "--runs-dir", tmp_path / "run"]})
    assert codes == {"sweep": 0, "run": 0}
    figures = {}
    for command, sockets in seen.items():
        names = {name for name, _, _ in sockets}
        assert {"ray:gcs_server", "ray:raylet", "driver"} <= names, sockets  # it did look at Ray's servers
        assert any(name.startswith("ray:ray::") for name in names), sockets  # and at trial workers
        off = [(name, ip, port) for name, ip, port in sockets if not loopback(ip)]
        assert not off, off
        figures[command] = {"listening": len(sockets), "processes": len(names), "off_loopback": len(off)}
    print("\nlistening sockets:", figures)
