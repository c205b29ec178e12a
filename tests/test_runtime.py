"""The local runtime with real processes: readiness, selective restarts, and the
guarantee that nothing outlives its owner, even one killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from meshlab import ports
from meshlab.course import load_course
from meshlab.errors import PortBusy, ServiceFailed
from meshlab.grading import eventually
from meshlab.runtime import LocalRuntime, read_state, stop_orphaned_runs, stop_run
from meshlab.runtime import processes
from meshlab.runtime.processes import alive

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = (ROOT / "solutions" / "01-hello-mesh" / "envoy.yaml").read_text()


@pytest.fixture
def demo(tmp_path: Path):
    """A one-lab course on free ephemeral ports: an app and an Envoy in front of it."""
    app, listener, admin = ports.free_port(), ports.free_port(), ports.free_port()
    (tmp_path / "course.yaml").write_text("title: demo\nlabs: [01-demo]\n")
    folder = tmp_path / "labs" / "01-demo"
    folder.mkdir(parents=True)
    (folder / "lab.yaml").write_text(textwrap.dedent(f"""\
        title: Demo
        edit: [envoy.yaml]
        services:
          app:
            python: meshlab.apps.hello
            args: [--port, "{app}"]
            ports: {{http: {app}}}
          proxy:
            envoy: envoy.yaml
            ports: {{listener: {listener}, admin: {admin}}}
            after: [app]
        """))
    config = (SOLUTION.replace("port_value: 8080", f"port_value: {app}")
              .replace("port_value: 10000", f"port_value: {listener}")
              .replace("port_value: 9901", f"port_value: {admin}"))
    (folder / "envoy.yaml").write_text(config)
    lab = load_course(tmp_path).labs[0]
    demo = {"root": tmp_path, "lab": lab, "dir": folder, "run": tmp_path / "run", "owners": [],
            "ports": {"app": app, "listener": listener, "admin": admin}}
    yield demo
    # Whatever a test leaves, even one that failed half-way, does not outlive it.
    for owner in demo["owners"]:
        owner.kill()
        owner.wait()
    stop_run(demo["run"])


def pids(run_dir: Path) -> dict[str, int]:
    return {name: s.pid for name, s in read_state(run_dir).services.items()}


OWNER_SCRIPT = """
import json, sys, time
from pathlib import Path
from meshlab.course import load_course
from meshlab.runtime import LocalRuntime
lab = load_course(Path(sys.argv[1])).labs[0]
# MODE: detached (`meshlab start`), owned (a check) or watch (`meshlab watch`)
runtime = LocalRuntime(lab, lab.workspace, Path(sys.argv[2]), detached=sys.argv[3] == "detached",
                       owned_by="watch" if sys.argv[3] == "watch" else "check")
runtime.start_all()
print(json.dumps({n: s.pid for n, s in runtime.state.services.items()}), flush=True)
if sys.argv[3] != "detached":
    time.sleep(120)
"""


def start_owner(demo, mode: str) -> tuple[subprocess.Popen, dict[str, int]]:
    child = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(demo["root"]), str(demo["run"]), mode],
                             stdout=subprocess.PIPE, text=True)
    demo["owners"].append(child)
    started = json.loads(child.stdout.readline())
    return child, started


def test_start_serves_and_stop_leaves_nothing(demo):
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    runtime.start_all()
    try:
        started = pids(demo["run"])
        assert runtime.admin("proxy").ready() == "LIVE"
        import httpx
        body = httpx.get(f"http://127.0.0.1:{demo['ports']['listener']}/", trust_env=False).text
        assert body.strip() == "Hello from the Python App!"
    finally:
        runtime.stop_all()
    assert not any(alive(pid) for pid in started.values())
    assert read_state(demo["run"]) is None


def test_services_die_with_an_owner_killed_by_sigkill(demo):
    child, started = start_owner(demo, "owned")
    assert all(alive(pid) for pid in started.values())
    child.kill()
    child.wait()
    assert eventually(lambda: not any(alive(pid) for pid in started.values()), 10), started


def test_a_detached_run_outlives_its_starter_until_stopped(demo):
    child, started = start_owner(demo, "detached")
    assert child.wait(timeout=30) == 0
    time.sleep(0.5)  # Envoy would have died by now if its parent's exit could kill it
    assert all(alive(pid) for pid in started.values()), started
    assert sorted(stop_run(demo["run"])) == ["app", "proxy"]
    assert not any(alive(pid) for pid in started.values())


def test_a_service_restarted_by_another_process_is_stopped_once_the_owner_dies(demo):
    child, started = start_owner(demo, "owned")
    visitor = LocalRuntime.attach(demo["lab"], demo["run"])  # like a checker attaching
    assert visitor is not None and not visitor.owner
    visitor.restart("app")  # not our run: the new app is detached from us
    new_app = pids(demo["run"])["app"]
    assert new_app != started["app"]
    child.kill()
    child.wait()
    assert eventually(lambda: not alive(started["proxy"]), 10)
    assert alive(new_app), "the restarted app does not die with the owner by itself..."
    assert stop_orphaned_runs(demo["run"].parent) == [demo["run"].name]
    assert not alive(new_app), "...so the next meshlab command stops it"


def test_sync_sees_what_another_process_restarted(demo):
    # `meshlab watch` attached to a run of `meshlab start`; its check restarts the app
    # (as lab 09's checks restart Redis). The watcher's next sync must neither start a
    # second app nor lose track of the one the check started.
    child, started = start_owner(demo, "detached")
    assert child.wait(timeout=30) == 0
    watcher = LocalRuntime.attach(demo["lab"], demo["run"])
    checker = LocalRuntime.attach(demo["lab"], demo["run"])
    checker.restart("app")
    restarted = pids(demo["run"])["app"]
    try:
        assert restarted != started["app"]
        assert watcher.sync() == []
        assert pids(demo["run"])["app"] == restarted
        stop_run(demo["run"])
        assert not any(alive(pid) for pid in (restarted, *started.values()))
    finally:
        if alive(restarted):  # the leak this test is about: never leave it behind
            os.kill(restarted, signal.SIGKILL)


def test_sync_restarts_only_the_service_whose_file_changed(demo):
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    runtime.start_all()
    try:
        before = pids(demo["run"])
        assert runtime.sync() == []
        config = demo["dir"] / "envoy.yaml"
        config.write_text(config.read_text().replace("envoy-was-here", "changed"))
        assert runtime.sync() == ["proxy"]
        after = pids(demo["run"])
        assert after["app"] == before["app"] and after["proxy"] != before["proxy"]
        assert not alive(before["proxy"])
    finally:
        runtime.stop_all()


def test_a_service_that_crashes_at_start_is_reported_with_its_log(demo):
    lab_yaml = demo["dir"] / "lab.yaml"
    lab_yaml.write_text(lab_yaml.read_text().replace(
        "python: meshlab.apps.hello", "command: [python, -c, \"import sys; sys.exit('boom at start')\"]"))
    lab = load_course(demo["root"]).labs[0]
    runtime = LocalRuntime(lab, demo["dir"], demo["run"])
    with pytest.raises(ServiceFailed) as caught:
        runtime.start_all()
    assert "app" in caught.value.message and "boom at start" in caught.value.details
    assert read_state(demo["run"]) is None


def test_an_envoy_that_cannot_bind_names_the_holder(demo):
    # The listener port is taken, and not declared in the manifest, so only Envoy finds out.
    lab_yaml = demo["dir"] / "lab.yaml"
    lab_yaml.write_text(lab_yaml.read_text().replace(f"listener: {demo['ports']['listener']}, ", ""))
    lab = load_course(demo["root"]).labs[0]
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", demo["ports"]["listener"]))
    holder.listen()
    try:
        with pytest.raises(PortBusy) as caught:
            LocalRuntime(lab, demo["dir"], demo["run"]).start_all()
        assert f"127.0.0.1:{demo['ports']['listener']}" in caught.value.message
        assert f"PID {os.getpid()}" in caught.value.details
    finally:
        holder.close()


def test_a_declared_busy_port_stops_the_lab_before_anything_starts(demo):
    holder = socket.socket()
    holder.bind(("127.0.0.1", demo["ports"]["admin"]))
    holder.listen()
    try:
        with pytest.raises(PortBusy, match="needs port"):
            LocalRuntime(demo["lab"], demo["dir"], demo["run"]).start_all()
        assert read_state(demo["run"]) is None
    finally:
        holder.close()


def test_stopping_a_service_takes_sigterm_not_the_kill_grace(demo):
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    runtime.start_all()
    try:
        app = pids(demo["run"])["app"]
        started = time.monotonic()
        runtime.stop("app")
        assert not alive(app)
        assert time.monotonic() - started < 2.5
    finally:
        runtime.stop_all()


def test_a_watcher_attached_to_a_detached_run_follows_a_restart_made_by_a_check(demo):
    # `meshlab start`, then `meshlab watch`: a check (another process) restarts the app.
    _, started = start_owner(demo, "detached")
    watcher = LocalRuntime.attach(demo["lab"], demo["run"])
    checker = LocalRuntime.attach(demo["lab"], demo["run"])
    assert watcher is not None and checker is not None
    checker.restart("app")
    new_app = pids(demo["run"])["app"]
    assert new_app != started["app"] and alive(new_app)
    # The next save: nothing changed, so nothing restarts, and no second app is started.
    assert watcher.sync() == []
    assert pids(demo["run"]) == {"app": new_app, "proxy": started["proxy"]}
    assert alive(new_app)
    # A file change restarts the proxy only; the state still names the app that runs.
    config = demo["dir"] / "envoy.yaml"
    config.write_text(config.read_text().replace("envoy-was-here", "changed"))
    assert watcher.sync() == ["proxy"]
    assert pids(demo["run"])["app"] == new_app
    # `meshlab stop` stops everything that really runs.
    running = pids(demo["run"])
    assert sorted(stop_run(demo["run"])) == ["app", "proxy"]
    assert not any(alive(pid) for pid in running.values())


def test_an_owner_that_stops_a_service_a_check_restarted_stops_the_new_one(demo):
    owner = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    owner.start_all()
    try:
        LocalRuntime.attach(demo["lab"], demo["run"]).restart("app")
        new_app = pids(demo["run"])["app"]
        owner.stop("app")
        assert eventually(lambda: not alive(new_app), 10), "the app the check restarted still runs"
    finally:
        owner.stop_all()


def test_restarting_the_envoys_gives_fresh_counters_and_keeps_the_apps(demo):
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    runtime.start_all()
    try:
        import httpx
        httpx.get(f"http://127.0.0.1:{demo['ports']['listener']}/", trust_env=False)
        assert runtime.admin("proxy").stat("http.ingress_http.downstream_rq_total") == 1
        before = pids(demo["run"])
        assert runtime.restart_envoys() == ["proxy"]
        after = pids(demo["run"])
        assert after["app"] == before["app"] and after["proxy"] != before["proxy"]
        assert runtime.admin("proxy").stat("http.ingress_http.downstream_rq_total") == 0
    finally:
        runtime.stop_all()


def test_services_of_a_pod_whose_rules_changed_restart_so_old_connections_do_not_hide_them(demo, monkeypatch):
    # Envoy keeps its upstream connections: opened under the owner exemption, they would
    # carry on once a learner removes it, and the loop the README shows would not happen.
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    specs = [SimpleNamespace(name="app", pod="pod"), SimpleNamespace(name="remote", pod="remote"),
             SimpleNamespace(name="sidecar", pod="pod")]
    runtime.state.services = {spec.name: SimpleNamespace(inputs={}) for spec in specs}
    restarted = []
    monkeypatch.setattr(runtime, "_start_order", lambda: specs)
    monkeypatch.setattr(runtime, "is_running", lambda name: True)
    monkeypatch.setattr("meshlab.runtime.local.input_hashes", lambda lab_dir, spec: {})
    monkeypatch.setattr(runtime, "restart", restarted.append)
    monkeypatch.setattr(runtime, "_apply_pod_rules", lambda: ["pod"])
    assert runtime.sync() == ["iptables of pod", "app", "sidecar"]
    assert restarted == ["app", "sidecar"]
    monkeypatch.setattr(runtime, "_apply_pod_rules", lambda: [])
    restarted.clear()
    assert runtime.sync() == [] and restarted == []


def test_services_started_side_by_side_are_each_recorded_ready(demo):
    # Two apps, then two Envoys, each pair in one wave: every Envoy's admin address (learnt
    # while waiting for it) must reach the state file, whatever was launched beside it.
    extra = {name: ports.free_port() for name in ("app2", "listener2", "admin2")}
    lab_yaml = demo["dir"] / "lab.yaml"
    lab_yaml.write_text(lab_yaml.read_text()
                        + f"  app2:\n    python: meshlab.apps.hello\n    args: [--port, \"{extra['app2']}\"]\n"
                        + f"    ports: {{http: {extra['app2']}}}\n"
                        + f"  proxy2:\n    envoy: envoy2.yaml\n"
                        + f"    ports: {{listener: {extra['listener2']}, admin: {extra['admin2']}}}\n    after: [app2]\n")
    config = (demo["dir"] / "envoy.yaml").read_text()
    (demo["dir"] / "envoy2.yaml").write_text(
        config.replace(f"port_value: {demo['ports']['app']}", f"port_value: {extra['app2']}")
              .replace(f"port_value: {demo['ports']['listener']}", f"port_value: {extra['listener2']}")
              .replace(f"port_value: {demo['ports']['admin']}", f"port_value: {extra['admin2']}"))
    lab = load_course(demo["root"]).labs[0]
    runtime = LocalRuntime(lab, demo["dir"], demo["run"])
    assert [[s.name for s in wave] for wave in runtime._start_waves()] == [["app", "app2"], ["proxy", "proxy2"]]
    runtime.start_all()
    try:
        recorded = read_state(demo["run"]).services
        for proxy, admin in (("proxy", demo["ports"]["admin"]), ("proxy2", extra["admin2"])):
            assert recorded[proxy].admin_url == f"http://127.0.0.1:{admin}"
            assert runtime.admin(proxy).ready() == "LIVE"
        attached = LocalRuntime.attach(lab, demo["run"])
        assert attached.admin("proxy2").ready() == "LIVE"
    finally:
        runtime.stop_all()


def test_ctrl_c_during_a_stop_arrives_after_everything_is_stopped(demo, monkeypatch):
    # A second Ctrl-C (or the SIGTERM of a dying parent) that lands while the lab is being
    # stopped must not cut the stop halfway: it is held, and raised once all is gone.
    runtime = LocalRuntime(demo["lab"], demo["dir"], demo["run"])
    runtime.start_all()
    started = pids(demo["run"])
    terminate_groups = processes.terminate_groups

    def interrupted_midway(groups, **options):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # a signal that is not held is raised within this
        terminate_groups(groups, **options)

    monkeypatch.setattr(processes, "terminate_groups", interrupted_midway)
    with pytest.raises(KeyboardInterrupt):
        runtime.stop_all()
    assert not any(alive(pid) for pid in started.values())
    assert read_state(demo["run"]) is None
