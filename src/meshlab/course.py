"""The course and its labs, as their manifests describe them.

`course.yaml` at the project root gives the order of the labs; each lab folder holds a
`lab.yaml` that says which services run (abstractly: an Envoy with this config, a
Python app module, a command), which ports they use, which files the learner edits,
the hints and the time estimate. Nothing about a particular lab lives in the engine.

A lab manifest, annotated:

    format: 1                        # the manifest format; first line. A meshlab reads
                                     # only the formats it knows and says to upgrade
    title: Hello Mesh
    summary: A static Envoy sidecar in front of one Python app.
    time: 45m
    edit: [envoy.yaml]              # the learner's files; `meshlab reset` restores them
    requires: []                     # platform features or tools (see meshlab.platform)
    prepare:                         # commands run in the lab folder before anything starts
      - [python, make-certs.py]
    services:                        # started in this order (or after `after:`)
      app:
        python: meshlab.apps.hello   # runs `python -m meshlab.apps.hello ARGS`
        args: [--port, "8080"]
        ports: {http: 8080}
      sidecar:
        envoy: envoy.yaml            # an Envoy with this config (preflighted)
        ports: {listener: 10000, admin: 9901}
        after: [app]
        # ready: admin                # (Envoy) up is enough; default: wait for LIVE
        # scratch: [data]             # folders it writes and nobody keeps: emptied at
        #                             # start, removed at stop (a database's data dir)
    try: ["curl -i http://127.0.0.1:10000/"]   # what `meshlab start` suggests
    pods:                            # network namespaces the lab creates (meshlab.runtime.pods)
      pod: {address: 10.77.7.2/24, iptables: capture.rules}   # rules: iptables-restore format
      remote: {address: 10.77.7.3/24}
    # and on a service: `pod: pod` (run inside it), `user: 1337` (as this uid),
    # `cgroup: app` (in a cgroup v2 of the lab's own)
    hints: ["first layer", "second layer", "third layer"]

Every text (title, summary, each entry of edit, requires, try and hints, each argument
of prepare) must be a YAML string. A text holding an unquoted `: ` is read by YAML as
a mapping; the loader refuses it with its line instead of showing it to a learner as
`{'Step 1': '...'}`. Quote such a text, or write it as a folded block (`>-`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlab.errors import CourseError, UnknownLab

if TYPE_CHECKING:  # imported where a file is read: a command served from the cache needs no YAML parser
    from meshlab import yamlfile

COURSE_FILE = "course.yaml"
LAB_FILE = "lab.yaml"
# The manifest format this meshlab reads. A manifest without `format` is format 1 (the
# course linter asks for the key); a later format means a later meshlab.
MANIFEST_FORMAT = 1
SERVICE_KINDS = ("envoy", "python", "command")


@dataclass(frozen=True)
class ServiceSpec:
    """One process of a lab, described so that any runtime can start it."""

    name: str
    kind: str                      # "envoy", "python" or "command"
    target: str | list[str]        # config file, module name, or argv
    args: tuple[str, ...] = ()
    ports: dict[str, int] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # Envoy only: worker threads (1 keeps labs light and counters easy to reason about).
    concurrency: int = 1
    # Files (relative to the lab folder) whose change means this service must restart.
    inputs: tuple[str, ...] = ()
    ready_timeout: float = 15.0
    # Envoy only: "live" waits for /ready to say LIVE; "admin" only for the admin API.
    ready: str = "live"
    # Folders (relative to the lab folder) the service writes and nobody keeps, like a
    # database's data directory: emptied before it starts, removed when it stops.
    scratch: tuple[str, ...] = ()
    # Where and as whom it runs (meshlab.runtime.pods): a pod of the lab (a network
    # namespace), a uid, a cgroup of the lab's own. None: the runtime's own.
    pod: str | None = None
    user: int | None = None
    cgroup: str | None = None

    @property
    def admin_port(self) -> int | None:
        return self.ports.get("admin")


@dataclass(frozen=True)
class PodSpec:
    """A network namespace the lab creates, joined to the lab's other pods (one subnet)."""

    name: str
    address: str                   # the pod's address with its prefix, like 10.77.7.2/24
    iptables: str | None = None    # a file of the lab, in iptables-restore format, applied in the pod

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    summary: str
    time_minutes: int
    edit: tuple[str, ...]
    services: tuple[ServiceSpec, ...]
    hints: tuple[str, ...]
    requires: tuple[str, ...]
    prepare: tuple[tuple[str, ...], ...]
    try_commands: tuple[str, ...]
    checks: Path                    # the pytest module that grades the lab
    workspace: Path                 # labs/NN-slug: the learner's files
    solution: Path                  # solutions/NN-slug
    pods: tuple[PodSpec, ...] = ()
    mesh: Path | None = None        # a mesh manifest whose workloads were injected (meshlab.mesh)

    def pod(self, name: str) -> PodSpec:
        for spec in self.pods:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def name(self) -> str:
        return f"{self.number:02d} {self.title}"

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def envoys(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if s.kind == "envoy")

    def ports(self) -> list[tuple[str, str, int]]:
        """(service, role, port) for every port the lab binds."""
        return [(s.name, role, port) for s in self.services for role, port in s.ports.items()]

    def host_ports(self) -> list[tuple[str, str, int]]:
        """The ports bound on the machine's own network (a pod's are in its namespace)."""
        return [(name, role, port) for name, role, port in self.ports() if self.service(name).pod is None]


@dataclass(frozen=True)
class Course:
    root: Path
    title: str
    labs: tuple[Lab, ...]

    def find(self, ref: str | int) -> Lab:
        """LAB as a learner types it: `1`, `01` or the slug (`01-hello-mesh`, `hello-mesh`)."""
        text = str(ref).strip()
        for lab in self.labs:
            if text.isdigit() and int(text) == lab.number:
                return lab
            if text in (lab.slug, lab.slug.split("-", 1)[1]):
                return lab
        known = ", ".join(f"{lab.number:02d} ({lab.slug})" for lab in self.labs)
        raise UnknownLab(f"there is no lab {text!r}", fix=f"use one of: {known}")

    @cached_property
    def state_dir(self) -> Path:
        """`.meshlab/` at the project root: runs, logs, progress (gitignored)."""
        return Path(os.environ.get("MESHLAB_STATE_DIR", self.root / ".meshlab"))


def run_dir_for(course: Course, lab: Lab, lab_dir: Path) -> Path:
    """Where a run of LAB from LAB_DIR keeps state and logs: one fixed place for the
    learner's workspace (so `start`, `check` and `stop` find each other), another per
    folder graded with --path or --solution."""
    lab_dir = Path(lab_dir).resolve()
    runs = course.state_dir / "runs"
    if lab_dir == lab.workspace.resolve():
        return runs / lab.slug
    import hashlib  # here: it loads OpenSSL, and commands that only read the course need none

    return runs / f"{lab.slug}@{hashlib.sha1(str(lab_dir).encode()).hexdigest()[:8]}"


def find_root(start: Path | None = None) -> Path:
    """The project root: MESHLAB_ROOT, else the nearest folder up from START holding
    course.yaml, else the checkout this package was installed from."""
    if os.environ.get("MESHLAB_ROOT"):
        return Path(os.environ["MESHLAB_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / COURSE_FILE).is_file():
            return folder
    source_checkout = Path(__file__).resolve().parents[2]
    if (source_checkout / COURSE_FILE).is_file():
        return source_checkout
    raise CourseError(
        f"no {COURSE_FILE} found in {here} or any folder above it",
        fix="run meshlab from inside the course checkout, or set MESHLAB_ROOT to it",
    )


def load_course(root: Path | None = None) -> Course:
    """The course at ROOT (found from the working folder when None): from the cache of
    the last load when none of the files it was read from has changed."""
    from meshlab import course_cache

    root = find_root() if root is None else Path(root).resolve()
    cached = course_cache.read(root)
    if cached is not None:
        return cached
    from meshlab import yamlfile

    with yamlfile.recording() as files:
        course = _read_course(root)
    course_cache.write(course, files)
    return course


def _read_course(root: Path) -> Course:
    from meshlab import yamlfile

    doc = yamlfile.load(root / COURSE_FILE)
    data = _mapping(doc, (), {"title", "labs"})
    slugs = data.get("labs") or []
    if not isinstance(slugs, list) or not all(isinstance(s, str) for s in slugs):
        raise CourseError("`labs` must be a list of lab folder names", where=doc.location(("labs",)))
    labs = tuple(load_lab(root, slug, course_doc=doc, index=i) for i, slug in enumerate(slugs))
    numbers = [lab.number for lab in labs]
    if len(set(numbers)) != len(numbers):
        raise CourseError("two labs share a number", where=doc.location(("labs",)))
    return Course(root=root, title=str(data.get("title", "meshlab")), labs=labs)


_SLUG = re.compile(r"^(\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*$")
_LAB_KEYS = {"format", "title", "summary", "time", "edit", "services", "hints", "requires", "prepare", "try", "checks",
             "pods", "mesh"}
_SERVICE_KEYS = {*SERVICE_KINDS, "args", "ports", "after", "env", "concurrency", "inputs", "ready_timeout", "ready",
                 "scratch", "pod", "user", "cgroup"}
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


def load_lab(root: Path, slug: str, *, course_doc: yamlfile.YamlDoc | None = None, index: int = 0) -> Lab:
    match = _SLUG.match(slug)
    if not match:
        where = course_doc.location(("labs", index)) if course_doc else None
        raise CourseError(f"lab folder {slug!r} must be named NN-words (like 01-hello-mesh)", where=where)
    workspace = root / "labs" / slug
    manifest = workspace / LAB_FILE
    if not manifest.is_file():
        where = course_doc.location(("labs", index)) if course_doc else None
        raise CourseError(f"lab {slug} has no {LAB_FILE} at {manifest}", where=where)
    from meshlab import yamlfile

    doc = yamlfile.load(manifest)
    data = _mapping(doc, (), _LAB_KEYS)
    _check_format(doc, data)
    for required in ("title", "services"):
        if required not in data:
            raise CourseError(f"{LAB_FILE} of {slug} lacks `{required}`", where=doc.location(()))
    for problem in text_problems(doc):
        raise problem

    pods = _pods(doc)
    services = tuple(_service(doc, name, body) for name, body in _mapping(doc, ("services",)).items())
    mesh_file = None
    if "mesh" in data:
        mesh_file, mesh_pods, mesh_services = _injected(doc, workspace, pods, services)
        pods, services = pods + mesh_pods, services + mesh_services
    names = {s.name for s in services}
    for spec in services:
        if spec.pod is not None and spec.pod not in {p.name for p in pods}:
            raise CourseError(f"service {spec.name} runs in unknown pod {spec.pod!r}",
                              where=doc.location(("services", spec.name, "pod")),
                              fix="declare it under `pods:`" if not pods else
                              f"known pods: {', '.join(p.name for p in pods)}")
        for dep in spec.after:
            if dep not in names:
                raise CourseError(f"service {spec.name} waits for unknown service {dep!r}",
                                  where=doc.location(("services", spec.name, "after")))
    # A port is taken once per network: the host's, or each pod's own.
    seen: dict[tuple[str | None, int], str] = {}
    for spec in services:
        for port in spec.ports.values():
            if (spec.pod, port) in seen:
                raise CourseError(f"port {port} is declared by both {seen[(spec.pod, port)]} and {spec.name}",
                                  where=doc.location(("services", spec.name, "ports")))
            seen[(spec.pod, port)] = spec.name

    checks = data.get("checks") or f"checker/test_{slug.replace('-', '_')}.py"
    return Lab(
        number=int(match.group(1)),
        slug=slug,
        title=data["title"],
        summary=data.get("summary") or "",
        time_minutes=_minutes(doc, data.get("time", "30m")),
        edit=_strings(doc, ("edit",)),
        services=services,
        hints=_strings(doc, ("hints",)),
        requires=_strings(doc, ("requires",)),
        prepare=tuple(_strings(doc, ("prepare", i)) for i in range(len(_list(doc, ("prepare",))))),
        try_commands=_strings(doc, ("try",)),
        checks=root / checks,
        workspace=workspace,
        solution=root / "solutions" / slug,
        pods=pods,
        mesh=mesh_file,
    )


def _injected(doc: yamlfile.YamlDoc, workspace: Path, pods: tuple[PodSpec, ...],
              services: tuple[ServiceSpec, ...]) -> tuple[Path, tuple[PodSpec, ...], tuple[ServiceSpec, ...]]:
    """`mesh: {manifest: mesh.yaml, control_plane: SERVICE}`: the manifest's workloads
    injected as pods and services (meshlab.mesh.inject), started after SERVICE."""
    from meshlab.mesh import inject, manifest  # only labs with a mesh pay for it

    data = _mapping(doc, ("mesh",), {"manifest", "control_plane"})
    for key in ("manifest", "control_plane"):
        if not isinstance(data.get(key), str):
            raise CourseError(f"`mesh.{key}` must be given, as text", where=doc.location(("mesh",)),
                              fix="mesh: {manifest: mesh.yaml, control_plane: control-plane}")
    if data["control_plane"] not in {s.name for s in services}:
        raise CourseError(f"the mesh's control plane {data['control_plane']!r} is not a service of the lab",
                          where=doc.location(("mesh", "control_plane")))
    if pods:
        raise CourseError("a lab with a mesh gets its pods from the mesh: remove `pods:`", where=doc.location(("pods",)))
    file = workspace / data["manifest"]
    injected = inject.inject(manifest.load(file), control_plane=data["control_plane"])
    mesh_pods = tuple(PodSpec(name, address, rules) for name, address, rules in injected.pods)
    mesh_services = tuple(ServiceSpec(**spec) for spec in injected.services)
    return file, mesh_pods, mesh_services


def _pods(doc: yamlfile.YamlDoc) -> tuple[PodSpec, ...]:
    pods = []
    networks = set()
    for name, body in _mapping(doc, ("pods",)).items():
        path = ("pods", name)
        data = _mapping(doc, path, {"address", "iptables"})
        if not isinstance(name, str) or not _NAME.match(name):
            raise CourseError(f"pod name {name!r} must be a short lowercase word (at most 12 characters)",
                              where=doc.location(path))
        try:
            import ipaddress

            interface = ipaddress.IPv4Interface(str(data.get("address")))
        except ValueError:
            raise CourseError(f"pod {name}: `address` must be an IPv4 address with its prefix, like 10.77.7.2/24",
                              where=doc.location(path + ("address",))) from None
        if not interface.ip.is_private or interface.network.prefixlen == 32:
            raise CourseError(f"pod {name}: {interface} must be a private address in a subnet (a pod's address "
                              f"never leaves the namespaces the lab creates)", where=doc.location(path + ("address",)))
        networks.add(interface.network)
        iptables = data.get("iptables")
        if iptables is not None and not isinstance(iptables, str):
            raise _not_text(doc, path + ("iptables",), iptables)
        pods.append(PodSpec(name=name, address=str(interface), iptables=iptables))
    if len(networks) > 1:
        raise CourseError("the pods of a lab share one subnet (they are joined by one bridge)",
                          where=doc.location(("pods",)))
    if len({p.ip for p in pods}) != len(pods):
        raise CourseError("two pods share an address", where=doc.location(("pods",)))
    return tuple(pods)


def _check_format(doc: yamlfile.YamlDoc, data: dict) -> None:
    value = data.get("format", MANIFEST_FORMAT)
    if value == MANIFEST_FORMAT and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > MANIFEST_FORMAT:
        raise CourseError(f"{doc.file.name} is written in manifest format {value}; this meshlab reads format "
                          f"{MANIFEST_FORMAT} only", where=doc.location(("format",)),
                          fix="upgrade meshlab (`pip install -U -e .` in the course checkout, after `git pull`)")
    raise CourseError(f"`format` must be {MANIFEST_FORMAT}, not {value!r}", where=doc.location(("format",)),
                      fix=f"write `format: {MANIFEST_FORMAT}` as the first line")


# The manifest's texts: shown to learners or used as file names, so never anything
# but strings. (path, is a list of texts)
_TEXTS = ((("title",), False), (("summary",), False), (("edit",), True), (("requires",), True),
          (("try",), True), (("hints",), True))


def text_problems(doc: yamlfile.YamlDoc) -> list[CourseError]:
    """Every text of a lab manifest that YAML did not read as a string, in file order.

    The loader raises the first; the course linter reports them all."""
    slots: list[tuple[tuple, Any]] = []
    for path, is_list in _TEXTS:
        value = doc.get(path)
        if value is None and path != ("title",):
            continue
        if is_list and isinstance(value, list):
            slots += [(path + (i,), item) for i, item in enumerate(value)]
        elif not is_list:
            slots.append((path, value))
    commands = doc.get(("prepare",))
    if isinstance(commands, list):
        for i, command in enumerate(commands):
            if isinstance(command, list):
                slots += [(("prepare", i, j), arg) for j, arg in enumerate(command)]
    problems = [_not_text(doc, path, value) for path, value in slots if not isinstance(value, str)]
    return sorted(problems, key=lambda p: (p.where.line or 0, p.where.column or 0))


def _not_text(doc: yamlfile.YamlDoc, path: tuple, value: Any) -> CourseError:
    where = doc.location(path)
    name = f"`{_format_path(path)}`"
    if isinstance(value, dict):
        return CourseError(f"{name} must be text, but YAML read a mapping: an unquoted `: ` in it makes "
                           f"`key: value` of it", where=where,
                           fix="quote the text (\"...\" or '...'), or write it as a folded block (`>-`)")
    kind = {list: "a list", bool: "true or false", int: "a number", float: "a number",
            type(None): "nothing"}.get(type(value), f"a {type(value).__name__}")
    return CourseError(f"{name} must be text, but YAML read {kind} ({value!r})", where=where,
                       fix="quote the text (\"...\" or '...')")


def _service(doc: yamlfile.YamlDoc, name: str, body: Any) -> ServiceSpec:
    path = ("services", name)
    data = _mapping(doc, path, _SERVICE_KEYS)
    kinds = [k for k in SERVICE_KINDS if k in data]
    if len(kinds) != 1:
        raise CourseError(f"service {name} must have exactly one of: {', '.join(SERVICE_KINDS)}",
                          where=doc.location(path))
    kind = kinds[0]
    target = data[kind]
    if kind == "command":
        if not isinstance(target, list) or not target:
            raise CourseError(f"service {name}: `command` must be a non-empty list", where=doc.location(path + (kind,)))
        target = [str(a) for a in target]
    else:
        target = str(target)
    ports = _mapping(doc, path + ("ports",))
    for role, port in ports.items():
        if not isinstance(port, int) or not 0 < port < 65536:
            raise CourseError(f"service {name}: port {role} must be a number 1-65535",
                              where=doc.location(path + ("ports", role)))
    if kind == "envoy" and "admin" not in ports:
        raise CourseError(f"Envoy service {name} must declare its admin port (ports: {{admin: 9901}})",
                          where=doc.location(path + ("ports",)))
    inputs = _strings(doc, path + ("inputs",))
    scratch = _strings(doc, path + ("scratch",))
    for folder in scratch:
        if Path(folder).is_absolute() or ".." in Path(folder).parts or not Path(folder).parts:
            raise CourseError(f"service {name}: scratch folder {folder!r} must be a path inside the lab folder",
                              where=doc.location(path + ("scratch",)))
    if kind == "envoy" and target not in inputs:
        inputs = (target, *inputs)
    user = data.get("user")
    if user is not None and (not isinstance(user, int) or isinstance(user, bool) or not 0 < user < 65536):
        raise CourseError(f"service {name}: `user` must be a uid (a number like 1337)",
                          where=doc.location(path + ("user",)))
    cgroup = data.get("cgroup")
    if cgroup is not None and (not isinstance(cgroup, str) or not _NAME.match(cgroup)):
        raise CourseError(f"service {name}: `cgroup` must be a short lowercase name", where=doc.location(path + ("cgroup",)))
    pod = data.get("pod")
    if pod is not None and not isinstance(pod, str):
        raise _not_text(doc, path + ("pod",), pod)
    return ServiceSpec(
        name=name,
        kind=kind,
        target=target,
        args=_strings(doc, path + ("args",)),
        ports={str(k): int(v) for k, v in ports.items()},
        after=_strings(doc, path + ("after",)),
        env={str(k): str(v) for k, v in _mapping(doc, path + ("env",)).items()},
        concurrency=int(data.get("concurrency", 1)),
        inputs=inputs,
        ready_timeout=float(data.get("ready_timeout", 15.0)),
        ready=_choice(doc, path + ("ready",), data.get("ready", "live"), ("live", "admin")),
        scratch=scratch,
        pod=pod,
        user=user,
        cgroup=cgroup,
    )


def _choice(doc: yamlfile.YamlDoc, path: tuple, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise CourseError(f"`{_format_path(path)}` must be one of: {', '.join(allowed)}",
                          where=doc.location(path))
    return str(value)


def _format_path(path: tuple) -> str:
    from meshlab.yamlfile import format_path

    return format_path(path)


def _mapping(doc: yamlfile.YamlDoc, path: tuple, allowed: set[str] | None = None) -> dict:
    value = doc.get(path, {}) if path else doc.data
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CourseError(f"`{_format_path(path) or 'the document'}` must be a mapping",
                          where=doc.location(path))
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise CourseError(f"unknown key {key!r} in {doc.file.name}",
                                  where=doc.location(path + (key,)),
                                  fix=f"allowed here: {', '.join(sorted(allowed))}")
    return value


def _list(doc: yamlfile.YamlDoc, path: tuple) -> list:
    value = doc.get(path, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise CourseError(f"`{_format_path(path)}` must be a list", where=doc.location(path))
    return value


def _strings(doc: yamlfile.YamlDoc, path: tuple) -> tuple[str, ...]:
    values = _list(doc, path)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise _not_text(doc, path + (index,), value)
    return tuple(values)


def _minutes(doc: yamlfile.YamlDoc, value: Any) -> int:
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m(?:in)?)?\s*", str(value))
    if isinstance(value, int):
        return value
    if not match or not any(match.groups()):
        raise CourseError(f"time {value!r} must look like 45m or 1h30m", where=doc.location(("time",)))
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)

