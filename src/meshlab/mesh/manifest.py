"""The mesh manifest (`mesh.yaml`): which services exist, how traffic between them is
split, and who may call whom. Read into frozen dataclasses; every mistake is an
InputError that names its file, line and a fix.

    mesh = load(Path("labs/11-mini-mesh/mesh.yaml"))
    mesh.service("api").versions["v2"].argv()
    mesh.spiffe_id("web")            # spiffe://meshlab.test/ns/default/sa/web
    mesh.outbound_cluster("api", "v2")  # outbound|8080|v2|api

Names (shared with everything built on the mesh):
- a workload is one version of one service, `<service>-<version>`; it runs in a pod of
  its own and is also its Envoy's node id; the node's cluster is the service's name;
- a service's identity is `spiffe://<trust_domain>/ns/<namespace>/sa/<service>`;
- clusters follow Istio's shape: `outbound|<port>|<version>|<service>` for calls to a
  service, `inbound|<port>||` for the sidecar's own app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab import yamlfile
from meshlab.errors import InputError

FORMAT = 1
PROTOCOLS = ("http", "tcp")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")          # a service or version: short, DNS-safe
_DURATION = re.compile(r"^(\d+)(s|m|h)$")
_TOP_KEYS = {"format", "trust_domain", "namespace", "certificates", "control_plane", "services",
             "traffic", "authorization"}


@dataclass(frozen=True)
class Version:
    """One version of a service: the command its pod runs."""

    name: str
    python: str | None = None          # a module run with `python -m`
    command: tuple[str, ...] = ()      # or a program and its arguments
    args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        if self.python:
            return ["python", "-m", self.python, *self.args]
        return [*self.command, *self.args]


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    protocol: str                      # "http" or "tcp"
    versions: dict[str, Version] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One traffic rule for a destination: requests matching `headers` (all of them,
    exact values; empty: every request) go to the versions by weight."""

    headers: dict[str, str]
    weights: dict[str, int]            # version -> weight (they sum to 100)


@dataclass(frozen=True)
class Workload:
    service: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.service}-{self.version}"


@dataclass(frozen=True)
class Mesh:
    file: Path
    trust_domain: str
    namespace: str
    certificate_ttl_seconds: int
    xds_port: int
    admin_port: int
    services: dict[str, Service]
    traffic: dict[str, tuple[Rule, ...]]        # destination service -> rules, first match wins
    authorization: dict[str, tuple[str, ...]]   # destination service -> allowed callers

    def service(self, name: str) -> Service:
        return self.services[name]

    @property
    def workloads(self) -> list[Workload]:
        return [Workload(s.name, v) for s in self.services.values() for v in s.versions]

    def spiffe_id(self, service: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{service}"

    def outbound_cluster(self, service: str, version: str) -> str:
        return f"outbound|{self.services[service].port}|{version}|{service}"

    @staticmethod
    def inbound_cluster(port: int) -> str:
        return f"inbound|{port}||"

    def rules(self, service: str) -> tuple[Rule, ...]:
        """The traffic rules of SERVICE; without any, an even split over its versions."""
        if service in self.traffic:
            return self.traffic[service]
        versions = list(self.services[service].versions)
        weights = {v: 100 // len(versions) for v in versions}
        weights[versions[0]] += 100 - sum(weights.values())
        return (Rule({}, weights),)

    def callers(self, service: str) -> tuple[str, ...]:
        """Who may call SERVICE (nobody when the manifest names nobody)."""
        return self.authorization.get(service, ())


def load(path: Path | str) -> Mesh:
    """The manifest at PATH; InputError (file:line, fix) when it is not a valid one."""
    doc = yamlfile.load(Path(path))
    return parse(doc)


def parse(doc: yamlfile.YamlDoc) -> Mesh:
    reader = _Reader(doc)
    data = reader.mapping((), _TOP_KEYS)
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT or isinstance(fmt, bool):
        raise reader.error(("format",), f"`format` must be {FORMAT}, not {fmt!r}", f"write `format: {FORMAT}`")
    trust_domain = reader.text(("trust_domain",), default="meshlab.test")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", trust_domain):
        raise reader.error(("trust_domain",), f"trust domain {trust_domain!r} is not a valid SPIFFE trust domain",
                           "lowercase letters, digits, dots and dashes, like meshlab.test")
    namespace = reader.text(("namespace",), default="default")
    if not _NAME.match(namespace) and not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", namespace):
        raise reader.error(("namespace",), f"namespace {namespace!r} must be a lowercase name", None)
    certificates = reader.mapping(("certificates",), {"ttl"})
    ttl = reader.duration(("certificates", "ttl"), certificates.get("ttl", "10m"))
    control = reader.mapping(("control_plane",), {"xds", "admin"})
    xds_port = reader.port(("control_plane", "xds"), control.get("xds", 18000))
    admin_port = reader.port(("control_plane", "admin"), control.get("admin", 18001))

    services: dict[str, Service] = {}
    for name in reader.mapping(("services",)):
        services[name] = reader.service(name)
    if not services:
        raise reader.error(("services",), "the mesh has no services", "declare at least one under `services:`")

    traffic = {}
    for name, rules in reader.mapping(("traffic",)).items():
        if name not in services:
            raise reader.error(("traffic", name), f"traffic rules for unknown service {name!r}",
                               f"known services: {', '.join(services)}")
        traffic[name] = reader.rules(name, services[name])

    authorization = {}
    for name in reader.mapping(("authorization",)):
        if name not in services:
            raise reader.error(("authorization", name), f"authorization for unknown service {name!r}",
                               f"known services: {', '.join(services)}")
        callers = reader.strings(("authorization", name))
        for index, caller in enumerate(callers):
            if caller not in services:
                raise reader.error(("authorization", name, index), f"unknown caller {caller!r} of {name}",
                                   f"known services: {', '.join(services)}")
        authorization[name] = tuple(callers)

    return Mesh(file=doc.file, trust_domain=trust_domain, namespace=namespace, certificate_ttl_seconds=ttl,
                xds_port=xds_port, admin_port=admin_port, services=services, traffic=traffic,
                authorization=authorization)


class _Reader:
    """Typed access to the document, each failure an InputError at the value's line."""

    def __init__(self, doc: yamlfile.YamlDoc):
        self.doc = doc

    def error(self, path: tuple, message: str, fix: str | None) -> InputError:
        return InputError(f"{self.doc.file.name}: {message}", where=self.doc.location(path), fix=fix)

    def mapping(self, path: tuple, allowed: set[str] | None = None) -> dict:
        value = self.doc.get(path, {}) if path else self.doc.data
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"`{yamlfile.format_path(path) or 'the document'}` must be a mapping", None)
        for key in value:
            if allowed is not None and key not in allowed:
                raise self.error(path + (key,), f"unknown key {key!r}", f"allowed here: {', '.join(sorted(allowed))}")
            if not isinstance(key, str):
                raise self.error(path + (key,), f"key {key!r} must be a name", None)
        return value

    def text(self, path: tuple, default: str | None = None) -> str:
        value = self.doc.get(path, default)
        if not isinstance(value, str):
            raise self.error(path, f"`{yamlfile.format_path(path)}` must be text, not {value!r}", "quote it")
        return value

    def strings(self, path: tuple) -> list[str]:
        value = self.doc.get(path, []) or []
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                  for v in value):
            raise self.error(path, f"`{yamlfile.format_path(path)}` must be a list of texts", "write [a, b]")
        return [str(v) for v in value]

    def port(self, path: tuple, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise self.error(path, f"`{yamlfile.format_path(path)}` must be a port number 1-65535", None)
        return value

    def duration(self, path: tuple, value: Any) -> int:
        match = _DURATION.match(str(value))
        if not match:
            raise self.error(path, f"`{yamlfile.format_path(path)}` must be a duration like 90s or 10m, "
                                   f"not {value!r}", None)
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
        if seconds < 30:
            raise self.error(path, "certificates must live at least 30s (they are rotated at 2/3 of it)", None)
        return seconds

    def service(self, name: str) -> Service:
        path = ("services", name)
        if not _NAME.match(name):
            raise self.error(path, f"service name {name!r} must be a short lowercase word (1-8 letters or digits)",
                             None)
        data = self.mapping(path, {"port", "protocol", "versions"})
        if "port" not in data:
            raise self.error(path, f"service {name} has no `port`", "add `port: 8080` (the port its app listens on)")
        port = self.port(path + ("port",), data["port"])
        protocol = data.get("protocol", "http")
        if protocol not in PROTOCOLS:
            raise self.error(path + ("protocol",), f"service {name}: protocol must be http or tcp, not {protocol!r}",
                             None)
        versions = {}
        for version, body in self.mapping(path + ("versions",)).items():
            vpath = path + ("versions", version)
            if not _NAME.match(str(version)):
                raise self.error(vpath, f"version name {version!r} must be a short lowercase word, like v1", None)
            spec = self.mapping(vpath, {"python", "command", "args"})
            if ("python" in spec) == ("command" in spec):
                raise self.error(vpath, f"{name} {version} needs exactly one of `python` (a module) or `command`",
                                 "like `python: meshlab.apps.tier` or `command: [redis-server]`")
            if "python" in spec:
                version_spec = Version(version, python=self.text(vpath + ("python",)),
                                       args=tuple(self.strings(vpath + ("args",))))
            else:
                command = self.strings(vpath + ("command",))
                if not command:
                    raise self.error(vpath + ("command",), "`command` must not be empty", None)
                version_spec = Version(version, command=tuple(command), args=tuple(self.strings(vpath + ("args",))))
            versions[version] = version_spec
        if not versions:
            raise self.error(path, f"service {name} has no versions", "add `versions: {v1: {python: ...}}`")
        return Service(name, port, protocol, versions)

    def rules(self, name: str, service: Service) -> tuple[Rule, ...]:
        path = ("traffic", name)
        items = self.doc.get(path)
        if not isinstance(items, list) or not items:
            raise self.error(path, f"the traffic rules of {name} must be a list", "- to: {v1: 90, v2: 10}")
        rules = []
        for index, _ in enumerate(items):
            rpath = path + (index,)
            data = self.mapping(rpath, {"match", "to"})
            match = self.mapping(rpath + ("match",), {"headers"})
            if match and service.protocol == "tcp":
                raise self.error(rpath + ("match",), f"{name} is a tcp service: it has no headers to match", None)
            headers = {str(k).lower(): str(v) for k, v in self.mapping(rpath + ("match", "headers")).items()}
            to = self.mapping(rpath + ("to",))
            if not to:
                raise self.error(rpath, "a rule needs `to:` (versions and weights)", "to: {v1: 80, v2: 20}")
            weights = {}
            for version, weight in to.items():
                if version not in service.versions:
                    raise self.error(rpath + ("to", version), f"{name} has no version {version!r}",
                                     f"its versions: {', '.join(service.versions)}")
                if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                    raise self.error(rpath + ("to", version), "a weight is a whole number 0-100", None)
                weights[version] = weight
            if sum(weights.values()) != 100:
                raise self.error(rpath + ("to",), f"the weights add up to {sum(weights.values())}, not 100", None)
            rules.append(Rule(headers, weights))
        if service.protocol == "tcp" and len(rules) > 1:
            raise self.error(path, f"{name} is a tcp service: one rule only", None)
        return tuple(rules)
