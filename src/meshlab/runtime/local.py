"""The local runtime: a lab's services as processes on this machine.

A run lives in a run directory (`.meshlab/runs/<slug>/` for the learner's workspace):
`state.json` (what runs, with PIDs and the hashes of the files each service was started
from) and one log per service. The state file is what lets `meshlab stop`, `status`,
`check` and `watch` find a lab that `meshlab start` left running, and restart only the
services whose files changed.

Ownership: a run started by a checker or by `meshlab watch` is *owned* by that process:
its services die with it (kernel parent-death signal) and are stopped when it ends; a
service another process restarts meanwhile cannot get that signal, so a run whose
owner has died is stopped by whoever finds it next. A run started by `meshlab start` is
*detached*: it survives until `meshlab stop`.

`meshlab stop` stops the learner's runs: detached ones, those of a `meshlab watch`, and
any whose owner died. A run a live check (or demo) started for itself is that owner's to
stop (`kept_by_owner`): stopped under its checks, it would only fail them, confusingly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from meshlab import ports as portcheck
from meshlab.course import Lab, ServiceSpec
from meshlab.envoy import Admin, find_binary
from meshlab.errors import InputError, Location, PortBusy, ServiceFailed, ToolMissing
from meshlab.platform import install_hint
from meshlab.runtime import processes
from meshlab.runtime.interface import input_hashes
from meshlab.runtime.pods import PodNetwork, record_from
from meshlab.runtime.pods import teardown as teardown_pods

if TYPE_CHECKING:  # imported where a service is probed: `meshlab list` and `stop` need no HTTP client
    import httpx

STATE_FILE = "state.json"
STATE_FOLDER = "state"             # services' own state for the run (MESHLAB_SERVICE_STATE)


@dataclass
class ServiceState:
    name: str
    kind: str
    pid: int
    pgid: int
    create_time: float
    argv: list[str]
    log: str
    ports: dict[str, int]
    inputs: dict[str, str] = field(default_factory=dict)  # file -> sha256 when started
    admin_url: str | None = None
    scratch: list[str] = field(default_factory=list)  # folders removed when it stops


@dataclass
class RunState:
    lab: str
    lab_dir: str
    detached: bool
    started_at: float
    owner_pid: int | None = None  # the process whose death ends the run (None: detached)
    owner_started: float | None = None  # its start time, so a reused PID is not mistaken for it
    owned_by: str | None = None  # what the owner is: "check", "demo" or "watch" (None: detached)
    services: dict[str, ServiceState] = field(default_factory=dict)
    pods: dict | None = None  # what meshlab.runtime.pods created for the run (a PodRecord)


class LocalRuntime:
    """Start, stop, restart and observe one lab's services."""

    def __init__(self, lab: Lab, lab_dir: Path, run_dir: Path, *, detached: bool = False,
                 owned_by: str = "check"):
        self.lab = lab
        self.lab_dir = Path(lab_dir).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.detached = detached
        self.state = RunState(lab=lab.slug, lab_dir=str(self.lab_dir), detached=detached, started_at=time.time(),
                              owner_pid=None if detached else os.getpid(),
                              owner_started=None if detached else processes.create_time(os.getpid()),
                              owned_by=None if detached else owned_by)
        self._popen: dict[str, subprocess.Popen] = {}
        self.pods: PodNetwork | None = None  # the lab's network namespaces, when it has pods
        self._begun = False  # ports checked and old logs cleared (`launch_early` or `start_all`)
        self._early: dict[str, ServiceState] = {}  # launched by `launch_early`, not yet seen ready

    # -- finding a run that is already there -------------------------------------

    @classmethod
    def attach(cls, lab: Lab, run_dir: Path) -> "LocalRuntime | None":
        """The run recorded in RUN_DIR if any of its services still runs, else None
        (a stale state file is removed)."""
        state = read_state(run_dir)
        if state is None:
            return None
        runtime = cls(lab, Path(state.lab_dir), run_dir, detached=state.detached)
        runtime.state = state
        record = record_from(state.pods)
        runtime.pods = PodNetwork(record) if record else None
        if orphaned(state) or not any(runtime.is_running(name) for name in state.services):
            runtime.stop_all()
            return None
        return runtime

    @property
    def owner(self) -> bool:
        """True in the process that owns this run (its services die with it)."""
        return self.state.owner_pid == os.getpid()

    def refresh(self) -> None:
        """Take the state file as the truth about what runs: another process (a check
        that restarted the app) may have changed it since this one last looked. Acting
        on a stale copy would start a second app, or stop a process that is gone and
        leave its successor running unrecorded."""
        state = read_state(self.run_dir)
        if state is None or state.started_at != self.state.started_at:
            return  # no run recorded, or another run: what we hold is all we know
        self.state = state
        for name, popen in list(self._popen.items()):
            service = state.services.get(name)
            if service is None or service.pid != popen.pid:
                popen.poll()  # our child, replaced by another process's: reap, forget
                del self._popen[name]

    def adopt(self) -> list[str]:
        """Re-read the state another process may have changed, and restart under this
        owner the services it restarted (so they die with us again)."""
        self.refresh()
        strays = [name for name, service in self.state.services.items()
                  if name not in self._popen or self._popen[name].pid != service.pid]
        for name in strays:
            self.restart(name)
        return strays

    # -- lifecycle ---------------------------------------------------------------

    def launch_early(self) -> None:
        """The start of `start_all` without its waiting: check ports and launch the
        services that wait for nothing, then return while they boot. The checker does
        this before it imports pytest and the checks (meshlab.checker_process), so the
        two take the time of one; `start_all` then waits for them and starts the rest.
        A lab's pods (namespaces, cgroups, the reaper) are made first: the services run
        in them."""
        self._begin()
        try:
            self._make_pods()
            for spec in self._start_waves()[0]:
                self._early[spec.name] = self._launch(spec, *self._prepare(spec))
        except BaseException:
            self.stop_all()
            raise

    def _begin(self) -> None:
        portcheck.ensure_free(self.lab.host_ports(), lab_ref=f"lab {self.lab.number:02d} ({self.lab.slug})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old_log in self.run_dir.glob("*.log"):
            old_log.unlink()  # a new run starts with empty logs; restarts within it append
        self._begun = True

    def start_all(self) -> None:
        """Check ports, then start every service once those it comes `after` are ready,
        and wait until each is ready. On any failure, what was started is stopped."""
        if not self._begun:
            self._begin()
        try:
            self._make_pods()
            # Side by side, pods or not: the pods' capture rules load only after every
            # service is up (a restart later lifts its pod's rules while it starts).
            for wave in self._start_waves():
                self._start_together(wave)
            self._apply_pod_rules()
        except BaseException:
            self.stop_all()
            raise

    def _make_pods(self) -> None:
        """The lab's pods, once per run (`launch_early` may have made them already)."""
        if self.lab.pods and self.pods is None:
            # The services' state folder holds keys (lab 11's CA): if the owner is killed,
            # the reaper removes it with the pods rather than leave it to the next command.
            self.pods = PodNetwork.create(self.lab, self.run_dir, owner_pid=self.state.owner_pid,
                                          private_folders=[self.run_dir / STATE_FOLDER])
            self.state.pods = asdict(self.pods.record)
            self._save()

    def _start_together(self, wave: list[ServiceSpec]) -> None:
        """Launch every service of WAVE, then wait for each: none of them waits for
        another, so they come up side by side (lab 03's seven apps in the time of one)."""
        self.refresh()  # once: a refresh between launches would replace the records just made
        launched = [(spec, self._early.pop(spec.name)) if spec.name in self._early else
                    (spec, self._launch(spec, *self._prepare(spec)))
                    for spec in wave if spec.name in self._early or not self.is_running(spec.name)]
        for spec, service in launched:
            self._settle(spec, service)

    def start(self, name: str) -> ServiceState:
        spec = self.lab.service(name)
        self.refresh()
        if self.is_running(name):
            return self.state.services[name]
        argv, log_path, env, scratch = self._prepare(spec)
        lifted = self.pods.capture_lifted(spec.pod) if self.pods is not None else contextlib.nullcontext()
        with lifted:
            service = self._launch(spec, argv, log_path, env, scratch)
            return self._settle(spec, service)

    def _prepare(self, spec: ServiceSpec) -> tuple[list[str], Path, dict, list[str]]:
        """What launching SPEC takes: its argv, log, environment and emptied scratch folders."""
        name = spec.name
        argv = self._argv(spec)
        if self.pods is not None:
            argv = self.pods.launcher(spec, argv)
        log_path = self.run_dir / f"{name}.log"
        # A service may keep what must survive its own restarts (a CA's key) in the run's
        # state folder; it goes when the run stops.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MESHLAB_SERVICE_STATE": str(self.run_dir / STATE_FOLDER),
               **spec.env}
        scratch = [str(self.lab_dir / folder) for folder in spec.scratch]
        for folder in scratch:  # what a killed run left behind is not this run's data
            shutil.rmtree(folder, ignore_errors=True)
            Path(folder).mkdir(parents=True)
        # The address file of a previous start must be gone before Envoy can write the new
        # one: removed any later, a fast Envoy's fresh file could be the one removed.
        self._admin_address_file(name).unlink(missing_ok=True)
        return argv, log_path, env, scratch

    def _launch(self, spec: ServiceSpec, argv: list[str], log_path: Path, env: dict, scratch: list[str]) -> ServiceState:
        """Spawn SPEC's process and record it (not yet ready)."""
        name = spec.name
        with open(log_path, "ab") as log:
            log.write(f"--- meshlab: starting {name} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            # Envoy's stdout carries the access log of configs that write to /dev/stdout.
            stdout = open(self.run_dir / f"{name}.access.log", "ab") if spec.kind == "envoy" else log
            try:
                if self.owner:
                    # Our child, killed by the kernel if we die.
                    popen = processes.spawn(argv, cwd=self.lab_dir, env=env, stdout=stdout, stderr=log,
                                            die_with_parent=True)
                    self._popen[name] = popen
                    pid = popen.pid
                else:
                    # Not ours to keep alive: a detached run, or a restart on behalf of the
                    # owner (who adopts it afterwards). It must not die with this process.
                    pid = processes.spawn_detached(argv, cwd=self.lab_dir, env=env, stdout=stdout, stderr=log)
            finally:
                if stdout is not log:
                    stdout.close()
        service = ServiceState(
            name=name, kind=spec.kind, pid=pid, pgid=processes.group_of(pid),
            create_time=processes.create_time(pid) or time.time(), argv=argv, log=str(log_path),
            ports=dict(spec.ports), inputs=input_hashes(self.lab_dir, spec), scratch=scratch,
        )
        self.state.services[name] = service
        self._save()
        return service

    def _settle(self, spec: ServiceSpec, service: ServiceState) -> ServiceState:
        """Wait until SERVICE is ready; one that never is, is stopped."""
        try:
            self._wait_ready(spec, service)  # fills in what readiness learns (an Envoy's admin address)
        except BaseException:
            self.stop(spec.name)
            raise
        self.state.services[spec.name] = service
        self._save()
        return service

    def stop(self, name: str) -> None:
        self.refresh()
        service = self.state.services.get(name)
        if service is None:
            return
        if processes.alive(service.pid, service.create_time):
            processes.terminate_group(service.pgid, service.pid, popen=self._popen.get(name))
        elif name in self._popen:
            self._popen[name].poll()
        self._popen.pop(name, None)
        remove_scratch(service)
        del self.state.services[name]
        self._save()

    def restart(self, name: str) -> ServiceState:
        self.stop(name)
        return self.start(name)

    def stop_all(self) -> None:
        """Stop every service, all at once: nothing is left to serve, so no order matters."""
        with _uninterrupted():
            self._stop_all()

    def _stop_all(self) -> None:
        self.refresh()
        running = {name: service for name, service in self.state.services.items()
                   if processes.alive(service.pid, service.create_time)}
        processes.terminate_groups([(s.pgid, s.pid, self._popen.get(name)) for name, s in running.items()])
        for name, service in list(self.state.services.items()):
            if name in self._popen:
                self._popen.pop(name).poll()
            remove_scratch(service)
            del self.state.services[name]
        self._early.clear()
        self._save()
        if self.pods is not None:
            self.pods.teardown()
        self._forget()

    def sync(self) -> list[str]:
        """Restart the services whose input files changed since they started, and start
        those that are not running. Returns the names of what was (re)started."""
        self.refresh()
        changed = []
        for spec in self._start_order():
            service = self.state.services.get(spec.name)
            if service is None or not self.is_running(spec.name):
                changed.append(spec.name)
                self.stop(spec.name)
                self.start(spec.name)
            elif service.inputs != input_hashes(self.lab_dir, spec):
                changed.append(spec.name)
                self.restart(spec.name)
        reloaded = self._apply_pod_rules()
        # A rule acts on the connections opened after it: what runs in a pod whose rules
        # changed restarts, or Envoy's kept-alive upstream connections (opened under the
        # old rules) would hide what the new ones do, a capture loop for instance.
        again = [spec.name for spec in self._start_order() if spec.pod in reloaded and spec.name not in changed]
        for name in again:
            self.restart(name)
        return changed + [f"iptables of {pod}" for pod in reloaded] + again

    def restart_envoys(self) -> list[str]:
        """Restart every Envoy of the lab, in start order, and nothing else: their
        counters start from zero again (a check's traffic leaves its own counts, an
        ejected host stays ejected), while the apps keep running."""
        envoys = [spec.name for spec in self._start_order() if spec.kind == "envoy"]
        for name in envoys:
            self.restart(name)
        return envoys

    # -- observing ---------------------------------------------------------------

    def is_running(self, name: str) -> bool:
        service = self.state.services.get(name)
        return service is not None and processes.alive(service.pid, service.create_time)

    def admin(self, name: str) -> Admin:
        service = self.state.services.get(name)
        if service is None or not service.admin_url:
            raise ServiceFailed(f"{name} is not a running Envoy of lab {self.lab.slug}")
        return Admin(service.admin_url, transport=self._transport(self.lab.service(name)))

    def network_namespace(self) -> None:
        """None: the services (pods aside) share the caller's network namespace."""
        return None

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def access_log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.access.log"

    def logs(self, lines: int = 20) -> dict[str, str]:
        """The tail of each service's log, for failure reports."""
        return {spec.name: processes.tail(self.log_path(spec.name), lines) for spec in self.lab.services}

    # -- internals ---------------------------------------------------------------

    def _start_waves(self) -> list[list[ServiceSpec]]:
        """The services in waves: a service's wave comes after those of everything it
        starts `after`; within a wave, the manifest's order."""
        wave_of: dict[str, int] = {}
        for spec in self._start_order():
            wave_of[spec.name] = 1 + max((wave_of[dep] for dep in spec.after), default=-1)
        waves: list[list[ServiceSpec]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
        for spec in self.lab.services:
            waves[wave_of[spec.name]].append(spec)
        return waves

    def _start_order(self) -> list[ServiceSpec]:
        ordered: list[ServiceSpec] = []
        pending = list(self.lab.services)
        while pending:
            for spec in pending:
                if all(dep in {s.name for s in ordered} for dep in spec.after):
                    ordered.append(spec)
                    pending.remove(spec)
                    break
            else:
                raise ServiceFailed(f"services of lab {self.lab.slug} wait for each other in a cycle: "
                                    + ", ".join(s.name for s in pending))
        return ordered

    def _argv(self, spec: ServiceSpec) -> list[str]:
        if spec.kind == "envoy":
            return [
                str(find_binary().path), "-c", str(self.lab_dir / spec.target),
                # Envoy picks a free base id: two Envoys never fight over shared memory.
                "--use-dynamic-base-id", "--base-id-path", str(self.run_dir / f"{spec.name}.base-id"),
                "--admin-address-path", str(self._admin_address_file(spec.name)),
                # Warnings and worse; but the start-up advice about connection limits
                # (component `main`, level warning) is noise in a lab.
                "--concurrency", str(spec.concurrency), "-l", "warning", "--component-log-level", "main:error",
                *spec.args,
            ]
        if spec.kind == "python":
            return [sys.executable, "-m", str(spec.target), *spec.args]
        program = _python_or(spec.target[0])
        resolved = shutil.which(program)
        if resolved is None:
            raise ToolMissing(f"lab {self.lab.slug} needs `{program}`, which is not installed",
                              fix=install_hint(program))
        return [resolved, *spec.target[1:], *spec.args]

    def _admin_address_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.admin-address"

    def _wait_ready(self, spec: ServiceSpec, service: ServiceState) -> None:
        deadline = time.monotonic() + spec.ready_timeout
        delay = 0.005
        while True:
            popen = self._popen.get(spec.name)
            if popen is not None and popen.poll() is not None:
                raise self._exited(spec, popen.returncode)
            if popen is None and not processes.alive(service.pid, service.create_time):
                raise self._exited(spec, None)
            if self._probe(spec, service):
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"{spec.name} did not become ready within {spec.ready_timeout:.0f} s",
                    details=processes.tail(self.log_path(spec.name), 15),
                    fix=self._ready_fix(spec),
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.02)  # a service is often ready between two probes: look often

    def _probe(self, spec: ServiceSpec, service: ServiceState) -> bool:
        if spec.kind == "envoy":
            import httpx

            address_file = self._admin_address_file(spec.name)
            if not address_file.is_file() or not address_file.read_text().strip():
                return False
            service.admin_url = "http://" + address_file.read_text().strip()
            try:
                # verify=False: plain HTTP to an admin port, no TLS, so no CA bundle to load (~50 ms a client).
                with httpx.Client(timeout=1.0, trust_env=False, verify=False, transport=self._transport(spec)) as http:
                    state = http.get(service.admin_url + "/ready").text.strip()
            except httpx.HTTPError:
                return False
            # `ready: admin` is for an Envoy that waits on a control plane which may not
            # answer yet (a learner's unfinished one): up is enough, LIVE is not needed.
            return state == "LIVE" or spec.ready == "admin"
        if not spec.ports:
            return True
        port = next(iter(spec.ports.values()))
        if spec.pod is not None and self.pods is not None:
            inside = self.pods.namespace(spec.pod)
            return any(inside.can_connect(host, port) for host in ("127.0.0.1", self.lab.pod(spec.pod).ip))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _ready_fix(self, spec: ServiceSpec) -> str:
        if spec.kind == "envoy":
            return (f"make sure the config has an `admin:` section listening on 127.0.0.1:{spec.admin_port}; "
                    f"read {self.log_path(spec.name)} for Envoy's own explanation")
        return f"read {self.log_path(spec.name)}"

    def _exited(self, spec: ServiceSpec, code: int | None) -> Exception:
        log_tail = processes.tail(self.log_path(spec.name), 15)
        if "cannot bind" in log_tail and "Address already in use" in log_tail:
            address = log_tail.split("cannot bind '", 1)[1].split("'", 1)[0]
            port = int(address.rsplit(":", 1)[1]) if address.rsplit(":", 1)[-1].isdigit() else None
            who = portcheck.holder(port) if port else None
            return PortBusy(f"{spec.name} (Envoy) could not listen on {address}: the address is in use",
                            details=f"  held by {who or 'another process'}",
                            fix="stop the process holding the port, or check that your config does not use "
                                "the same port twice (admin and listeners must differ)")
        what = "Envoy" if spec.kind == "envoy" else spec.kind
        how = f"with code {code}" if code is not None else "early"
        return ServiceFailed(f"{spec.name} ({what}) exited {how} while starting",
                             details=log_tail, fix=f"read the log above (all of it: {self.log_path(spec.name)})")

    def _transport(self, spec: ServiceSpec) -> httpx.BaseTransport | None:
        """How to reach SPEC's ports: from inside its pod, or (None) from here."""
        if spec.pod is None or self.pods is None:
            return None
        return self.pods.transport(spec.pod)

    def _apply_pod_rules(self) -> list[str]:
        """Load the pods' iptables rules (after the services are up, so that readiness
        probes are not captured), again whenever a rules file changes. Returns the pods
        whose rules were (re)loaded."""
        if self.pods is None:
            return []
        changed = self.pods.apply_rules(self.lab, self.lab_dir)
        if changed:
            self.state.pods = asdict(self.pods.record)
            self._save()
        return changed

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self.state)
        temporary = self.run_dir / (STATE_FILE + ".tmp")
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(self.run_dir / STATE_FILE)

    def _forget(self) -> None:
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / STATE_FOLDER, ignore_errors=True)


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C and SIGTERM wait until the block is done, and arrive right after it: a
    teardown cut halfway would leave processes, namespaces and cgroups behind. The
    handlers are swapped rather than the signals masked: the kernel gives a signal to any
    thread that does not mask it (a lab with pods has threads in their namespaces), and
    Python then raises in the main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers, and only it receives their exceptions
        return
    arrived: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda number, _frame: arrived.append(number)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if arrived:
            signal.raise_signal(arrived[0])  # now handled as it would have been


def run_prepare_steps(lab: Lab, lab_dir: Path) -> None:
    """Run the lab's `prepare` commands in LAB_DIR (for example: make certificates),
    before preflight, since the configs may refer to what they produce."""
    # The course's own tools first on PATH, so a step (or a script it runs) that calls
    # `meshlab` or `python` gets the course's, even when its virtualenv is not activated.
    tools = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([tools, os.environ.get("PATH", os.defpath)])}
    for command in lab.prepare:
        argv = [_python_or(command[0]), *command[1:]]
        proc = subprocess.run(argv, cwd=lab_dir, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            where = _learner_file_position(lab, lab_dir, output)
            if where is not None:
                # A compiler (or script) that names FILE:LINE of a file the learner edits:
                # the learner's mistake, reported at that line with the tool's own words.
                lines = output.splitlines()
                shown = "\n".join(lines[:40]) + (f"\n  ... ({len(lines) - 40} more lines)" if len(lines) > 40 else "")
                raise InputError(f"{where.file.name} does not build: `{' '.join(command)}` failed",
                                 where=where, details=shown,
                                 fix=f"fix {where.file.name} at line {where.line} (the message above is the tool's)")
            raise ServiceFailed(
                f"the prepare step `{' '.join(command)}` of lab {lab.slug} failed (exit {proc.returncode})",
                details="\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]),
                fix="run the step by hand in the lab folder to see the whole output",
            )


def _learner_file_position(lab: Lab, lab_dir: Path, output: str) -> Location | None:
    """The first FILE:LINE[:COLUMN] in OUTPUT that names a file the learner edits (the
    form compilers use: `filter.rs:12:5: error ...`, `--> filter.rs:12:5`)."""
    names = sorted(lab.edit, key=len, reverse=True)
    if not names:
        return None
    pattern = re.compile(r"(?<![\w/.-])(?:[\w./-]*/)?(" + "|".join(re.escape(n) for n in names) + r"):(\d+)(?::(\d+))?")
    match = pattern.search(output)
    if match is None:
        return None
    column = int(match.group(3)) if match.group(3) else None
    return Location(lab_dir / match.group(1), int(match.group(2)), column)


def _python_or(program: str) -> str:
    """`python` in a manifest means the interpreter meshlab runs on (the course's venv)."""
    return sys.executable if program in ("python", "python3") else program


def orphaned(state: RunState) -> bool:
    """True when the process that owned the run is gone (its services must go too)."""
    return state.owner_pid is not None and not processes.alive(state.owner_pid, state.owner_started)


def kept_by_owner(state: RunState) -> bool:
    """True when a live process other than `meshlab watch` owns the run: a check (or a
    demo) that started it for itself, uses it now and stops it when it ends. `meshlab
    stop` leaves such a run alone; a watched, detached or orphaned run is the learner's."""
    return state.owner_pid is not None and state.owned_by != "watch" and not orphaned(state)


def stop_orphaned_runs(runs_dir: Path) -> list[str]:
    """Stop every run under RUNS_DIR whose owner died (killed before it could clean up).
    Returns the names of the runs stopped."""
    stopped = []
    for run_dir in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        state = read_state(run_dir) if run_dir.is_dir() else None
        if state is not None and orphaned(state):
            stop_run(run_dir)
            stopped.append(run_dir.name)
    return stopped


def read_state(run_dir: Path) -> RunState | None:
    try:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    services = {name: ServiceState(**body) for name, body in data.pop("services", {}).items()}
    return RunState(**data, services=services)


def stop_run(run_dir: Path) -> list[str]:
    """Stop whatever RUN_DIR records, without needing the lab's manifest."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    for service in reversed(list(state.services.values())):
        if processes.alive(service.pid, service.create_time):
            processes.terminate_group(service.pgid, service.pid)
            stopped.append(service.name)
        remove_scratch(service)
    record = record_from(state.pods)
    if record is not None:
        teardown_pods(record)
    (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / STATE_FOLDER, ignore_errors=True)
    return stopped


def remove_scratch(service: ServiceState) -> None:
    """Remove the folders SERVICE wrote and nobody keeps (it has stopped)."""
    for folder in service.scratch:
        shutil.rmtree(folder, ignore_errors=True)
