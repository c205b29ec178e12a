"""The `meshlab` command: argument handling and rendering only; the work is elsewhere.

One module per command group, each exporting its click commands:

    labs.py    the learner's loop: list, start, stop, status, check, watch, hint, reset
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

Exit codes: 0 success; 1 a check (or an audited lab) failed; 2 the input or the
environment is broken (the message says what, where and how to fix it); 130 Ctrl-C.
"""

from __future__ import annotations

import signal
import sys

import click

from meshlab import __version__, ui
from meshlab.errors import MeshlabError


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Cli(click.Group):
    """Turns meshlab's own errors into a message and exit 2, and Ctrl-C into 130."""

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
            ui.show_error(error)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
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


def _register() -> None:
    from meshlab.cli import (certs, chaos, compose, course, dashboard, dev, image, k8s, labs, load, mesh, mtls,
                             report, slides, traces, xds)

    for command in (*labs.COMMANDS, *course.COMMANDS, load.load_command, certs.certs_group, mtls.mtls_group,
                    xds.xds_group, mesh.mesh_group, traces.traces_command, image.image_group, compose.compose_command,
                    report.report_command, slides.slides_group, dev.dev_group, chaos.chaos_group):
        main.add_command(command)
    mesh.mesh_group.add_command(k8s.render_command)
    mesh.mesh_group.add_command(dashboard.dashboard_command)


_register()

if __name__ == "__main__":
    main()
