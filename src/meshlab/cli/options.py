"""What the command modules share: the LAB argument, --json, and finding the course."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

from meshlab import workspace
from meshlab.course import Course, Lab, ServiceSpec, load_course
from meshlab.errors import MeshlabError

if TYPE_CHECKING:
    import httpx

LAB = click.argument("lab", metavar="LAB")
RUNTIME = click.option("--runtime", type=click.Choice(["local", "docker"]), default=None,
                       help="Where the lab's services run: local processes (default) or Docker containers "
                            "(MESHLAB_RUNTIME sets the default).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")


def open_course() -> Course:
    """The course, after stopping the leftovers of runs whose owner died."""
    course = load_course()
    workspace.keep_starter_copies(course)  # outside git, the only way `reset` can work later
    if any_runs(course):  # else the runtime is not even imported: `meshlab list` stays instant
        from meshlab.runtime import stop_orphaned_runs

        # A checker or watcher killed outright could not stop its services: do it now.
        for run in stop_orphaned_runs(course.state_dir / "runs"):
            _say(f"stopped the leftovers of {run}, whose owner had died")
    _stop_orphaned_containers(course)
    return course


def _say(text: str) -> None:
    from meshlab import ui  # rich, only when there is something to say: `check` starts its checker first

    ui.errors.print(f"[dim]{ui.escape(text)}[/]")


def any_runs(course: Course) -> bool:
    """Whether any run folder holds a state file (the local runtime's `state.json`, a
    Docker run's `docker.json`)."""
    runs = course.state_dir / "runs"
    return runs.is_dir() and (any(runs.glob("*/state.json")) or any(runs.glob("*/docker.json")))


def _stop_orphaned_containers(course: Course) -> None:
    """The same for Docker runs (cheap when none was ever made: no SDK import)."""
    runs = course.state_dir / "runs"
    if not runs.is_dir() or not any(runs.glob("*/docker.json")):
        return
    from meshlab.runtime.docker import stop_orphaned_docker_runs

    try:
        for run in stop_orphaned_docker_runs(runs):
            _say(f"removed the containers of {run}, whose owner had died")
    except MeshlabError as error:  # no engine now: the containers cannot run either
        _say(f"could not clean up Docker runs: {error.message}")


def lab_dir_for(course: Course, lab: Lab, path: str | None, solution: bool) -> Path:
    """The folder to grade: the learner's workspace, --path DIR, or the solution laid over the starter."""
    if path and solution:
        raise click.UsageError("--path and --solution exclude each other")
    if solution:
        return workspace.solution_tree(course, lab, course.state_dir / "graded" / f"{lab.slug}-solution")
    if path:
        folder = Path(path).resolve()
        if not folder.is_dir():
            raise MeshlabError(f"--path {path} is not a folder", fix="give the folder that holds the lab's files")
        return folder
    return lab.workspace


def lab_service(course: Course, lab_ref: str | None, *, roles: set[str], what: str) -> tuple[Lab, ServiceSpec]:
    """A lab's service that declares every port role in ROLES (how a manifest says "this
    is the lab's control plane" or "its trace store"): the one of LAB_REF, else of the
    running lab that has one, else of the course's first lab that has one."""
    from meshlab.errors import InputError
    from meshlab.runtime import read_state

    labs = [course.find(lab_ref)] if lab_ref else list(course.labs)
    found = [(lab, service) for lab in labs for service in lab.services
             if service.kind != "envoy" and roles <= set(service.ports)]
    if not found:
        where = f"lab {labs[0].number:02d}" if lab_ref else "no lab of the course"
        raise InputError(f"{where} has no {what} (a service with {' and '.join(sorted(roles))} ports)",
                         fix="give its URL with the command's option")
    running = [(lab, service) for lab, service in found if read_state(course.state_dir / "runs" / lab.slug)]
    return (running or found)[0]


def lab_service_url(course: Course, lab_ref: str | None, *, roles: set[str], port: str, what: str) -> str:
    """`http://127.0.0.1:PORT` of the service `lab_service` finds, as reached from here."""
    _, service = lab_service(course, lab_ref, roles=roles, what=what)
    return f"http://127.0.0.1:{service.ports[port]}"


@contextmanager
def service_client(course: Course, lab: Lab, service: ServiceSpec, *, timeout: float) -> Iterator[httpx.Client]:
    """An HTTP client that reaches LAB's SERVICE on 127.0.0.1 as the service's neighbours
    do: from inside its pod when it runs in one (the running lab's pod network, as `meshlab
    mesh status` and the checks' `lab.pod(...)` go), else from here. A service in a pod of
    a lab that is not running: EnvironmentProblem, with `meshlab start`."""
    import httpx

    if service.pod is None:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            yield client
        return
    from meshlab.course import run_dir_for
    from meshlab.errors import EnvironmentProblem
    from meshlab.runtime import LocalRuntime

    runtime = LocalRuntime.attach(lab, run_dir_for(course, lab, lab.workspace))
    if runtime is None or runtime.pods is None:
        raise EnvironmentProblem(f"lab {lab.number:02d} is not running: its {service.name} runs in the lab's pod "
                                 f"{service.pod!r}, which exists only while the lab runs",
                                 fix=f"start the lab: meshlab start {lab.number}")
    with runtime.pods.client(service.pod, timeout=timeout) as client:
        yield client
