"""The Docker runtime: a lab's services as containers that share one network namespace.

Like a Kubernetes pod: a first container (`pod`) owns the namespace and publishes the
lab's ports on the host's 127.0.0.1; every service runs in a container of its own that
joins it (`network_mode: container:`), so the lab's configs on 127.0.0.1 work unchanged.
The pod's container runs `meshlab.container.relay`, because Docker forwards a published
port to the container's address, never to its loopback.

The lab folder and the run folder are mounted at their host paths, so configs, logs
(`<service>.log`), Envoy's access log and admin-address file sit where the local runtime
puts them, and checks read them the same way. Containers run as the host user.

Docker is the state: every container and the network carry labels (run, lab, service,
owner, the hashes of the inputs each service started from). A run owned by a checker
whose process died (SIGKILL) is removed by the next `meshlab` command
(`stop_orphaned_docker_runs`); each run folder holds a `docker.json` marker so that
commands on a machine that never used Docker do not even import the SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from meshlab import ports as portcheck
from meshlab.container import engine
from meshlab.container.pod_labs import refuse_on_docker
from meshlab.course import Lab, ServiceSpec
from meshlab.envoy import Admin
from meshlab.errors import PortBusy, ServiceFailed
from meshlab.runtime import processes
from meshlab.runtime.interface import input_hashes

MARKER = "docker.json"
POD = "pod"


@dataclass(frozen=True)
class DockerService:
    name: str
    kind: str
    pid: int
    ports: dict[str, int]
    container: str


@dataclass(frozen=True)
class DockerRunState:
    lab: str
    lab_dir: str
    detached: bool
    services: dict[str, DockerService] = field(default_factory=dict)


def run_id(run_dir: Path) -> str:
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:10]


class DockerRuntime:
    """Start, stop, restart and observe one lab's services as containers."""

    name = "docker"

    def __init__(self, lab: Lab, lab_dir: Path, run_dir: Path, *, detached: bool = False,
                 owned_by: str = "check"):
        refuse_on_docker(lab)  # pods of its own do not fit one namespace (container/pod_labs.py)
        self.lab = lab
        self.lab_dir = Path(lab_dir).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.detached = detached
        self.id = run_id(self.run_dir)
        self.prefix = f"meshlab-{lab.number:02d}-{self.id}"
        self.client = engine.connect()
        self.owner_pid = None if detached else os.getpid()
        self.owner_started = None if detached else processes.create_time(os.getpid())
        self.owned_by = None if detached else owned_by  # what the owner is, for `meshlab stop`
        self.admin_urls: dict[str, str] = {}

    # -- finding a run that is already there -------------------------------------

    @classmethod
    def attach(cls, lab: Lab, run_dir: Path) -> "DockerRuntime | None":
        """The run of RUN_DIR if its pod still runs, else None (leftovers are removed);
        without a run of ours, the lab's Compose sandbox if the learner started one."""
        if not (Path(run_dir) / MARKER).is_file():
            from meshlab.runtime.sandbox import ComposeSandbox
            return ComposeSandbox.find(lab, run_dir)
        marker = json.loads((Path(run_dir) / MARKER).read_text())
        runtime = cls(lab, Path(marker["lab_dir"]), run_dir, detached=marker["owner_pid"] is None)
        runtime.owner_pid, runtime.owner_started = marker["owner_pid"], marker["owner_started"]
        pod = runtime._container(POD)
        if pod is None or pod.status != "running" or _orphaned(marker):
            runtime.stop_all()
            return None
        return runtime

    @property
    def owner(self) -> bool:
        return self.owner_pid == os.getpid()

    # -- lifecycle ---------------------------------------------------------------

    def start_all(self) -> None:
        engine.require_image(self.client)
        self._ensure_ports_free()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old_log in self.run_dir.glob("*.log"):
            old_log.unlink()
        (self.run_dir / MARKER).write_text(json.dumps({
            "run": self.id, "lab": self.lab.slug, "lab_dir": str(self.lab_dir),
            "owner_pid": self.owner_pid, "owner_started": self.owner_started, "owned_by": self.owned_by}))
        try:
            self._start_pod()
            for spec in _start_order(self.lab):
                self.start(spec.name)
        except BaseException:
            self.stop_all()
            raise

    def start(self, name: str) -> None:
        spec = self.lab.service(name)
        if self.is_running(name):
            return
        self._remove(name)
        log = self.log_path(name)
        with open(log, "ab") as handle:
            handle.write(f"--- meshlab: starting {name} in Docker at {time.strftime('%H:%M:%S')}\n".encode())
        (self.run_dir / f"{name}.admin-address").unlink(missing_ok=True)
        # Output goes to the same files the local runtime writes (Envoy's stdout is the
        # access log of configs that write to /dev/stdout).
        stdout = self.access_log_path(name) if spec.kind == "envoy" else log
        script = 'out="$1"; err="$2"; shift 2; exec "$@" >>"$out" 2>>"$err"'
        mounts = {str(self.lab_dir): {"bind": str(self.lab_dir), "mode": "rw"},
                  str(self.run_dir): {"bind": str(self.run_dir), "mode": "rw"}}
        self.client.containers.run(
            engine.TOOLBOX_IMAGE, ["-c", script, "sh", str(stdout), str(log), *self._argv(spec)],
            entrypoint=["sh"], name=f"{self.prefix}-{name}", detach=True, init=True,
            network_mode=f"container:{self._container(POD).id}", working_dir=str(self.lab_dir),
            volumes=mounts, user=f"{os.getuid()}:{os.getgid()}",
            environment={"PYTHONUNBUFFERED": "1", "HOME": "/tmp", **spec.env},
            labels=self._labels(name, inputs=input_hashes(self.lab_dir, spec)))
        try:
            self._wait_ready(spec)
        except BaseException:
            self.stop(name)
            raise

    def stop(self, name: str) -> None:
        self.admin_urls.pop(name, None)
        self._remove(name)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop_all(self) -> None:
        remove_run(self.client, self.id)
        (self.run_dir / MARKER).unlink(missing_ok=True)

    def sync(self) -> list[str]:
        changed = []
        for spec in _start_order(self.lab):
            container = self._container(spec.name)
            started_from = json.loads(container.labels.get(f"{engine.LABEL}.inputs", "{}")) if container else None
            if container is None or container.status != "running" or started_from != input_hashes(self.lab_dir, spec):
                changed.append(spec.name)
                self.restart(spec.name)
        return changed

    # -- observing ---------------------------------------------------------------

    @property
    def state(self) -> "DockerRunState":
        """What runs now, shaped like the local runtime's state: each service's PID is its
        container's first process on the host, so a restarted container has a new one."""
        services = {}
        for spec in self.lab.services:
            container = self._container(spec.name)
            if container is not None and container.status == "running":
                services[spec.name] = DockerService(name=spec.name, kind=spec.kind, pid=container.attrs["State"]["Pid"],
                                                    ports=dict(spec.ports), container=container.name)
        return DockerRunState(lab=self.lab.slug, lab_dir=str(self.lab_dir), detached=self.owner_pid is None,
                              services=services)

    def is_running(self, name: str) -> bool:
        container = self._container(name)
        return container is not None and container.status == "running"

    def admin(self, name: str) -> Admin:
        if name not in self.admin_urls:
            spec = self.lab.service(name)
            if not self.is_running(name) or spec.admin_port is None:
                raise ServiceFailed(f"{name} is not a running Envoy of lab {self.lab.slug}")
            self.admin_urls[name] = f"http://127.0.0.1:{spec.admin_port}"
        return Admin(self.admin_urls[name])

    def network_namespace(self) -> str:
        """The pod's network namespace, as a path a process on this host may enter: the
        checker joins it (see `LabSession.open`) to see the lab as its services do."""
        pod = self._container(POD)
        if pod is None or pod.status != "running":
            raise ServiceFailed(f"the pod container of lab {self.lab.slug} is not running")
        return f"/proc/{pod.attrs['State']['Pid']}/ns/net"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def access_log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.access.log"

    def logs(self, lines: int = 20) -> dict[str, str]:
        return {spec.name: processes.tail(self.log_path(spec.name), lines) for spec in self.lab.services}

    # -- internals ---------------------------------------------------------------

    def _labels(self, service: str, **extra: object) -> dict[str, str]:
        labels = {engine.LABEL: "1", f"{engine.LABEL}.run": self.id, f"{engine.LABEL}.lab": self.lab.slug,
                  f"{engine.LABEL}.service": service, f"{engine.LABEL}.run-dir": str(self.run_dir),
                  f"{engine.LABEL}.owner": json.dumps([socket.gethostname(), self.owner_pid, self.owner_started])}
        labels.update({f"{engine.LABEL}.{key}": json.dumps(value) for key, value in extra.items()})
        return labels

    def _container(self, name: str):
        import docker.errors

        # The list only gives ids: inspect the one we want (another process may have
        # removed it in between: then it is gone, which is an answer too).
        found = self.client.api.containers(all=True, filters={"label": [f"{engine.LABEL}.run={self.id}",
                                                                        f"{engine.LABEL}.service={name}"]})
        try:
            return self.client.containers.get(found[0]["Id"]) if found else None
        except docker.errors.NotFound:
            return None

    def _remove(self, name: str) -> None:
        import docker.errors

        container = self._container(name)
        if container is None:
            return
        try:
            if container.status == "running":
                container.kill("SIGTERM")  # Envoy and the apps exit at once (an init forwards it)
                container.wait(timeout=5)
        except (docker.errors.APIError, Exception):  # noqa: BLE001 - killed below anyway
            pass
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def _ensure_ports_free(self) -> None:
        for service, role, port in self.lab.ports():
            if engine.host_port_free(port):
                continue
            owner = engine.port_owner(self.client, port)
            held_by = f"the container {owner}" if owner else (portcheck.holder(port) or "another process")
            raise PortBusy(f"port 127.0.0.1:{port} ({service} {role}) of lab {self.lab.number:02d} is in use",
                           details=f"  held by {held_by}",
                           fix=(f"stop it: docker rm -f {owner}" if owner else
                                "stop the process holding it (`meshlab stop` if it is a lab)"))

    def _start_pod(self) -> None:
        import docker.errors

        ports = sorted({port for _, _, port in self.lab.ports()})
        network = self.client.networks.create(self.prefix, labels=self._labels(POD))
        try:
            self.client.containers.run(
                engine.TOOLBOX_IMAGE, ["-m", "meshlab.container.relay", *map(str, ports)], entrypoint=["python3"],
                name=f"{self.prefix}-{POD}", detach=True, init=True, network=network.name,
                hostname=f"lab{self.lab.number:02d}", ports={f"{port}/tcp": ("127.0.0.1", port) for port in ports},
                labels=self._labels(POD))
        except docker.errors.APIError as error:
            # A port taken between the check above and Docker's bind (another program).
            text = str(error)
            if "already in use" not in text and "already allocated" not in text:
                raise
            raise PortBusy(f"Docker could not publish a port of lab {self.lab.number:02d} on 127.0.0.1",
                           details=f"  {text}", fix="stop the process or container holding it, then check again") \
                from None

    def _argv(self, spec: ServiceSpec) -> list[str]:
        if spec.kind == "envoy":
            return ["envoy", "-c", str(self.lab_dir / spec.target),
                    # Envoys in one network namespace share the abstract socket names of
                    # hot restart: each picks a free base id.
                    "--use-dynamic-base-id", "--base-id-path", str(self.run_dir / f"{spec.name}.base-id"),
                    "--admin-address-path", str(self.run_dir / f"{spec.name}.admin-address"),
                    "--concurrency", str(spec.concurrency), "-l", "warning", "--component-log-level", "main:error",
                    *spec.args]
        if spec.kind == "python":
            return ["python3", "-m", str(spec.target), *spec.args]
        program = "python3" if spec.target[0] in ("python", "python3") else spec.target[0]
        return [program, *spec.target[1:], *spec.args]

    def _wait_ready(self, spec: ServiceSpec) -> None:
        deadline = time.monotonic() + spec.ready_timeout + 10  # a container start costs more than a process
        delay = 0.02
        while True:
            container = self._container(spec.name)
            if container is None or container.status in ("exited", "dead"):
                code = container.attrs["State"]["ExitCode"] if container is not None else None
                raise ServiceFailed(f"{spec.name} ({spec.kind}) exited with code {code} while starting "
                                    f"(in its container)", details=processes.tail(self.log_path(spec.name), 15),
                                    fix=f"read the log above (all of it: {self.log_path(spec.name)})")
            if self._probe(spec):
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{spec.name} did not become ready within {spec.ready_timeout:.0f} s (Docker)",
                                    details=processes.tail(self.log_path(spec.name), 15),
                                    fix=f"read {self.log_path(spec.name)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _probe(self, spec: ServiceSpec) -> bool:
        if spec.kind == "envoy":
            address_file = self.run_dir / f"{spec.name}.admin-address"
            address = address_file.read_text().strip() if address_file.is_file() else ""
            if not address:
                return False
            if address.rsplit(":", 1)[-1] != str(spec.admin_port):
                raise ServiceFailed(f"{spec.name}'s admin listens on {address}, but lab {self.lab.number:02d} "
                                    f"declares admin port {spec.admin_port}: only declared ports are published",
                                    fix=f"make the config's admin address 127.0.0.1:{spec.admin_port}")
            try:
                state = httpx.get(f"http://127.0.0.1:{spec.admin_port}/ready", timeout=1.0, trust_env=False)
            except httpx.HTTPError:
                return False
            return state.text.strip() == "LIVE" or spec.ready == "admin"
        if not spec.ports:
            return True
        return _listening_behind_relay(next(iter(spec.ports.values())))


def _listening_behind_relay(port: int) -> bool:
    """True when a service listens on PORT behind the pod's relay. The relay accepts at
    once and closes the connection when nothing listens behind it; a live service keeps
    it open (an HTTP server waits for a request) or speaks first (HTTP/2 settings)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.settimeout(0.15)
            try:
                return sock.recv(1, socket.MSG_PEEK) != b""
            except TimeoutError:
                return True
    except OSError:
        return False


def _start_order(lab: Lab) -> list[ServiceSpec]:
    ordered: list[ServiceSpec] = []
    pending = list(lab.services)
    while pending:
        ready = [spec for spec in pending if all(dep in {s.name for s in ordered} for dep in spec.after)]
        if not ready:
            raise ServiceFailed(f"services of lab {lab.slug} wait for each other in a cycle")
        ordered.append(ready[0])
        pending.remove(ready[0])
    return ordered


def _orphaned(marker: dict) -> bool:
    return marker["owner_pid"] is not None and not processes.alive(marker["owner_pid"], marker["owner_started"])


def remove_run(client, run: str) -> list[str]:
    """Remove every container and network of RUN; the services whose containers were removed."""
    import docker.errors

    removed = []
    selector = {"label": [f"{engine.LABEL}.run={run}"]}
    containers = client.api.containers(all=True, filters=selector)
    # Services first, the namespace owner last.
    for container in sorted(containers, key=lambda c: c["Labels"].get(f"{engine.LABEL}.service") == POD):
        try:
            client.api.remove_container(container["Id"], force=True)
            removed.append(container["Labels"].get(f"{engine.LABEL}.service", container["Id"][:12]))
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters=selector):
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
    return removed


def stop_orphaned_docker_runs(runs_dir: Path) -> list[str]:
    """Remove the containers of every Docker run under RUNS_DIR whose owner died (a
    checker killed before it could clean up), and of runs whose marker is gone."""
    markers = list(Path(runs_dir).glob(f"*/{MARKER}")) if Path(runs_dir).is_dir() else []
    if not markers:
        return []
    stale = []
    for marker_file in markers:
        marker = json.loads(marker_file.read_text())
        if _orphaned(marker):
            stale.append((marker_file, marker["run"]))
    if not stale or not engine.likely_present():
        return []
    client = engine.connect(timeout=10)
    stopped = []
    for marker_file, run in stale:
        remove_run(client, run)
        marker_file.unlink(missing_ok=True)
        stopped.append(marker_file.parent.name)
    return stopped


def stop_docker_run(run_dir: Path) -> list[str]:
    """Stop the Docker run recorded in RUN_DIR, if any; the services stopped."""
    marker_file = Path(run_dir) / MARKER
    if not marker_file.is_file():
        return []
    marker = json.loads(marker_file.read_text())
    removed = remove_run(engine.connect(timeout=10), marker["run"])
    marker_file.unlink(missing_ok=True)
    return [name for name in removed if name != POD]
