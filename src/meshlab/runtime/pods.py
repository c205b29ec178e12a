"""Pods: network namespaces a lab creates, and the cgroups and rules that go with them.

A lab that declares `pods:` gets, for one run:

- one network namespace per pod (`ml<tag>-<pod>`), its loopback up and an `eth0` with
  the pod's address, all pods joined by veth pairs to one bridge that lives in a hub
  namespace of its own (`ml<tag>-hub`). The tag comes from the run: `07` for the
  learner's workspace of lab 07 (so `ip netns exec ml07-pod ...` can be pasted), `07-`
  and a hash of the folder for other folders graded (so parallel runs never meet). Nothing is added to the namespace meshlab runs
  in: the pods' addresses exist only inside the namespaces the lab created, so nothing
  they send can leave the machine;
- one cgroup v2 per `cgroup:` name its services use (`meshlab-<tag>/<name>`);
- the iptables rules of each pod that names a rules file (iptables-restore format),
  applied once its services are up, and again when the file changes; lifted while
  one of the pod's services restarts, so that meshlab's readiness probe is never captured;
- the run's private folders, which the runtime names (its services' own state: a CA's
  private key), removed with the rest so that no key outlives the run.

Everything is removed by `teardown`: at stop, after a failed check, on Ctrl-C; and when
the run's owner is killed outright, by a small reaper process that waits for the owner's
death (`python -m meshlab.runtime.pods reap OWNER RECORD`). Deleting a namespace removes
its interfaces and iptables rules with it; BPF programs attached to a cgroup go with the
cgroup or with the process holding their link.

Requires root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2, util-linux's nsenter and
setpriv, and iptables for pods with rules; `meshlab.platform` probes for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from meshlab.course import Lab, ServiceSpec
from meshlab.errors import InputError, Location, ServiceFailed
from meshlab.runtime import enter

if TYPE_CHECKING:  # httpx is imported when a pod is reached, not by `meshlab list`
    from collections.abc import Sequence

    import httpx

    from meshlab.runtime import netns

NETNS_DIR = Path("/run/netns")


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (hybrid systems: /sys/fs/cgroup/unified)."""
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.procs").is_file() and (candidate / "cgroup.subtree_control").exists():
            return candidate
    return None


@dataclass
class PodRecord:
    """What a run created, as kept in its state file: enough to remove it all later,
    without the lab's manifest."""

    tag: str
    namespaces: dict[str, str] = field(default_factory=dict)   # pod (or "hub") -> netns name
    cgroups: dict[str, str] = field(default_factory=dict)      # cgroup name -> directory
    cgroup_parent: str | None = None
    rules: dict[str, str] = field(default_factory=dict)        # pod -> sha256 of the rules applied
    reaper_pid: int | None = None
    # Folders only the run writes (its services' state, keys among them): they go with it.
    private_folders: list[str] = field(default_factory=list)


class PodNetwork:
    """The pods of one run of a lab."""

    def __init__(self, record: PodRecord):
        self.record = record
        self._namespaces: dict[str, netns.Namespace] = {}

    # -- creating --------------------------------------------------------------------

    @classmethod
    def create(cls, lab: Lab, run_dir: Path, *, owner_pid: int | None,
               private_folders: Sequence[Path] = ()) -> "PodNetwork":
        """Namespaces, links and cgroups for LAB's pods, named after RUN_DIR. With
        OWNER_PID, a reaper removes them, and PRIVATE_FOLDERS, if that process dies
        without doing it itself."""
        network = cls(PodRecord(tag=tag_for(run_dir), private_folders=[str(f) for f in private_folders]))
        planned = network.planned(lab)
        # The workspace's names (`ml11-web-v1`) are the same in every copy of the course on
        # this machine: a live run of another copy must not lose its pods to this one.
        refuse_if_in_use(planned, lab)
        # Whatever a dead run of the same folder left (it is not running: the runtime
        # attaches to a live one instead of starting).
        teardown(planned)
        try:
            network._create(lab)
            if owner_pid is not None:
                network.record.reaper_pid = _start_reaper(owner_pid, network.record)
        except BaseException:
            network.teardown()
            raise
        return network

    def planned(self, lab: Lab) -> PodRecord:
        """The record of everything a run of LAB with this tag creates."""
        tag = self.record.tag
        root = cgroup2_root()
        parent = root / f"meshlab-{tag}" if root else None
        names = sorted({s.cgroup for s in lab.services if s.cgroup})
        return PodRecord(tag=tag, namespaces={"hub": f"ml{tag}-hub", **{p.name: f"ml{tag}-{p.name}" for p in lab.pods}},
                         cgroups={n: str(parent / n) for n in names} if parent else {},
                         cgroup_parent=str(parent) if parent else None)

    def _create(self, lab: Lab) -> None:
        tag = self.record.tag
        hub = f"ml{tag}-hub"
        pods = [(pod, f"ml{tag}-{pod.name}") for pod in lab.pods]
        # Recorded before they exist: a failure halfway removes whatever was made.
        self.record.namespaces.update({"hub": hub, **{pod.name: name for pod, name in pods}})
        # One `ip` per namespace rather than one per step (a lab's pods took some twenty).
        self._ip_batch(None, [f"netns add {hub}", *(f"netns add {name}" for _, name in pods)])
        self._ip_batch(hub, ["link add br0 type bridge", "link set br0 up",
                             *(line for index, (_, name) in enumerate(pods)
                               for line in (f"link add p{index} type veth peer name eth0 netns {name}",
                                            f"link set p{index} master br0 up"))])
        for pod, name in pods:
            self._ip_batch(name, ["link set lo up", f"addr add {pod.address} dev eth0", "link set eth0 up"])
        names = sorted({s.cgroup for s in lab.services if s.cgroup})
        if names:
            root = cgroup2_root()
            if root is None:
                raise ServiceFailed(f"lab {lab.slug} runs services in cgroups, but no cgroup v2 hierarchy is mounted",
                                    fix="mount one: mount -t cgroup2 none /sys/fs/cgroup/unified")
            parent = root / f"meshlab-{tag}"
            parent.mkdir()
            self.record.cgroup_parent = str(parent)
            for name in names:
                (parent / name).mkdir()
                self.record.cgroups[name] = str(parent / name)

    @staticmethod
    def _ip_batch(namespace: str | None, commands: list[str]) -> None:
        """Run `ip` COMMANDS (one per line, as `ip -batch` reads them), in NAMESPACE if given."""
        argv = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
        proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            # `Command failed -:N` names the line that failed
            match = re.search(r"Command failed -:(\d+)", proc.stderr)
            failed = commands[int(match.group(1)) - 1] if match and int(match.group(1)) <= len(commands) else ""
            shown = " ".join(argv[:-2]) + " " + (failed or "-batch")
            raise ServiceFailed(f"`{shown}` failed: {proc.stderr.strip()}",
                                fix="pods need root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2; "
                                    "run `meshlab doctor`")

    # -- using -----------------------------------------------------------------------

    def netns_path(self, pod: str) -> str:
        return str(NETNS_DIR / self.record.namespaces[pod])

    def launcher(self, spec: ServiceSpec, argv: list[str]) -> list[str]:
        """ARGV, started so that it runs in SPEC's pod, cgroup and uid."""
        if spec.pod is None and spec.cgroup is None and spec.user is None:
            return argv
        wrapper = [sys.executable, str(Path(enter.__file__))]
        if spec.cgroup:
            wrapper += ["--cgroup", self.record.cgroups[spec.cgroup]]
        if spec.pod:
            wrapper += ["--netns", self.netns_path(spec.pod)]
        if spec.user is not None:
            wrapper += ["--user", str(spec.user)]
        return [*wrapper, "--", *argv]

    def namespace(self, pod: str) -> netns.Namespace:
        """A thread inside POD's namespace (for probes)."""
        if pod not in self._namespaces:
            from meshlab.runtime import netns

            self._namespaces[pod] = netns.Namespace(self.netns_path(pod))
        return self._namespaces[pod]

    def transport(self, pod: str, *, uds: str | None = None) -> netns.NetnsTransport:
        """An httpx transport whose connections are opened inside POD (to the Unix
        socket UDS instead of TCP, if given)."""
        from meshlab.runtime import netns

        return netns.NetnsTransport(self.namespace(pod), uds=uds)

    def client(self, pod: str, *, uds: str | None = None, **options) -> httpx.Client:
        """An HTTP client whose requests leave from inside POD."""
        import httpx

        return httpx.Client(transport=self.transport(pod, uds=uds), trust_env=False, **options)

    def run(self, pod: str, argv: list[str], **options) -> subprocess.CompletedProcess:
        """Run ARGV inside POD's network namespace (like `ip netns exec`)."""
        return subprocess.run(["nsenter", f"--net={self.netns_path(pod)}", "--", *argv],
                              capture_output=True, text=True, timeout=30, **options)

    def apply_rules(self, lab: Lab, lab_dir: Path) -> list[str]:
        """Load each pod's iptables rules file whose content changed since it was last
        applied (iptables-restore replaces the tables the file names). Returns the pods
        whose rules were (re)loaded. A file iptables refuses is the learner's mistake:
        InputError with its line."""
        changed = []
        for pod in lab.pods:
            if not pod.iptables:
                continue
            path = Path(lab_dir) / pod.iptables
            if not path.is_file():
                raise InputError(f"pod {pod.name}'s iptables rules file {pod.iptables} is missing",
                                 where=Location(path), fix="create it (iptables-restore format), or `meshlab reset`")
            text = path.read_bytes()
            digest = hashlib.sha256(text).hexdigest()
            if self.record.rules.get(pod.name) == digest:
                continue
            proc = self.run(pod.name, ["iptables-restore"], input=text.decode("utf-8", "replace"))
            if proc.returncode != 0:
                raise _rules_error(path, proc.stderr)
            self.record.rules[pod.name] = digest
            changed.append(pod.name)
        return changed

    @contextlib.contextmanager
    def capture_lifted(self, pod: str | None):
        """While a service of POD starts: the pod without the rules this run loaded, put
        back as they were afterwards. Its readiness probe (meshlab's own connection, to
        127.0.0.1 inside the pod) must not be captured by rules that are still being
        written, the same as at the run's start, where rules load after the services."""
        if pod is None or pod not in self.record.rules:
            yield
            return
        saved = self.run(pod, ["iptables-save"])
        tables = re.findall(r"^\*(\w+)$", saved.stdout, re.MULTILINE)
        if saved.returncode != 0 or not tables:
            yield
            return
        self.run(pod, ["iptables-restore"], input="".join(f"*{table}\nCOMMIT\n" for table in tables))
        try:
            yield
        finally:
            self.run(pod, ["iptables-restore"], input=saved.stdout)

    # -- removing --------------------------------------------------------------------

    def teardown(self) -> None:
        for namespace in self._namespaces.values():
            namespace.close()
        self._namespaces.clear()
        teardown(self.record)


def tag_for(run_dir: Path) -> str:
    """`07` for the run directory `07-interception`, `07-1a2b3c4d` for `07-interception@1a2b3c4d`."""
    name = Path(run_dir).name
    number = name.split("-", 1)[0]
    return f"{number}-{name.split('@', 1)[1][:8]}" if "@" in name else number


def namespace_pids(name: str) -> list[int]:
    """The processes that live in the network namespace NAME ([] when it does not exist)."""
    if not (NETNS_DIR / name).exists():
        return []
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=20)
    return [int(pid) for pid in proc.stdout.split() if pid.isdigit()]


def refuse_if_in_use(record: PodRecord, lab: Lab) -> None:
    """ServiceFailed when a namespace RECORD would create already holds processes: they
    belong to a run this folder does not know (another copy of the course, or leftovers),
    and deleting the namespace would cut them off the network."""
    for name in record.namespaces.values():
        pids = namespace_pids(name)
        if pids:
            shown = " ".join(str(pid) for pid in pids[:8])
            raise ServiceFailed(
                f"the network namespace {name} is in use (pids {shown}): another copy of the course on this "
                f"machine runs lab {lab.slug}, and its pods have the same names as this one's",
                fix=f"stop it where it runs (`meshlab stop {lab.slug.split('-', 1)[0]}` in that copy), or end "
                    f"those processes if they are leftovers: kill {shown}")


def teardown(record: PodRecord) -> list[str]:
    """Remove whatever RECORD says a run created: its reaper, the processes left in its
    cgroups, the cgroups, the namespaces, its private folders. Safe to call twice.
    Returns what it removed."""
    removed = []
    for name, directory in record.cgroups.items():
        if _empty_cgroup(Path(directory)):
            removed.append(f"cgroup {name}")
    if record.cgroup_parent:
        _remove_cgroup(Path(record.cgroup_parent))
    for name in reversed(list(record.namespaces.values())):
        if (NETNS_DIR / name).exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)
            removed.append(f"netns {name}")
    # After the processes (the cgroups' are killed, the others died with the owner):
    # none is left to write a key again.
    for folder in record.private_folders:
        if Path(folder).exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"folder {folder}")
    # The reaper goes last: an owner killed halfway through this still has it to finish.
    if record.reaper_pid and record.reaper_pid != os.getpid():
        _signal(record.reaper_pid, signal.SIGTERM)
    return removed


def _empty_cgroup(directory: Path, timeout: float = 5.0) -> bool:
    """Kill what is left in DIRECTORY, then remove it. True if it existed."""
    if not directory.is_dir():
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return True
        if not pids:
            try:
                directory.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                pass  # the last process is still being reaped
        try:
            if (directory / "cgroup.kill").exists():
                (directory / "cgroup.kill").write_text("1")
        except OSError:
            pass  # removed meanwhile (a reaper and its owner tearing down together)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)
    return True


def _remove_cgroup(directory: Path, timeout: float = 2.0) -> None:
    """Remove the empty cgroup DIRECTORY. Right after its last child cgroup went, the
    kernel may still count that child as online for a moment (EBUSY): try again."""
    deadline = time.monotonic() + timeout
    while directory.is_dir():
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _rules_error(path: Path, stderr: str) -> InputError:
    match = re.search(r"line:? (\d+)", stderr)
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("Try `")]
    return InputError(f"iptables refused the rules in {path.name}",
                      where=Location(path, int(match.group(1)) if match else None),
                      details="\n".join("  " + line for line in lines[-6:]),
                      fix="the file is read by iptables-restore: a table (*nat), its chains (:NAME ACCEPT [0:0] "
                          "or - [0:0]), rules (-A CHAIN ...), then COMMIT")


# -- the reaper: cleaning up after an owner that was killed -----------------------------

def _start_reaper(owner_pid: int, record: PodRecord) -> int:
    reaper = subprocess.Popen(
        [sys.executable, "-m", "meshlab.runtime.pods", "reap", str(owner_pid), json.dumps(asdict(record))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return reaper.pid


def _reap(owner_pid: int, record: PodRecord) -> None:
    # A normal stop ends us with SIGTERM before it tears down itself: then leave quietly.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        fd = os.pidfd_open(owner_pid)
    except ProcessLookupError:
        fd = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()  # readable when the owner has exited
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(0.2)  # the owner's services receive their parent-death signal first
    record.reaper_pid = None
    teardown(record)


def record_from(data: dict | None) -> PodRecord | None:
    return PodRecord(**data) if data else None


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        _reap(int(sys.argv[2]), PodRecord(**json.loads(sys.argv[3])))
    else:
        sys.exit("usage: python -m meshlab.runtime.pods reap OWNER_PID RECORD_JSON")
