"""`meshlab mesh dashboard`: the running mesh's traffic on a web page, served on 127.0.0.1.

    meshlab mesh up
    meshlab mesh dashboard                 # http://127.0.0.1:8800/ (opened in a browser if there is one)
    meshlab mesh dashboard --port 9000 --no-browser
"""

from __future__ import annotations

import time

import click

from meshlab.ui import console

DEFAULT_PORT = 8800


@click.command("dashboard")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="The page's port on 127.0.0.1.")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser.")
def dashboard_command(port: int, no_browser: bool) -> None:
    """The mesh as a live graph (calls with requests/s, error %, p99, coloured by
    health), each service's golden signals over time, and the control plane's view.

    A Prometheus of its own scrapes every sidecar each second; the page polls it through
    this command until Ctrl-C, which stops both. Exit 2 when the mesh is not up or
    Prometheus is missing.
    """
    import webbrowser

    from meshlab.cli.options import open_course
    from meshlab.dashboard.server import Dashboard, Sources
    from meshlab.errors import EnvironmentProblem, PortBusy
    from meshlab.mesh import inject, manifest
    from meshlab.ports import is_free
    from meshlab.runtime import LocalRuntime
    from meshlab.session import run_dir_for

    course = open_course()
    lab = next((lab for lab in course.labs if lab.mesh is not None), None)
    if lab is None:
        raise EnvironmentProblem("no lab of this course declares a mesh")
    runtime = LocalRuntime.attach(lab, run_dir_for(course, lab, lab.workspace))
    if runtime is None or runtime.pods is None:
        raise EnvironmentProblem(f"the mesh of lab {lab.number:02d} is not up", fix="start it with `meshlab mesh up`")
    if not is_free(port):
        raise PortBusy(f"port {port} on 127.0.0.1 is taken", fix="choose another with --port")
    mesh = manifest.load(lab.mesh)
    admins = {}

    def sidecar_get(workload: str, path: str) -> bytes:
        if workload not in admins:
            admins[workload] = runtime.admin(f"{workload}-envoy")
        return admins[workload].get(path).content

    control = runtime.pods.client(inject.CONTROL_POD, timeout=5.0)

    def control_status() -> dict:
        return control.get(f"http://127.0.0.1:{mesh.admin_port}/status").json()

    with Dashboard(Sources(mesh, sidecar_get, control_status), port=port) as dashboard:
        console.print(f"Mini-Mesh dashboard on [bold]{dashboard.url}/[/] (Prometheus on {dashboard.prometheus.url}); "
                      "Ctrl-C stops it")
        if not no_browser:
            try:
                webbrowser.get()
                webbrowser.open(dashboard.url + "/")
            except webbrowser.Error:
                console.print("[dim]no browser here: open the address above in one[/]")
        try:
            while True:
                time.sleep(1)
        finally:
            control.close()
            for admin in admins.values():
                admin.close()
