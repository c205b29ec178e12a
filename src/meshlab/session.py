"""A lab under test: its running services, their admin APIs, and HTTP for checks.

`LabSession.open` is what the checker's `lab` fixture does once per run: check the
machine and the learner's files (preflight), then either attach to the lab the learner
left running with `meshlab start` (restarting only what changed) or start it, owned by
this process, and stop it again at the end.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import httpx

from meshlab import platform, preflight
from meshlab.apps.server import JOURNAL_PATH
from meshlab.course import Course, Lab, run_dir_for  # noqa: F401 - where callers long found it
from meshlab.envoy import Admin
from meshlab.errors import PortBusy
from meshlab.grading import http as grading_http
from meshlab.grading.raised import Raised, learners_tracebacks
from meshlab.runtime import LocalRuntime
from meshlab.runtime.interface import runtime_class


class LabSession:
    def __init__(self, lab: Lab, lab_dir: Path, runtime: LocalRuntime, *, owned: bool):
        self.lab = lab
        self.dir = Path(lab_dir)
        self.runtime = runtime
        self.owned = owned
        self.http = httpx.Client(timeout=10.0, trust_env=False)
        self._admins: dict[str, Admin] = {}
        self._pods: dict[str, httpx.Client] = {}

    @classmethod
    def open(cls, lab: Lab, lab_dir: Path, run_dir: Path) -> "LabSession":
        lab_dir = Path(lab_dir).resolve()
        lab_ref = f"lab {lab.number:02d} ({lab.slug})"
        platform.require(lab.requires, lab_ref=lab_ref)
        preflight.prepare_and_check(lab, lab_dir, passed=os.environ.get(preflight.PASSED_ENV))
        runtime_type = runtime_class()  # local, or MESHLAB_RUNTIME's choice
        running = runtime_type.attach(lab, run_dir)
        if running is not None:
            if running.lab_dir != lab_dir:
                raise PortBusy(f"{lab_ref} is already running from {running.lab_dir}",
                               fix=f"stop it first: meshlab stop {lab.number}")
            running.sync()  # restart what the learner changed since `meshlab start`
            return cls(lab, lab_dir, running, owned=False)
        runtime = runtime_type(lab, lab_dir, run_dir, detached=False)
        runtime.start_all()
        return cls(lab, lab_dir, runtime, owned=True)

    def close(self) -> None:
        for admin in self._admins.values():
            admin.close()
        for client in self._pods.values():
            client.close()
        self.http.close()
        if self.owned:
            self.runtime.stop_all()

    # -- Envoy -------------------------------------------------------------------

    def envoy(self, name: str | None = None) -> Admin:
        """The admin API of the lab's Envoy NAME (the only one, when there is one)."""
        if name is None:
            envoys = self.lab.envoys
            if len(envoys) != 1:
                raise ValueError(f"lab {self.lab.slug} has {len(envoys)} Envoys: name one")
            name = envoys[0].name
        if name not in self._admins:
            self._admins[name] = self.runtime.admin(name)
        return self._admins[name]

    # -- the lab's ports, from its manifest -------------------------------------

    def port(self, service: str, role: str | None = None) -> int:
        """The port the manifest gives SERVICE for ROLE (`listener`, `admin`, ...); ROLE
        may be left out when the service has one port.

            lab.port("sidecar", "listener")   # 10000 in lab 01
            lab.port("app")                   # 8080
        """
        ports = self.lab.service(service).ports
        if role is None:
            if len(ports) != 1:
                raise ValueError(f"service {service} of lab {self.lab.slug} has ports {sorted(ports)}: name one")
            return next(iter(ports.values()))
        return ports[role]

    def url(self, service: str, role: str | None = None, path: str = "") -> str:
        """`http://127.0.0.1:PORT` + PATH for SERVICE's port (see `port`)."""
        return f"http://127.0.0.1:{self.port(service, role)}{path}"

    # -- traffic -----------------------------------------------------------------

    def get(self, url: str, *, hint: str | None = None, **kwargs: object) -> httpx.Response:
        return grading_http.request(self.http, "GET", url, hint=hint, **kwargs)

    def request(self, method: str, url: str, *, hint: str | None = None, **kwargs: object) -> httpx.Response:
        return grading_http.request(self.http, method, url, hint=hint, **kwargs)

    # -- what reached an app -----------------------------------------------------

    def pod(self, name: str, *, unix: str | None = None) -> httpx.Client:
        """An HTTP client whose requests leave from inside the lab's pod NAME (as a
        process of that pod that is in none of the lab's cgroups and runs as root).
        With UNIX (an app's `--unix @name`), every request goes to that abstract Unix
        socket of the pod instead: a way in that no firewall rule sees."""
        key = f"{name} {unix}"
        if key not in self._pods:
            if self.runtime.pods is None:
                raise ValueError(f"lab {self.lab.slug} has no pods")
            uds = "\0" + unix[1:] if unix and unix.startswith("@") else unix
            self._pods[key] = self.runtime.pods.client(name, uds=uds, timeout=10.0)
        return self._pods[key]

    def journal(self, service: str, since: int = 0) -> list[dict]:
        """Requests the app SERVICE received after sequence number SINCE, asked of the
        app directly (not through Envoy; from inside its pod for an app in a pod)."""
        spec = self.lab.service(service)
        http = self.pod(spec.pod) if spec.pod else self.http
        role = next(iter(spec.ports))  # an app journals on its (first) HTTP port
        response = http.get(self.url(service, role, JOURNAL_PATH), params={"since": since})
        response.raise_for_status()
        return response.json()

    def journal_position(self, service: str) -> int:
        entries = self.journal(service)
        return entries[-1]["seq"] if entries else 0

    # -- changing the world, and putting it back ---------------------------------

    @contextlib.contextmanager
    def stopped(self, service: str) -> Iterator[None]:
        """Stop SERVICE for the block, then start it again and wait until it is ready."""
        self.runtime.stop(service)
        try:
            yield
        finally:
            self.runtime.start(service)

    def logs(self, lines: int = 20) -> dict[str, str]:
        return self.runtime.logs(lines)

    def raised(self) -> Raised | None:
        """The latest exception the learner's code raised in a service of the lab, as its
        log shows it since the service last started (None: nothing raised)."""
        found: list[tuple[float, Raised]] = []
        for name, service in self.runtime.state.services.items():
            path = self.runtime.log_path(name)
            try:
                log = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            since_start = log.rsplit(f"--- meshlab: starting {name} at", 1)[-1]
            tracebacks = learners_tracebacks(name, since_start, self.dir, self.lab.edit)
            if tracebacks:
                found.append((path.stat().st_mtime, tracebacks[-1]))
        return max(found, key=lambda pair: pair[0])[1] if found else None

