"""`meshlab chaos`: the CLI against a real HTTP server with the contract's admin API
(tests/chaos_admin.py): what it sends, what it prints, and exit 2 for every experiment
that cannot run, before anything is sent."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from chaos_admin import FaultAdmin


@pytest.fixture
def admin():
    with FaultAdmin({"web", "api", "db"}) as server:
        yield server


def test_inject_sends_the_contracts_fields(cli, admin):
    run = cli("chaos", "inject", "api", "--abort", "10%", "--admin", admin.url, "--json")
    assert run.code == 0, run.stderr
    method, path, body = admin.requests[-1]
    assert (method, path) == ("POST", "/faults")
    assert body == {"service": "api", "abort_percent": 10.0, "abort_status": 503, "delay_ms": None,
                    "delay_percent": 100.0, "route": None, "expires_at": None}
    assert json.loads(run.stdout)["id"] == "f1"


def test_inject_delay_status_route_and_expiry(cli, admin):
    before = dt.datetime.now(dt.timezone.utc)
    run = cli("chaos", "inject", "api", "--abort", "0.5%", "--status", "500", "--delay", "1.5s",
              "--delay-percent", "25", "--route", "/orders", "--for", "60s", "--admin", admin.url)
    assert run.code == 0, run.stderr
    assert "injected f1" in run.stdout and "abort 0.5% with 500" in run.stdout
    body = admin.requests[-1][2]
    assert (body["abort_percent"], body["abort_status"], body["delay_ms"], body["delay_percent"], body["route"]) == \
        (0.5, 500, 1500, 25.0, "/orders")
    ends = dt.datetime.fromisoformat(body["expires_at"])
    assert 59 <= (ends - before).total_seconds() <= 61


def test_list_shows_what_runs_and_json_is_the_control_planes(cli, admin):
    cli("chaos", "inject", "api", "--delay", "2s", "--for", "1h", "--admin", admin.url)
    cli("chaos", "inject", "web", "--abort", "50%", "--admin", admin.url)
    run = cli("chaos", "list", "--admin", admin.url)
    assert run.code == 0, run.stderr
    assert "delay 2000 ms on 100% of calls to api" in run.stdout
    assert "in 3599s" in run.stdout or "in 3600s" in run.stdout
    assert "when cleared" in run.stdout
    listed = json.loads(cli("chaos", "list", "--json", "--admin", admin.url).stdout)
    assert [(f["id"], f["service"]) for f in listed] == [("f1", "api"), ("f2", "web")]


def test_an_experiment_for_a_short_time_ends_by_itself(cli, admin):
    cli("chaos", "inject", "api", "--abort", "10%", "--for", "500ms", "--admin", admin.url)
    assert len(json.loads(cli("chaos", "list", "--json", "--admin", admin.url).stdout)) == 1
    time.sleep(0.7)
    assert json.loads(cli("chaos", "list", "--json", "--admin", admin.url).stdout) == []
    assert "No fault experiment runs." in cli("chaos", "list", "--admin", admin.url).stdout


def test_clear_one_service_or_all(cli, admin):
    for service in ("api", "api", "web"):
        cli("chaos", "inject", service, "--abort", "1%", "--admin", admin.url)
    run = cli("chaos", "clear", "api", "--admin", admin.url)
    assert run.code == 0 and "cleared 2 experiments on api" in run.stdout
    assert admin.requests[-1][:2] == ("DELETE", "/faults?service=api")
    assert [f["service"] for f in admin.current()] == ["web"]
    assert "cleared 1 experiment" in cli("chaos", "clear", "--admin", admin.url).stdout
    assert admin.current() == []


@pytest.mark.parametrize("args, words", [
    (["nope", "--abort", "10%"], "no service 'nope'"),
    (["api", "--abort", "150%"], "not between 0 % and 100 %"),
    (["api", "--abort", "ten"], "not a percentage"),
    (["api", "--delay", "-2s"], "is negative"),
    (["api", "--delay", "2"], "not a duration"),
    (["api", "--delay", "2s", "--delay-percent", "101"], "not between"),
    (["api", "--delay-percent", "50", "--abort", "1%"], "--delay-percent needs --delay"),
    (["api"], "needs --abort, --delay or both"),
    (["api", "--abort", "10%", "--status", "99"], "not an HTTP status"),
    (["api", "--abort", "10%", "--route", "orders"], "not a path prefix"),
    (["api", "--abort", "10%", "--for", "0s"], "would end before it starts"),
    (["db", "--abort", "10%"], "tcp service"),
])
def test_invalid_experiments_are_exit_2_and_never_sent(cli, admin, args, words):
    run = cli("chaos", "inject", *args, "--admin", admin.url)
    assert run.code == 2, run.stdout
    assert words in run.stderr
    assert "Traceback" not in run.stderr
    assert admin.requests == []


def test_clear_of_an_unknown_service_is_exit_2(cli, admin):
    run = cli("chaos", "clear", "nope", "--admin", admin.url)
    assert run.code == 2 and "no service 'nope'" in run.stderr and admin.requests == []


def test_a_refusal_of_the_control_plane_is_exit_2_with_its_reason(cli, tmp_path):
    # A manifest that knows a service the control plane does not: the control plane's 400 is shown.
    with FaultAdmin({"web"}) as admin:
        run = cli("chaos", "inject", "api", "--abort", "10%", "--admin", admin.url)
    assert run.code == 2 and "refused the experiment: unknown service 'api'" in run.stderr


@pytest.mark.parametrize("command", [["inject", "api", "--abort", "10%"], ["list"], ["clear"]])
def test_no_control_plane_is_exit_2(cli, command):
    from meshlab.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = cli("chaos", *command, "--admin", url)
    assert run.code == 2 and f"no control plane answers at {url}" in run.stderr
    assert "meshlab mesh up" in run.stderr


def test_without_admin_and_without_a_running_mesh_it_is_exit_2(cli):
    run = cli("chaos", "list")
    assert run.code == 2 and "no control plane is running: the mesh of lab 11 is not up" in run.stderr
    assert "meshlab mesh up" in run.stderr


@pytest.mark.lab_runs
def test_against_the_solved_mesh(tmp_path):
    """The CLI's own path: `meshlab mesh up` on a copy of the course with lab 11 solved,
    then inject (the calls to api really fail), list, a refused second experiment, clear
    (they really pass again), an experiment on one path prefix only, down; all in a network namespace of its own."""
    import shutil
    import subprocess
    import sys

    from conftest import CAN_ISOLATE, ROOT

    from meshlab import isolation

    if not CAN_ISOLATE:
        pytest.skip("needs a network namespace of its own")
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "course.yaml", course)
    for folder in ("labs", "solutions", "checker"):
        shutil.copytree(ROOT / folder, course / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "solutions" / "11-mini-mesh", course / "labs" / "11-mini-mesh", dirs_exist_ok=True)
    meshlab = Path(sys.executable).parent / "meshlab"
    web = "ip netns exec ml11-web-v1 curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8080/"
    orders = web + "orders/1"
    script = tmp_path / "run.sh"
    script.write_text(f"""
exec 2>&1
ip link set lo up
export MESHLAB_ROOT={course} MESHLAB_STATE_DIR={tmp_path / 'state'}
cd {course}
M={meshlab}
$M mesh up >/dev/null 2>&1 || {{ echo UP-FAILED; exit 1; }}
trap '$M mesh down >/dev/null 2>&1' EXIT
echo "== inject"; $M chaos inject api --abort 100% --for 60s --json; echo "rc=$?"
sleep 1; echo "== web"; {web}; {web}
echo "== second"; $M chaos inject api --delay 1s; echo "rc=$?"
echo "== list"; $M chaos list --json
echo "== clear"; $M chaos clear api; echo "rc=$?"
sleep 1; echo "== web"; {web}; {web}
echo "== list"; $M chaos list
echo "== route"; $M chaos inject api --abort 100% --route /orders; sleep 1; {orders}; {web}
""")
    proc = subprocess.run(isolation.wrap(["bash", str(script)]), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "UP-FAILED" not in out, out
    parts = {}
    for chunk in out.split("== ")[1:]:
        title, _, body = chunk.partition("\n")
        parts.setdefault(title, []).append(body)
    injected = json.loads(parts["inject"][0].split("rc=")[0])
    assert injected["service"] == "api" and injected["abort_percent"] == 100.0 and injected["id"]
    assert parts["inject"][0].strip().endswith("rc=0")
    assert parts["web"][0].split() == ["502", "502"]              # web's app: its call to api was aborted
    assert "already has an experiment" in parts["second"][0] and "rc=2" in parts["second"][0]
    assert [f["id"] for f in json.loads(parts["list"][0])] == [injected["id"]]
    assert "cleared 1 experiment on api" in parts["clear"][0] and "rc=0" in parts["clear"][0]
    assert parts["web"][1].split() == ["200", "200"]
    assert "No fault experiment runs." in parts["list"][1]
    route = parts["route"][0].split()
    assert "under /orders" in parts["route"][0] and route[-2:] == ["502", "200"]   # only /orders is aborted
