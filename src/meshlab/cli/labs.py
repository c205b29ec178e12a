"""The learner's commands: list, start, stop, status, watch, hint, reset (check has its own module).

Each command imports meshlab.ui (rich) itself, where it draws: `list --json` and
`status --json` print without it."""

from __future__ import annotations

import json
import sys

import click

from meshlab import progress, workspace
from meshlab.cli.options import JSON, LAB, RUNTIME, any_runs, lab_dir_for, open_course
from meshlab.errors import MeshlabError


@click.command("list")
@JSON
def list_command(as_json: bool) -> None:
    """The labs in course order, with your progress and time estimates."""
    course = open_course()
    done = progress.load(course)
    running = set()
    if any_runs(course):
        from meshlab.runtime import read_state

        runs = course.state_dir / "runs"
        # A docker run leaves its marker file (docker.json) in the run folder.
        running = {lab.slug for lab in course.labs
                   if read_state(runs / lab.slug) is not None or (runs / lab.slug / "docker.json").is_file()}
    if as_json:
        click.echo(json.dumps([{
            "number": lab.number, "slug": lab.slug, "title": lab.title, "summary": lab.summary,
            "time_minutes": lab.time_minutes, "running": lab.slug in running, **done.get(lab.slug, {}),
        } for lab in course.labs], indent=2))
        return
    from meshlab import ui

    ui.show_labs(course, done, running)


@click.command("start")
@LAB
@click.option("--fresh", is_flag=True,
              help="If LAB is running, restart its Envoys too: their counters start from zero again.")
@RUNTIME
def start_command(lab: str, fresh: bool, runtime: str | None) -> None:
    """Start LAB's services in the background and show how to reach them.

    If the lab is already running, only the services whose files changed restart
    (with --fresh, its Envoys too, so that the counters show only your own traffic).
    """
    from meshlab import platform, preflight, ui
    from meshlab.runtime.interface import runtime_class
    from meshlab.course import run_dir_for

    course = open_course()
    spec = course.find(lab)
    runtime_type = runtime_class(runtime, lab=spec)
    platform.require(spec.requires, lab_ref=f"lab {spec.number:02d}")
    preflight.prepare_and_check(spec, spec.workspace)
    run_dir = run_dir_for(course, spec, spec.workspace)
    runtime = runtime_type.attach(spec, run_dir)
    if runtime is not None:
        restarted = runtime.sync()
        if fresh and not hasattr(runtime, "restart_envoys"):
            raise MeshlabError("--fresh works with the local runtime only",
                               fix=f"restart the lab instead: meshlab stop {spec.number}, then meshlab start {spec.number}")
        if fresh:  # counters from zero: a check's traffic (or an ejection) is not the learner's
            restarted += [name for name in runtime.restart_envoys() if name not in restarted]
        ui.console.print(f"Lab {spec.number:02d} was running; restarted: {', '.join(restarted) or 'nothing (no change)'}"
                         + (" (fresh counters)" if fresh else ""))
    else:
        runtime = runtime_type(spec, spec.workspace, run_dir, detached=True)
        with ui.console.status(f"starting lab {spec.number:02d}..."):
            runtime.start_all()
        ui.console.print(f"[bold]Lab {spec.number:02d} · {spec.title}[/] is running.")
    running = runtime.state.services
    pods = getattr(runtime, "pods", None)
    width = max([10, *(len(s.name) for s in spec.services)])  # names longer than 10: ratelimit-a
    for service in spec.services:
        # A pod's ports are in its own namespace: name it (`ip netns exec NAME ...` reaches them).
        host = f"{pods.record.namespaces[service.pod]} " if service.pod and pods else "127.0.0.1:"
        where = ", ".join(f"{host}{port} ({role})" for role, port in service.ports.items())
        ui.console.print(f"  {service.name:<{width}} {service.kind:<7} {where}  "
                         f"[dim]{_where_it_runs(running, service.name)}[/]")
    if spec.try_commands:
        ui.console.print("Try:")
        for command in spec.try_commands:
            # Meant to be pasted: never wrapped (a pipe gives rich 80 columns), never markup.
            ui.console.print(f"  {command}", soft_wrap=True, markup=False)
    ui.console.print(f"Logs: {ui.relative(run_dir)}/")
    on_docker = " --runtime docker" if getattr(runtime, "name", "local") == "docker" else ""
    ui.console.print(f"Edit {ui.relative(spec.workspace)}/, then [bold]meshlab check {spec.number}{on_docker}[/]. "
                     f"Stop with [bold]meshlab stop {spec.number}[/].")


@click.command("stop")
@click.argument("lab", metavar="[LAB]", required=False)
@click.option("--service", metavar="NAME",
              help="Stop only this service of LAB (for example the app); `meshlab start LAB` brings it back.")
def stop_command(lab: str | None, service: str | None) -> None:
    """Stop LAB's services (every running lab when LAB is omitted).

    What you started stops: `meshlab start`, a `meshlab watch` left running, and what a
    command that was killed left behind. A lab that a `meshlab check` running in another
    terminal started for itself is left to it (it stops it when it ends); stop says so.
    """
    from meshlab import ui
    from meshlab.runtime import LocalRuntime, stop_run
    from meshlab.course import run_dir_for

    course = open_course()
    runs = course.state_dir / "runs"
    if service is not None:
        if lab is None:
            raise click.UsageError("--service needs a LAB")
        spec = course.find(lab)
        if service not in {s.name for s in spec.services}:
            raise MeshlabError(f"lab {spec.number:02d} has no service {service!r}",
                               fix="its services: " + ", ".join(s.name for s in spec.services))
        runtime = LocalRuntime.attach(spec, run_dir_for(course, spec, spec.workspace))
        if runtime is None or not runtime.is_running(service):
            ui.console.print(f"{service} of lab {spec.number:02d} was not running.")
            return
        if (owner := _live_owner(runtime.run_dir)) is not None:
            ui.console.print(f"Left {service} of lab {spec.number:02d} running: {_owner_words(*owner)}.")
            return
        runtime.stop(service)
        ui.console.print(f"Stopped {service} of lab {spec.number:02d}; `meshlab start {spec.number}` brings it back.")
        return
    if lab is not None:
        spec = course.find(lab)
        folders = [d for d in (runs.iterdir() if runs.is_dir() else []) if d.name.split("@")[0] == spec.slug]
    else:
        folders = list(runs.iterdir()) if runs.is_dir() else []
    owners = {folder.name: owner for folder in folders if (owner := _live_owner(folder)) is not None}
    stopped = {folder.name: stop_run(folder) + _stop_docker_run(folder)
               for folder in folders if folder.name not in owners}
    stopped = {name: services for name, services in stopped.items() if services}
    if not stopped and not owners:
        ui.console.print("Nothing was running." if lab is None else f"Lab {lab} was not running.")
    for name, services in stopped.items():
        ui.console.print(f"Stopped {name}: {', '.join(services)}")
    for name, owner in owners.items():
        ui.console.print(f"Left {name} running: {_owner_words(*owner)}.")


def _live_owner(folder) -> tuple[int, str] | None:
    """Who keeps the run in FOLDER (its PID, and what it is), when it is not the
    learner's to stop: a check (or a demo) that started it for itself and stops it when
    it ends. None for a run of `meshlab start` or `meshlab watch`, one whose owner died,
    or no run."""
    from meshlab.runtime import kept_by_owner, read_state
    from meshlab.runtime.processes import alive

    state = read_state(folder)
    if state is not None:
        return (state.owner_pid, state.owned_by or "check") if kept_by_owner(state) else None
    from meshlab.runtime.docker import MARKER  # here: it loads httpx, which a local run needs not

    if not (folder / MARKER).is_file():
        return None
    marker = json.loads((folder / MARKER).read_text())
    pid = marker["owner_pid"]
    if pid is None or not alive(pid, marker["owner_started"]):
        return None
    return pid, marker.get("owned_by") or "check"


def _owner_words(pid: int, owned_by: str) -> str:
    what = {"demo": "a demo uses it"}.get(owned_by, "a `meshlab check` grades it")
    return f"{what} (pid {pid}) and stops it when it ends"


def _where_it_runs(services: dict, name: str) -> str:
    service = services.get(name)
    if service is None:
        return ""
    container = getattr(service, "container", None)  # the docker runtime's services
    return f"container {container}" if container else f"pid {service.pid}"


def _stop_docker_run(folder) -> list[str]:
    from meshlab.runtime.docker import MARKER, stop_docker_run

    return stop_docker_run(folder) if (folder / MARKER).is_file() else []


@click.command("status")
@click.argument("lab", required=False)
@JSON
def status_command(lab: str | None, as_json: bool) -> None:
    """What meshlab is running now (of LAB, or of every lab): services, PIDs and ports.

    A run that a `meshlab check` started for itself says so (with the check's PID):
    that check stops it, `meshlab stop` leaves it alone.
    """
    from meshlab.runtime import read_state
    from meshlab.runtime.processes import alive

    course = open_course()
    runs = course.state_dir / "runs"
    slug = course.find(lab).slug if lab is not None else None
    report = []
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        state = read_state(folder)
        if state is None:
            docker_run = _docker_status(course, folder)
            if docker_run is not None and slug in (None, docker_run["lab"]):
                report.append(docker_run)
            continue
        if slug not in (None, state.lab):
            continue
        services = [{"name": s.name, "kind": s.kind, "pid": s.pid, "ports": s.ports,
                     "running": alive(s.pid, s.create_time)} for s in state.services.values()]
        # A run `meshlab stop` leaves to the check that owns it: named, so that is no surprise.
        owner = _live_owner(folder)
        report.append({"run": folder.name, "lab": state.lab, "lab_dir": state.lab_dir,
                       "detached": state.detached, "services": services,
                       "left_to": None if owner is None else {"pid": owner[0], "owned_by": owner[1]}})
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from meshlab import ui

    if not report:
        ui.console.print("No lab is running. Start one with: meshlab start LAB" if lab is None else
                         f"Lab {lab} is not running. Start it with: meshlab start {lab}")
    for run in report:
        ui.console.print(f"[bold]{run['run']}[/]  [dim]{ui.relative(run['lab_dir'])}[/]")
        if run.get("left_to"):
            ui.console.print(f"  [dim]{_owner_words(**run['left_to'])}; `meshlab stop` leaves it to it[/]")
        width = max([10, *(len(s["name"]) for s in run["services"])])
        for s in run["services"]:
            state = "[green]running[/]" if s["running"] else "[red]stopped[/]"
            ports = ", ".join(f"{p} ({r})" for r, p in s["ports"].items())
            where = f"container {s['container']}" if s.get("container") else f"pid {s['pid']:<7}"
            ui.console.print(f"  {s['name']:<{width}} {state}  {where} {ports}")


def _docker_status(course, folder) -> dict | None:
    """A run of the docker runtime in FOLDER (its marker file), as `status` reports runs."""
    from meshlab.runtime.docker import MARKER, DockerRuntime

    marker = folder / MARKER
    if not marker.is_file():
        return None
    spec = course.find(json.loads(marker.read_text())["lab"])
    runtime = DockerRuntime.attach(spec, folder)
    if runtime is None:
        return None
    running = runtime.state.services
    services = [{"name": s.name, "kind": s.kind, "pid": running[s.name].pid if s.name in running else None,
                 "container": running[s.name].container if s.name in running else None,
                 "ports": dict(s.ports), "running": s.name in running} for s in spec.services]
    owner = _live_owner(folder)
    return {"run": folder.name, "lab": spec.slug, "lab_dir": str(runtime.lab_dir), "runtime": "docker",
            "detached": runtime.owner_pid is None, "services": services,
            "left_to": None if owner is None else {"pid": owner[0], "owned_by": owner[1]}}


@click.command("watch")
@LAB
@click.option("--path", type=click.Path(), help="Watch the lab files in this folder instead of labs/NN-slug.")
def watch_command(lab: str, path: str | None) -> None:
    """Re-check LAB every time you save one of its files (Ctrl-C to stop).

    Services keep running between saves; only those whose files changed restart.
    """
    from meshlab import ui
    from meshlab.watch import watch as run_watch

    course = open_course()
    spec = course.find(lab)
    lab_dir = lab_dir_for(course, spec, path, False)

    def on_result(result, restarted):
        ui.console.rule(f"restarted: {', '.join(restarted)}" if restarted else "checked")
        ui.show_result(result)
        if lab_dir == spec.workspace and result.status != "error":
            progress.record_check(course, spec, result.status, result.passed, len(result.checks))

    def on_waiting(files):
        names = ", ".join(ui.relative(f) for f in files)
        ui.console.print(f"[dim]Watching {names}. Save to re-check; Ctrl-C to stop.[/]")

    run_watch(course, spec, lab_dir, on_result=on_result, on_error=ui.show_error, on_waiting=on_waiting)


@click.command("hint")
@LAB
@click.option("--all", "show_all", is_flag=True, help="Show every hint at once.")
@click.option("--reset", "reset_count", is_flag=True, help="Start again from the first hint.")
def hint_command(lab: str, show_all: bool, reset_count: bool) -> None:
    """The next hint for LAB (hints come in layers, from a nudge to the answer's shape)."""
    from meshlab import ui

    course = open_course()
    spec = course.find(lab)
    if reset_count:
        progress.reset_hints(course, spec)
        ui.console.print(f"Hints of lab {spec.number:02d} start again from the first.")
        return
    if not spec.hints:
        ui.console.print(f"Lab {spec.number:02d} has no hints; its README has the walkthrough.")
        return
    if show_all:
        shown, hints = len(spec.hints), list(spec.hints)
    else:
        shown, hints = progress.next_hint(course, spec)
    for index, text in enumerate(hints, 1):
        style = "" if index == shown else "[dim]"
        ui.console.print(f"{style}Hint {index}/{len(spec.hints)}: {ui.escape(text)}")
    if shown < len(spec.hints):
        ui.console.print(f"[dim](run `meshlab hint {spec.number}` again for the next one)[/]")


@click.command("reset")
@LAB
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset_command(lab: str, yes: bool) -> None:
    """Restore LAB's starter files; your current files are kept in a backup folder."""
    from meshlab import ui

    course = open_course()
    spec = course.find(lab)
    files = ", ".join(spec.edit)
    if not yes and not click.confirm(f"Restore the starter of {files} in {ui.relative(spec.workspace)}?"):
        sys.exit(1)
    backup, restored = workspace.reset(course, spec)
    ui.console.print(f"Restored {', '.join(restored) or 'nothing'}. Your previous files: {ui.relative(backup)}/")

