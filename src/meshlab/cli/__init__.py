"""The `meshlab` command: argument handling and rendering only; the work is elsewhere.

One module per command group, each exporting its click commands:

    labs.py    the learner's loop: list, start, stop, status, watch, hint, reset
    check.py   meshlab check (its own module: it starts the checker before drawing anything)
    course.py  the course on this machine: doctor, audit
    certs.py   meshlab certs (a CA and SPIFFE SVIDs)
    load.py    meshlab load (fortio-compatible load)
    mtls.py    meshlab mtls probe
    xds.py     meshlab xds status
    mesh.py    meshlab mesh up / down / status (a lab's service mesh)
    k8s.py     meshlab mesh render --k8s (the mesh as Kubernetes manifests)
    dashboard.py meshlab mesh dashboard (the mesh's traffic on a web page)
    chaos.py   meshlab chaos inject / list / clear (faults on the Mini-Mesh)
    traces.py  meshlab traces (a lab's trace store as waterfalls)
    image.py   meshlab image: the course's Docker images
    compose.py meshlab compose: a Compose sandbox per lab, from its lab.yaml
    report.py  meshlab report (a class gradebook)
    slides.py  meshlab slides build / serve (the instructor's decks)
    dev.py     meshlab dev: the course authors' commands

Command functions are named `<command>_command` and groups `<group>_group`; output goes
through `meshlab.ui`'s consoles; a command ends with `sys.exit(code)` when its code is
not 0, and a `MeshlabError` raised anywhere becomes its message and exit 2.

A command's module is imported only when that command runs (`COMMANDS` below names it
and its one-line help, which `meshlab --help` shows): `meshlab --help` must not pay for
pytest, the runtime and the checker. A test compares each line with the command's own.

Exit codes: 0 success; 1 a check (or an audited lab) failed; 2 the input or the
environment is broken (the message says what, where and how to fix it); 130 Ctrl-C.
"""

from __future__ import annotations

import signal
import sys

import click

from meshlab import __version__
from meshlab.errors import MeshlabError

# name -> ("module:attribute", the command's short help as its docstring gives it)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("labs:list_command", "The labs in course order, with your progress and time estimates."),
    "start": ("labs:start_command", "Start LAB's services in the background and show how to reach them."),
    "stop": ("labs:stop_command", "Stop LAB's services (every running lab when LAB is omitted)."),
    "status": ("labs:status_command",
               "What meshlab is running now (of LAB, or of every lab): services, PIDs and ports."),
    "check": ("check:check_command",
              "Grade LAB against real Envoy: a scorecard of checks, EXPECTED / RECEIVED, hints."),
    "watch": ("labs:watch_command", "Re-check LAB every time you save one of its files (Ctrl-C to stop)."),
    "hint": ("labs:hint_command", "The next hint for LAB (hints come in layers, from a nudge to the answer's shape)."),
    "reset": ("labs:reset_command", "Restore LAB's starter files; your current files are kept in a backup folder."),
    "doctor": ("course:doctor_command", "Which labs this machine is ready for, and what is missing for the others."),
    "audit": ("course:audit_command", "Prove the course: each starter must fail its checks, each solution pass them."),
    "load": ("load:load_command", "Send load to URL, fortio-style, and show status codes and latency percentiles."),
    "certs": ("certs:certs_group", "A CA and SPIFFE X.509-SVIDs (EC P-256) for mutual TLS between sidecars."),
    "mtls": ("mtls:mtls_group", "Look at mutual TLS from the outside: who gets in, who does not, and why."),
    "xds": ("xds:xds_group", "Inspect an xDS control plane built on meshlab.xds."),
    "mesh": ("mesh:mesh_group", "Run a lab's service mesh: injected sidecars, its control plane."),
    "chaos": ("chaos:chaos_group", "Inject, list and clear faults (aborts, delays) on calls to a mesh service."),
    "traces": ("traces:traces_command", "The latest traces as waterfalls: service, span, duration, status."),
    "image": ("image:image_group", "The course's Docker images: a Debian base and the toolbox (meshlab + Envoy)."),
    "compose": ("compose:compose_command",
                "Render each lab's Compose sandbox (compose/NN-slug/compose.yaml) from its lab.yaml."),
    "report": ("report:report_command",
               "A class gradebook from RESULTS: `meshlab check --json` files, or folders of them."),
    "slides": ("slides:slides_group",
               "The instructor's decks in slides/: build them into reveal.js pages, serve them."),
    "dev": ("dev:dev_group", "Commands for course authors (the learner's commands are the others)."),
}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Cli(click.Group):
    """Loads a command's module when it is used; turns meshlab's own errors into a
    message and exit 2, and Ctrl-C into 130."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            self.add_command(command_named(name), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing from COMMANDS' short help: loading every command to ask it is what
        # made `meshlab --help` slow. Commands added otherwise (tests) answer themselves.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        # `kill PID` must clean up like Ctrl-C does: unwind, so every `finally` stops
        # the processes it started. The handlers are put back afterwards, for callers
        # that run the CLI in their own process (tests, notebooks).
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, _interrupt)
        if previous[signal.SIGINT] == signal.SIG_IGN:
            signal.signal(signal.SIGINT, _interrupt)  # started in the background by a shell
        try:
            return super().invoke(ctx)
        except MeshlabError as error:
            from meshlab import ui

            ui.show_error(error)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            from meshlab import ui

            # True of every command: what it started is stopped; a lab of `meshlab start`
            # (which a watch or a check only attached to) keeps running.
            ui.errors.print("interrupted; what this command started was stopped "
                            "(a lab started with `meshlab start` runs until `meshlab stop`)")
            sys.exit(130)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshlab")
def main() -> None:
    """meshlab: service-mesh internals, hands on, graded against real Envoy.

    \b
    A typical round:
      meshlab list                 the labs and your progress
      meshlab start 1              run lab 1's services in the background
      $EDITOR labs/01-hello-mesh/envoy.yaml
      meshlab check 1              grade your files (or: meshlab watch 1)
      meshlab hint 1               one more hint each time
      meshlab stop 1
    """


def command_named(name: str) -> click.Command:
    """The command NAME of COMMANDS, its module imported now."""
    import importlib

    module, attribute = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(f"meshlab.cli.{module}"), attribute)

if __name__ == "__main__":
    main()
