"""`meshlab compose`: a Compose sandbox per lab, rendered from its lab.yaml.

compose/NN-slug/compose.yaml is never written by hand, so it never drifts from the
manifest (a test renders every file again and compares). Its shape is the Docker
runtime's: a `pod` service owns the network namespace and publishes the lab's ports on
the host's 127.0.0.1 (through meshlab's relay: Docker forwards a published port to the
container's address, not its loopback); every lab service joins it with
`network_mode: service:pod`, so the configs on 127.0.0.1 work unchanged. The learner's
lab folder is mounted at /lab, the working directory of every service. Labels name the
lab and the service, so that `meshlab check N --runtime docker` grades a sandbox the
learner started (`runtime/sandbox.py`).

A lab with pods of its own (07, 11) does not fit one namespace: it gets a README.md in
place of the file, saying why and how to take it with Docker (`container/pod_labs.py`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from meshlab.container import pod_labs
from meshlab.container.engine import LABEL, TOOLBOX_IMAGE
from meshlab.course import Course, Lab, ServiceSpec

COMPOSE_DIR = "compose"
FILE = "compose.yaml"
README = "README.md"
LAB_MOUNT = "/lab"


def path_for(course: Course, lab: Lab) -> Path:
    return course.root / COMPOSE_DIR / lab.slug / FILE


def render(course: Course, lab: Lab) -> str:
    pod_labs.refuse_on_docker(lab)
    folder = path_for(course, lab).parent
    lab_folder = Path("..") / ".." / lab.workspace.relative_to(course.root)
    ports = sorted({port for _, _, port in lab.ports()})
    # Labels let `meshlab check N --runtime docker` find a sandbox the learner started.
    def labels(service: str) -> dict[str, str]:
        return {f"{LABEL}.sandbox": lab.slug, f"{LABEL}.service": service}

    services: dict[str, dict] = {
        "pod": {
            "image": TOOLBOX_IMAGE, "init": True, "labels": labels("pod"),
            "entrypoint": ["python3", "-m", "meshlab.container.relay", *map(str, ports)],
            "ports": [f"127.0.0.1:{port}:{port}" for port in ports],
        },
    }
    common = {"image": TOOLBOX_IMAGE, "init": True, "network_mode": "service:pod", "working_dir": LAB_MOUNT,
              "volumes": [f"{lab_folder.as_posix()}:{LAB_MOUNT}"]}
    if lab.prepare:
        script = " && ".join(" ".join(_shell_word(_python(w)) for w in command) for command in lab.prepare)
        services["prepare"] = {**{k: v for k, v in common.items() if k != "network_mode"},
                               "labels": labels("prepare"), "entrypoint": ["sh", "-c", script]}
    for spec in lab.services:
        body = {**common, "labels": labels(spec.name), "entrypoint": _argv(spec)}
        if spec.env:
            body["environment"] = dict(spec.env)
        needs = {"pod": {"condition": "service_started"}}
        if lab.prepare:
            needs["prepare"] = {"condition": "service_completed_successfully"}
        needs.update({after: {"condition": "service_started"} for after in spec.after})
        body["depends_on"] = needs
        services[spec.name] = body
    header = (f"# Lab {lab.number:02d} · {lab.title}, as a Compose sandbox: one container per service, all in one\n"
              f"# network namespace (the `pod`), ports published on 127.0.0.1. Rendered from\n"
              f"# {lab.workspace.relative_to(course.root).as_posix()}/lab.yaml by `meshlab compose`: do not edit.\n"
              f"#   docker compose -f {folder.relative_to(course.root).as_posix()}/{FILE} up -d\n"
              + "".join(f"#   {command}\n" for command in lab.try_commands)
              + f"#   docker compose -f {folder.relative_to(course.root).as_posix()}/{FILE} down\n")
    return header + yaml.dump({"services": services}, Dumper=_Dumper, sort_keys=False, width=120)


class _Dumper(yaml.SafeDumper):
    """Readable output: no anchors, and a list of plain words on one line, like a command."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    flow = all(isinstance(item, str) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _argv(spec: ServiceSpec) -> list[str]:
    if spec.kind == "envoy":
        return ["envoy", "-c", f"{LAB_MOUNT}/{spec.target}", "--use-dynamic-base-id",
                "--concurrency", str(spec.concurrency), "-l", "warning", "--component-log-level", "main:error",
                *spec.args]
    if spec.kind == "python":
        return ["python3", "-m", str(spec.target), *spec.args]
    return [_python(spec.target[0]), *spec.target[1:], *spec.args]


def _python(word: str) -> str:
    return "python3" if word in ("python", "python3") else word


def _shell_word(word: str) -> str:
    import shlex

    return shlex.quote(word)


def expected(course: Course, lab: Lab) -> dict[Path, str | None]:
    """What `meshlab compose` leaves in the lab's folder under compose/: each path with its
    text, or None for a file that must not be there (a sandbox for a lab with pods; a
    README of ours beside a sandbox)."""
    sandbox = path_for(course, lab)
    readme = sandbox.parent / README
    if pod_labs.has_pods(lab):
        return {readme: pod_labs.readme(lab), sandbox: None}
    ours = readme.is_file() and _MARK in readme.read_text()
    return {sandbox: render(course, lab), **({readme: None} if ours else {})}


_MARK = "Written by `meshlab compose`"


def write_all(course: Course) -> list[Path]:
    """Render every lab's file; the paths that changed (written or removed)."""
    changed = []
    for lab in course.labs:
        for path, text in expected(course, lab).items():
            if text is None:
                if path.is_file():
                    path.unlink()
                    changed.append(path)
            elif not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                changed.append(path)
    return changed


def stale(course: Course) -> list[Path]:
    """The files under compose/ that are missing, differ from what their lab.yaml renders,
    or must not be there."""
    return [path for lab in course.labs for path, text in expected(course, lab).items()
            if (path.is_file() if text is None else not path.is_file() or path.read_text() != text)]
