"""A lab under test: its running services, their admin APIs, and HTTP for checks.

`LabSession.open` is what the checker's `lab` fixture does once per run: check the
machine and the learner's files (preflight), then either attach to the lab the learner
left running with `meshlab start` (restarting only what changed) or start it, owned by
this process, and stop it again at the end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

import httpx

from meshlab import platform, preflight
from meshlab.apps.server import JOURNAL_PATH
from meshlab.course import Course, Lab, run_dir_for  # noqa: F401 - where callers long found it
from meshlab.envoy import Admin
from meshlab.errors import MeshlabError, PortBusy, ServiceFailed
from meshlab.grading import http as grading_http
from meshlab.grading.raised import Raised, learners_tracebacks
from meshlab.runtime import LocalRuntime
from meshlab.runtime.enter import enter_netns
from meshlab.runtime.interface import runtime_class


def _prepare(lab: Lab, lab_dir: Path) -> type:
    """What comes before a lab starts: the machine has what it needs, the learner's files
    pass preflight. Returns the runtime to start it on."""
    runtime_type = runtime_class(lab=lab)  # local, or MESHLAB_RUNTIME's choice (if it fits the lab)
    platform.require(lab.requires, lab_ref=f"lab {lab.number:02d} ({lab.slug})")
    # The lab's Envoys are about to load their configs: they are the validation (see
    # preflight.check_files), and preflight runs Envoy only to explain one that fails.
    preflight.prepare_and_check(lab, lab_dir, passed=os.environ.get(preflight.PASSED_ENV), run_envoy=False)
    return runtime_type


# Labs whose first services `launch_early` launched before pytest was imported, for
# `LabSession.open` to finish starting: (slug, lab folder, run folder) -> the runtime,
# or the error that stopped it (raised by `open`, where the checks expect it).
_launched_early: dict[tuple[str, Path, Path], "LocalRuntime | MeshlabError"] = {}


def _early_key(lab: Lab, lab_dir: Path, run_dir: Path) -> tuple[str, Path, Path]:
    return lab.slug, Path(lab_dir).resolve(), Path(run_dir).resolve()


def launch_early(lab: Lab, lab_dir: Path, run_dir: Path) -> None:
    """Prepare LAB and launch the services that wait for nothing, without waiting for
    them (see LocalRuntime.launch_early): the checker's process does this first, and
    boots the lab while it imports pytest. Nothing happens for a lab that is already
    running (the learner's `meshlab start`) or runs on another runtime."""
    key = _early_key(lab, lab_dir, run_dir)
    try:
        runtime_type = _prepare(lab, Path(lab_dir).resolve())
        if runtime_type is not LocalRuntime or runtime_type.attach(lab, run_dir) is not None:
            return
        runtime = LocalRuntime(lab, lab_dir, run_dir, detached=False)
        runtime.launch_early()
    except MeshlabError as error:
        _launched_early[key] = error
        return
    _launched_early[key] = runtime


def stop_unclaimed() -> None:
    """Stop what `launch_early` started and no session took (the checks never ran)."""
    for runtime in _launched_early.values():
        if isinstance(runtime, LocalRuntime):
            runtime.stop_all()
    _launched_early.clear()


class LabSession:
    def __init__(self, lab: Lab, lab_dir: Path, runtime: LocalRuntime, *, owned: bool):
        self.lab = lab
        self.dir = Path(lab_dir)
        self.runtime = runtime
        self.owned = owned
        # verify=False: the lab's traffic is plain HTTP on loopback (TLS checks make their own
        # contexts), and loading a CA bundle costs ~20 ms at every check.
        self.http = httpx.Client(timeout=10.0, trust_env=False, verify=False)
        self._admins: dict[str, Admin] = {}
        self._pods: dict[str, httpx.Client] = {}
        self._left_stopped: list[str] = []  # see `stopped(..., restart=False)`

    @classmethod
    def open(cls, lab: Lab, lab_dir: Path, run_dir: Path, *, owned_by: str = "check") -> "LabSession":
        """The lab running from LAB_DIR: the one already there, else one started now and
        owned by this process (OWNED_BY says what it is, for `meshlab stop`)."""
        lab_dir = Path(lab_dir).resolve()
        lab_ref = f"lab {lab.number:02d} ({lab.slug})"
        early = _launched_early.pop(_early_key(lab, lab_dir, run_dir), None)
        if isinstance(early, MeshlabError):
            raise early
        if early is None:
            runtime_type = _prepare(lab, lab_dir)
            running = runtime_type.attach(lab, run_dir)
        else:
            running = None
        try:
            if running is not None:
                if running.lab_dir != lab_dir:
                    raise PortBusy(f"{lab_ref} is already running from {running.lab_dir}",
                                   fix=f"stop it first: meshlab stop {lab.number}")
                running.sync()  # restart what the learner changed since `meshlab start`
                session = cls(lab, lab_dir, running, owned=False)
            else:
                runtime = early or runtime_type(lab, lab_dir, run_dir, detached=False, owned_by=owned_by)
                runtime.start_all()
                session = cls(lab, lab_dir, runtime, owned=True)
        except ServiceFailed:
            preflight.check_files(lab, lab_dir)  # raises the config's error, at its line, if that is the cause
            raise
        session._join_network()
        return session

    def close(self) -> None:
        try:
            if not self.owned:
                self.restore()  # the learner's running lab is left whole
        finally:
            for admin in self._admins.values():
                admin.close()
            for client in self._pods.values():
                client.close()
            self.http.close()
            self._leave_network()
            if self.owned:
                self.runtime.stop_all()

    # -- where 127.0.0.1 is ------------------------------------------------------

    def _join_network(self) -> None:
        """See the lab from inside the network namespace its services share, when the
        runtime gives them one of their own (Docker's pod): 127.0.0.1 in a check is then
        their 127.0.0.1 both ways, so a check may also serve something a service connects
        to (lab 04's impostor server), and a port a check frees is free for it.

        Only this (the main) thread moves, and the threads it starts later; it comes back
        at `close`. Entering another namespace takes root (CAP_SYS_ADMIN): without it,
        checks reach the services through the ports the runtime publishes on the host,
        which is enough for every check that only sends requests."""
        self._home_network = None
        path = self.runtime.network_namespace()
        if path is None:
            return
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            enter_netns(path)
        except PermissionError:
            os.close(home)
            return
        self._home_network = home

    def _leave_network(self) -> None:
        home, self._home_network = getattr(self, "_home_network", None), None
        if home is not None:
            enter_netns(f"/proc/self/fd/{home}")
            os.close(home)

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

    def address(self, service: str, role: str | None = None) -> str:
        """`HOST:PORT` where the lab's other pods reach SERVICE's port (see `port`):
        HOST is the address the manifest gives SERVICE's pod, 127.0.0.1 for a
        service outside any pod.

            lab.address("remote")             # 10.77.7.3:8080 in lab 07
        """
        pod = self.lab.service(service).pod
        host = self.lab.pod(pod).ip if pod else "127.0.0.1"
        return f"{host}:{self.port(service, role)}"

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
    def stopped(self, service: str, *, restart: bool = True) -> Iterator[None]:
        """Stop SERVICE for the block, then start it again and wait until it is ready.

        With RESTART false, for a check that does not use SERVICE after the block, it
        stays stopped until `restore`, which the checker calls before the next check and
        at the end of a run it did not start; a run that ends here, in the process that
        started it, is stopped whole without waiting for a start nothing would use (a
        Python service's start is most of what a check that stops it takes)."""
        self.restore()
        self.runtime.stop(service)
        try:
            yield
        except BaseException as error:
            # Ctrl-C, pytest's own outcomes (skip, fail, a timeout): the check ends here,
            # so the start waits for `restore` like RESTART false. A Ctrl-C would wait for
            # a start that the run's stop undoes at once.
            if restart and isinstance(error, Exception):
                self.runtime.start(service)
            else:
                self._left_stopped.append(service)
            raise
        if restart:
            self.runtime.start(service)
        else:
            self._left_stopped.append(service)

    def restore(self) -> None:
        """Start again, and wait for, what a check left stopped (see `stopped`)."""
        while self._left_stopped:
            self.runtime.start(self._left_stopped.pop(0))

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

