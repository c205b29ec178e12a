"""A lab's Compose sandbox that the learner started, seen as a runtime.

`docker compose -f compose/NN-slug/compose.yaml up -d` runs a lab the way the Docker
runtime does (a `pod` container owning the network namespace, one container per
service joining it). `meshlab check N --runtime docker` then grades that sandbox in
place instead of starting containers of its own: `DockerRuntime.attach` finds it here.

The sandbox's containers carry labels from the rendered file (`io.meshlab.sandbox`: the
lab, `io.meshlab.service`), so they are found whatever Compose named the project; the
lab folder is the one mounted at /lab. Compose owns them: a check may stop, start and
restart a service's container (`lab.stopped`, a changed input), never remove one, and
nothing is stopped at the end. Their output (an Envoy's access log on stdout, every
service's own log on stderr) is followed into the run folder's files for as long as
this process lives, so checks read logs where they do on the other runtimes.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from meshlab.container import engine
from meshlab.course import Lab, ServiceSpec
from meshlab.envoy import Admin
from meshlab.errors import ServiceFailed
from meshlab.runtime import processes
from meshlab.runtime.docker import POD, DockerRunState, DockerService

SANDBOX_LABEL = f"{engine.LABEL}.sandbox"
SERVICE_LABEL = f"{engine.LABEL}.service"
PROJECT_LABEL = "com.docker.compose.project"
LAB_MOUNT = "/lab"


class ComposeSandbox:
    """The running Compose sandbox of one lab (see the module's docstring)."""

    name = "docker"

    def __init__(self, lab: Lab, lab_dir: Path, run_dir: Path, client, project: str):
        self.lab = lab
        self.lab_dir = Path(lab_dir).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.client = client
        self.project = project
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for spec in lab.services:
            self._follow(spec, since=time.time())

    @classmethod
    def find(cls, lab: Lab, run_dir: Path) -> "ComposeSandbox | None":
        """LAB's sandbox if its pod runs (None without an engine, or without a sandbox)."""
        if not engine.likely_present():
            return None
        client = engine.connect(timeout=10)
        pods = client.containers.list(filters={"label": [f"{SANDBOX_LABEL}={lab.slug}", f"{SERVICE_LABEL}={POD}"]})
        if not pods:
            return None
        project = pods[0].labels.get(PROJECT_LABEL, "")
        members = client.containers.list(all=True, filters={"label": [f"{SANDBOX_LABEL}={lab.slug}",
                                                                      f"{PROJECT_LABEL}={project}"]})
        lab_dirs = {mount["Source"] for member in members for mount in member.attrs.get("Mounts", [])
                    if mount.get("Destination") == LAB_MOUNT}
        if len(lab_dirs) != 1:
            return None
        return cls(lab, Path(lab_dirs.pop()), run_dir, client, project)

    # -- observing ---------------------------------------------------------------

    def _container(self, name: str):
        found = self.client.containers.list(all=True, filters={"label": [
            f"{SANDBOX_LABEL}={self.lab.slug}", f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={name}"]})
        return found[0] if found else None

    @property
    def state(self) -> DockerRunState:
        services = {}
        for spec in self.lab.services:
            container = self._container(spec.name)
            if container is not None and container.status == "running":
                services[spec.name] = DockerService(spec.name, spec.kind, container.attrs["State"]["Pid"],
                                                     dict(spec.ports), container.name)
        return DockerRunState(lab=self.lab.slug, lab_dir=str(self.lab_dir), detached=True, services=services)

    def is_running(self, name: str) -> bool:
        container = self._container(name)
        return container is not None and container.status == "running"

    def admin(self, name: str) -> Admin:
        spec = self.lab.service(name)
        if spec.admin_port is None or not self.is_running(name):
            raise ServiceFailed(f"{name} is not a running Envoy of lab {self.lab.slug}'s sandbox")
        return Admin(f"http://127.0.0.1:{spec.admin_port}")

    def network_namespace(self) -> str:
        pod = self._container(POD)
        if pod is None or pod.status != "running":
            raise ServiceFailed(f"the pod container of lab {self.lab.slug}'s sandbox is not running")
        return f"/proc/{pod.attrs['State']['Pid']}/ns/net"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def access_log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.access.log"

    def logs(self, lines: int = 20) -> dict[str, str]:
        return {spec.name: processes.tail(self.log_path(spec.name), lines) for spec in self.lab.services}

    # -- changing it -------------------------------------------------------------

    def start(self, name: str) -> None:
        container = self._container(name)
        if container is None:
            raise ServiceFailed(f"lab {self.lab.slug}'s sandbox has no container for {name}",
                                fix="start the whole sandbox again: docker compose -f compose/"
                                    f"{self.lab.slug}/compose.yaml up -d")
        if container.status != "running":
            since = time.time()
            container.start()
            self._follow(self.lab.service(name), since=since)
        self._wait_ready(self.lab.service(name))

    def stop(self, name: str) -> None:
        container = self._container(name)
        if container is not None and container.status == "running":
            container.stop(timeout=5)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop_all(self) -> None:
        """Nothing: the learner's Compose owns the sandbox (`docker compose ... down`)."""

    def start_all(self) -> None:
        raise ServiceFailed("a Compose sandbox is started by Compose",
                            fix=f"docker compose -f compose/{self.lab.slug}/compose.yaml up -d")

    def sync(self) -> list[str]:
        """Restart the services whose input files changed after their container started
        (Compose records no hashes of its own)."""
        changed = []
        for spec in self.lab.services:
            container = self._container(spec.name)
            if container is None:
                continue
            started = _timestamp(container.attrs["State"].get("StartedAt", ""))
            newest = max(((self.lab_dir / name).stat().st_mtime for name in spec.inputs
                          if (self.lab_dir / name).is_file()), default=0.0)
            if container.status != "running" or newest > started:
                self.restart(spec.name)
                changed.append(spec.name)
        return changed

    # -- internals ---------------------------------------------------------------

    def _follow(self, spec: ServiceSpec, *, since: float) -> None:
        """Copy the container's output into the run folder's files, from SINCE on, until
        the container stops (a restart follows again)."""
        container = self._container(spec.name)
        if container is None or container.status != "running":
            return
        stdout = self.access_log_path(spec.name) if spec.kind == "envoy" else self.log_path(spec.name)
        for stream, path in (("stdout", stdout), ("stderr", self.log_path(spec.name))):
            thread = threading.Thread(target=_copy, args=(container, stream, path, since), daemon=True,
                                      name=f"follow-{spec.name}-{stream}")
            thread.start()

    def _wait_ready(self, spec: ServiceSpec) -> None:
        from meshlab.runtime.docker import _listening_behind_relay

        deadline = time.monotonic() + spec.ready_timeout + 10
        while time.monotonic() < deadline:
            if spec.kind == "envoy":
                try:
                    state = httpx.get(f"http://127.0.0.1:{spec.admin_port}/ready", timeout=1.0, trust_env=False)
                    if state.text.strip() == "LIVE" or spec.ready == "admin":
                        return
                except httpx.HTTPError:
                    pass
            elif not spec.ports or _listening_behind_relay(next(iter(spec.ports.values()))):
                return
            time.sleep(0.1)
        raise ServiceFailed(f"{spec.name} of lab {self.lab.slug}'s sandbox did not become ready",
                            fix=f"docker compose -f compose/{self.lab.slug}/compose.yaml logs {spec.name}")


def _copy(container, stream: str, path: Path, since: float) -> None:
    try:
        chunks = container.logs(stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=True,
                                since=since)
        with open(path, "ab") as out:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
    except Exception:  # noqa: BLE001 - the engine went away: the log simply ends
        pass


def _timestamp(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    if not text:
        return 0.0
    head, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + float("0." + fraction[:6]) if fraction else seconds
