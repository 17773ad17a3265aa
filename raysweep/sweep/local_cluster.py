"""A multi-node Ray cluster on one machine: a head and N worker nodes started with `ray start`, token
auth on, every node on 127.0.0.1, each worker node with a `worker` resource so trials can be kept off
the head. All its processes live under one temp folder, so `down` stops this cluster's processes and
no other Ray on the machine (`ray stop` would stop every one).

  python -m raysweep.sweep.local_cluster up --workers 2 [--dir runs/cluster]
  python -m raysweep.sweep.local_cluster add | kill-node w1 | env | down
  python -m raysweep.sweep.local_cluster submit run search_spaces/digits_mlp.yaml   (a `ray job submit`)
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import yaml

from .. import console

WORKER_RESOURCE = "worker"

# `ray start` with each node's address kept at 127.0.0.1. On Linux Ray swaps 127.0.0.1 for the
# machine's address and its servers (GCS, raylets, agents, the client server) bind every interface;
# with its single-machine switch off, as for raysweep's own local instance (session.listen_on_loopback),
# they bind loopback alone. That switch also refuses worker nodes: only that check is let through.
RAY_START = ("import sys, types, ray._private.ray_constants as c, ray.scripts.scripts as s; "
             "s.ray_constants = types.SimpleNamespace(**{**vars(c), 'ENABLE_RAY_CLUSTER': True}); "
             "sys.argv[0] = 'ray'; s.main()")


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and not handed out before by this process: the OS can give the
    same one to two binds in a row, and Ray refuses to start when two of its components share one
    ("Ray component dashboard is trying to use a port number ... used by other components": all 16
    cluster tests of a CI run errored on it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@dataclass
class LocalCluster:
    dir: str                     # state: cluster.json, the token, Ray's logs
    temp: str                    # Ray's temp root (short: Unix socket paths are limited to ~107 bytes)
    address: str = ""
    dashboard: str = ""          # http://127.0.0.1:PORT, for `ray job submit`
    cpus_per_node: float = 1
    nodes: list[dict] = field(default_factory=list)  # {"name", "temp"} for each worker node

    @property
    def token_file(self) -> str:
        return os.path.join(self.dir, "auth_token")

    def env(self) -> dict:
        """What a client of this cluster needs: its address and its token (and its autoscaler's config)."""
        env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_file,
               # a client finds its node by its own address: 127.0.0.1 here, as the nodes' (RAY_START)
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        autoscaling = os.path.join(self.dir, "autoscaling.yaml")
        if os.path.exists(autoscaling):
            env["RAYSWEEP_AUTOSCALING_CONFIG"] = autoscaling
        return env

    def save(self) -> None:
        with open(os.path.join(self.dir, "cluster.json"), "w") as f:
            json.dump(asdict(self), f, indent=1)

    @classmethod
    def load(cls, directory: str) -> LocalCluster:
        with open(os.path.join(directory, "cluster.json")) as f:
            return cls(**json.load(f))

    def _ray(self, *args: str, temp: str, resources: dict | None = None, env: dict | None = None) -> None:
        os.makedirs(temp, exist_ok=True)
        cmd = [sys.executable, "-c", RAY_START, "start", *args, "--node-ip-address=127.0.0.1",
               f"--temp-dir={temp}", f"--num-cpus={self.cpus_per_node:g}", "--num-gpus=0",
               "--object-store-memory=100000000", "--disable-usage-stats",
               # nodes on one machine must not share the agents' default ports (the head's job agent lost
               # that race: "No available agent to submit job")
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               f"--resources={json.dumps(resources or {})}"]
        # jobs' entrypoints run with the nodes' environment: this Python's bin first, so `python` is this one
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        env = {**os.environ, **self.env(), "RAY_USAGE_STATS_ENABLED": "0", "PATH": path, **(env or {})}
        env.pop("RAY_ADDRESS")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"ray start failed: {(out.stderr or out.stdout).strip()[-2000:]}")

    def start_head(self, autoscaling_config: str | None = None) -> None:
        """The head; with `autoscaling_config` (Ray's fake multi-node provider) its autoscaler starts the workers."""
        with open(self.token_file, "w") as f:
            f.write(secrets.token_hex(32))
        os.chmod(self.token_file, 0o600)
        port, dashboard = free_port(), free_port()
        extra, env = [], {}
        if autoscaling_config:
            with open(autoscaling_config) as f:
                config = yaml.safe_load(f)
            config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
            autoscaling_config = os.path.join(self.dir, "autoscaling.yaml")
            with open(autoscaling_config, "w") as f:
                yaml.safe_dump(config, f)
            extra, env = [f"--autoscaling-config={autoscaling_config}"], {"RAY_FAKE_CLUSTER": "1"}
        self._ray("--head", f"--port={port}", f"--ray-client-server-port={free_port()}",
                  "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={dashboard}", *extra, temp=os.path.join(self.temp, "head"), env=env)
        self.address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
        self.save()

    def add_node(self, wait: bool = True) -> str:
        name = f"w{len(self.nodes) + 1}"
        temp = os.path.join(self.temp, name)
        # known by id, not counted: a node killed just before may still be listed alive here and gone
        # by the time its replacement joins (a count then waited for a node too many: seen in CI)
        before = {n["NodeID"] for n in self.alive_nodes()} if wait else set()
        for attempt in (1, 2):
            try:
                self._ray(f"--address={self.address}", temp=temp, resources={WORKER_RESOURCE: self.cpus_per_node})
                break
            except RuntimeError:
                # Ray gives a node 30 s to register, and a loaded 2-core machine can miss that ("the GCS
                # has become overloaded"): what it started goes, and it starts once more
                if attempt == 2:
                    raise
                self._kill(self.pids(temp))
        self.nodes.append({"name": name, "temp": temp})
        self.save()
        if wait:
            self.wait_for(lambda nodes: {n["NodeID"] for n in nodes} - before, f"node {name}")
        return name

    def node_of(self, pid: int) -> str | None:
        """The worker node a process runs on: the one whose raylet is among its ancestors."""
        import psutil

        raylets = {self.raylet_pid(n["name"]): n["name"] for n in self.nodes}
        try:
            return next((raylets[p.pid] for p in psutil.Process(pid).parents() if p.pid in raylets), None)
        except psutil.NoSuchProcess:
            return None

    def pids(self, temp: str | None = None) -> list[int]:
        """This cluster's processes (or one node's): those whose command line names its temp folder, and
        theirs (nodes an autoscaler started run under its process, in Ray's default temp folder)."""
        import psutil

        # the head's Ray client server names neither: only the GCS it serves (it outlived `down`)
        marks = [temp] if temp else [self.temp, *([f"--address={self.address}"] if self.address else [])]
        out = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(mark in part for part in p.info["cmdline"] or () for mark in marks):
                    out.add(p.info["pid"])
                    out.update(c.pid for c in p.children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sorted(out)

    def raylet_pid(self, name: str) -> int | None:
        import psutil

        temp = next(n["temp"] for n in self.nodes if n["name"] == name)
        for pid in self.pids(temp):
            try:
                if "raylet" in os.path.basename(psutil.Process(pid).cmdline()[0]):
                    return pid
            except (psutil.NoSuchProcess, IndexError):
                continue
        return None

    def kill_node(self, name: str) -> None:
        """SIGKILL a worker node's raylet and every process under it at once, as a lost machine goes."""
        import psutil

        pid = self.raylet_pid(name)
        if pid is None:
            return
        self._kill([pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))])

    @staticmethod
    def _kill(pids) -> None:
        import psutil

        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass

    def alive_nodes(self) -> list[dict]:
        """The cluster's alive nodes as the GCS sees them, {"NodeID", "Resources"} (asked in a subprocess:
        a process holds one Ray connection and the caller may have its own)."""
        code = ("import ray, json; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([{k: n[k] for k in ('NodeID', 'Resources')} for n in ray.nodes() if n['Alive']]))")
        env = {**os.environ, **self.env()}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        for line in reversed(out.stdout.strip().splitlines() if out.returncode == 0 else []):
            try:  # Ray can print a line of its own after ours (seen in CI: "Expecting value")
                return json.loads(line)
            except ValueError:
                continue
        return []

    def wait_for(self, joined, what: str, timeout: float = 60) -> None:
        """Until `joined(alive nodes)` holds; `what` names the nodes awaited in the error."""
        deadline = time.monotonic() + timeout
        while not joined(self.alive_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not join within {timeout:g} s")
            time.sleep(1)

    def down(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


# what a job's working directory leaves behind: environments, outputs, history
JOB_EXCLUDES = [".venv", "runs", ".git", "tests", "bench", ".pytest_cache", "mlruns"]


def submit_command(dashboard: str, raysweep_args: list[str]) -> list[str]:
    """`ray job submit` of a raysweep command, this checkout as the job's working directory."""
    return [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit", "--address", dashboard,
            "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": JOB_EXCLUDES}),
            "--", "python", "-m", "raysweep", *raysweep_args]


FAKE_CONFIG = os.path.join(os.path.dirname(__file__), "clusters", "fake_multinode.yaml")


def up(directory: str, workers: int, cpus_per_node: float = 1, fake: bool = False) -> LocalCluster:
    """Start a head and `workers` worker nodes; with `fake`, the head's autoscaler (Ray's fake multi-node
    provider, FAKE_CONFIG) launches the workers it is configured for instead."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    cluster = LocalCluster(directory, temp, cpus_per_node=cpus_per_node)
    try:
        cluster.start_head(FAKE_CONFIG if fake else None)
        if fake:
            with open(FAKE_CONFIG) as f:
                workers = sum(t.get("min_workers", 0) for t in yaml.safe_load(f)["available_node_types"].values())
        for _ in range(0 if fake else workers):
            cluster.add_node(wait=False)
        cluster.wait_for(lambda nodes: len(nodes) >= workers + 1, f"all {workers + 1} nodes", timeout=120 if fake else 60)
    except BaseException:
        cluster.down()
        raise
    return cluster


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raysweep.sweep.local_cluster")
    parser.add_argument("action", choices=["up", "down", "add", "kill-node", "env", "submit"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=1, help="logical CPUs per node")
    parser.add_argument("--dir", default="runs/cluster")
    parser.add_argument("--fake", action="store_true", help="up: the autoscaler starts the workers (fake provider)")
    parser.add_argument("--dashboard", help="submit: to this dashboard (e.g. a remote cluster's, forwarded by "
                                            "`ray dashboard`) with the token in ~/.ray/auth_token")
    parser.epilog = "kill-node takes the node's name (w1, ...); submit takes the raysweep command to run as a job"
    args, args.rest = parser.parse_known_args(argv)
    if args.action == "submit" and args.dashboard:
        sys.exit(subprocess.call(submit_command(args.dashboard, args.rest), env={**os.environ, "RAY_AUTH_MODE": "token"}))
    state = os.path.join(args.dir, "cluster.json")
    if args.action == "up":
        if os.path.exists(state):
            sys.exit(f"a local cluster is already up ({state}); `make cluster-local-down` first")
        cluster = up(args.dir, args.workers, args.cpus, fake=args.fake)
        workers = len(cluster.alive_nodes()) - 1
        console.say(f"local Ray cluster: head + {workers} worker nodes on 127.0.0.1"
              f"{' started by its autoscaler' if args.fake else ''}, token auth on")
        console.say("use it from this shell with:")
        console.say("  " + " ".join(f"export {k}={v};" for k, v in cluster.env().items()))
        console.say(f"or pass --address {cluster.address} (with RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={cluster.token_file})")
        console.say(f"jobs: ray job submit --address {cluster.dashboard} ...  (make sweep-cluster-local SPEC=...)")
        return
    if not os.path.exists(state):
        sys.exit(f"no local cluster in {args.dir}")
    cluster = LocalCluster.load(args.dir)
    if args.action == "down":
        cluster.down()
        os.remove(state)
        console.say(f"local cluster at {cluster.address} stopped")
    elif args.action == "add":
        console.say(f"node {cluster.add_node()} joined {cluster.address}")
    elif args.action == "kill-node":
        cluster.kill_node(args.rest[0])
    elif args.action == "submit":
        sys.exit(subprocess.call(submit_command(cluster.dashboard, args.rest), env={**os.environ, **cluster.env()}))
    elif args.action == "env":
        console.say(" ".join(f"export {k}={v};" for k, v in cluster.env().items()))


if __name__ == "__main__":
    main()
