"""The meshlab command as a learner meets it: help everywhere, exit codes that mean
something, and a clear message (never a traceback) for every broken input.

Commands that start no lab run in this process (the `cli` fixture, click's runner);
those that start one run as a real child process (the `meshlab` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conftest import Run

from meshlab import isolation, ports

ROOT = Path(__file__).resolve().parents[1]


def every_command(group=None, prefix=()):
    """Every command and group of the CLI, as the words a user types."""
    from meshlab.cli import main

    group = group or main
    context = click.Context(group)
    for name in group.list_commands(context):  # commands load when asked: not all are in .commands yet
        command = group.get_command(context, name)
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from every_command(command, (*prefix, name))


def test_the_cli_has_its_command_groups():
    assert {words[0] for words in every_command()} >= {
        "list", "start", "stop", "status", "check", "watch", "hint", "reset", "doctor", "audit",
        "certs", "load", "mtls", "xds"}


@pytest.mark.parametrize("words", [(), *every_command()], ids=lambda words: " ".join(words) or "meshlab")
def test_every_command_has_help(cli, words):
    result = cli(*words, "--help")
    assert result.code == 0
    assert "Usage: meshlab" in result.stdout


def test_the_real_command_starts_and_shows_help(meshlab):
    result = meshlab("--help")
    assert result.code == 0 and "Usage: meshlab" in result.stdout


def test_xds_status_finds_the_labs_control_plane_in_its_manifest(cli, course):
    port = next(s.ports["admin"] for s in course.find(6).services if "xds" in s.ports)
    for words in (("--lab", "6"), ("6",)):
        result = cli("xds", "status", *words)
        assert result.code == 2 and f"http://127.0.0.1:{port}" in result.stderr and "meshlab start 6" in result.stderr
    assert "has no control plane" in cli("xds", "status", "--lab", "1").stderr
    assert "has no control plane" in cli("xds", "status", "1").stderr
    assert cli("xds", "status", "6", "--lab", "11").code == 2
    assert cli("xds", "status", "6", "--admin", f"http://127.0.0.1:{port}").code == 2


def test_xds_status_of_a_lab_whose_control_plane_runs_in_a_pod_says_the_lab_is_not_running(cli):
    # Lab 11's control plane lives in the pod `mesh`, which exists only while the lab runs.
    result = cli("xds", "status", "11")
    assert result.code == 2
    assert "lab 11 is not running" in result.stderr and "pod 'mesh'" in result.stderr
    assert "meshlab start 11" in result.stderr


XDS_PODS_SCRIPT = """
set -u
m() { "$PYTHON" -m meshlab "$@"; }
# r NAME [NAMESPACE] ARGS...: run meshlab (inside the named network namespace when given)
r() { name=$1; shift; pre=""; case "$1" in ml*) pre="ip netns exec $1"; shift;; esac
      $pre "$PYTHON" -m meshlab "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.code"; }
trap 'm stop 11 > /dev/null 2>&1' EXIT  # whatever fails, nothing outlives the test
m start 11 > "$OUT/start.out" 2>&1 || exit 3
# A sidecar may still be applying its first snapshot right after the start: ask again, as a learner would.
for i in $(seq 20); do r text xds status 11; [ "$(cat "$OUT/text.code")" = 0 ] && break; sleep 0.5; done
r json xds status --lab 11 --json
r default xds status
# From inside the pod, the admin URL itself: /status is the mesh's summary, the view is at /xds.
r admin ml11-mesh xds status --admin http://127.0.0.1:18001
# A sidecar's Envoy admin is no control plane: it answers, but with no xDS view.
r envoy ml11-web-v1 xds status --admin http://127.0.0.1:15000
m stop 11 > /dev/null
r stopped xds status 11
# Lab 06's control plane, outside any pod, the same way.
trap 'm stop 6 > /dev/null 2>&1' EXIT
m start 6 > "$OUT/start6.out" 2>&1 || exit 3
for i in $(seq 20); do r six xds status 6; [ "$(cat "$OUT/six.code")" = 0 ] && break; sleep 0.5; done
"""


@pytest.mark.lab_runs
@pytest.mark.skipif(not isolation.available() or os.geteuid() != 0, reason="lab 11's pods need root")
@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("iptables") is None,
                    reason="lab 11 needs redis-server and iptables")
def test_xds_status_reaches_a_control_plane_in_a_pod(state_dir, tmp_path, lab_copy):
    """Lab 11's solved mesh, started by `meshlab start` in a namespace of its own: `meshlab
    xds status 11` asks its control plane from inside the pod `mesh` and shows every
    sidecar's stream, as `meshlab xds status 6` shows lab 06's Envoy."""
    from meshlab.mesh import inject, manifest

    course = tmp_path / "course"   # a course of two solved labs: 06, and 11 (which runs first, alone)
    (course / "labs").mkdir(parents=True)
    (course / "course.yaml").write_text("title: two labs\nlabs: [06-xds, 11-mini-mesh]\n")
    shutil.copytree(lab_copy(6, name="six"), course / "labs" / "06-xds")
    shutil.copytree(lab_copy(11), course / "labs" / "11-mini-mesh")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "MESHLAB_ROOT": str(course), "MESHLAB_STATE_DIR": str(state_dir),
           "PYTHON": sys.executable, "OUT": str(out), "COLUMNS": "200"}
    run = subprocess.run(isolation.wrap(["bash", "-c", XDS_PODS_SCRIPT]), cwd=course, env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr + (out / "start.out").read_text()

    def result(name: str) -> Run:
        return Run(int((out / f"{name}.code").read_text()), (out / f"{name}.out").read_text(),
                   (out / f"{name}.err").read_text())

    mesh = manifest.load(course / "labs" / "11-mini-mesh" / "mesh.yaml")
    workloads = inject.addresses(mesh).workloads          # name -> the pod's address
    text = result("text")
    assert text.code == 0, text.output
    for name in workloads:
        assert f"{name}  snapshot" in text.stdout, (name, text.stdout)
    assert text.stdout.count(": in sync, runs ") == len(workloads)

    view = result("json")
    assert view.code == 0, view.output
    nodes = view.json()["nodes"]
    assert set(nodes) == set(workloads)
    for name, address in workloads.items():
        [stream] = nodes[name]["streams"]                 # the sidecar of the workload's own pod
        assert stream["in_sync"] and stream["peer"].startswith(f"ipv4:{address}:"), stream
        assert {"LDS", "CDS", "EDS", "RDS", "SDS"} <= set(stream["types"])

    default = result("default")                           # no LAB: the running lab with a control plane
    assert default.code == 0 and all(f"{name}  snapshot" in default.stdout for name in workloads), default.output
    admin = result("admin")
    assert admin.code == 0 and all(f"{name}  snapshot" in admin.stdout for name in workloads), admin.output

    envoy = result("envoy")
    assert envoy.code == 2 and "not with a meshlab.xds admin view" in envoy.stderr, envoy.output
    stopped = result("stopped")
    assert stopped.code == 2 and "lab 11 is not running" in stopped.stderr, stopped.output
    six = result("six")
    assert six.code == 0 and "lab06-envoy  snapshot" in six.stdout and ": in sync, runs " in six.stdout, six.output
    for name in ("text", "json", "default", "admin", "envoy", "stopped", "six"):
        assert "Traceback" not in result(name).output, name


def test_unknown_lab_is_exit_2_with_the_known_labs(cli):
    result = cli("check", "42")
    assert result.code == 2
    assert "there is no lab '42'" in result.stderr and "01 (01-hello-mesh)" in result.stderr
    assert "Traceback" not in result.output


# The bad-input set: each broken lab file is refused before anything starts, exit 2,
# with the file, the line and a fix. None of them may produce a traceback.
SOLUTION = (ROOT / "solutions" / "01-hello-mesh" / "envoy.yaml").read_text()
STAT_PREFIX_LINE = next(n for n, line in enumerate(SOLUTION.splitlines(), 1) if "stat_prefix:" in line)
BAD_INPUTS = {
    "invalid yaml": (SOLUTION.replace("  clusters:\n", "  clusters:\n   - name: [\n"),
                     ["is not valid YAML", "envoy.yaml:"]),
    "unknown field": (SOLUTION.replace("stat_prefix:", "stat_prefx:"),
                      ["unknown field 'stat_prefx'", "did you mean 'stat_prefix'?", f"envoy.yaml:{STAT_PREFIX_LINE}:11"]),
    "wrong type": (SOLUTION.replace("port_value: 8080", "port_value: [8080]"),
                   ["wrong value", "port_value", "envoy.yaml:"]),
    "not a mapping": ("- just\n- a list\n", ["must be a YAML mapping"]),
}


# Graded in a namespace of their own (--isolate): lab 01's fixed ports on the host may be
# held by another test's lab at the same moment, and a busy port is said before a config
# that only Envoy's start refuses.
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_exit_2_with_file_line_and_fix(meshlab, lab_copy, case):
    text, expected = BAD_INPUTS[case]
    folder = lab_copy(1, files={"envoy.yaml": text})
    result = meshlab("check", "1", "--path", str(folder), "--isolate")
    assert result.code == 2, result.output
    for fragment in expected:
        assert fragment in result.output, (fragment, result.output)
    assert "fix:" in result.output
    assert "Traceback" not in result.output


def test_bad_input_in_json_mode_is_an_error_entry(meshlab, lab_copy):
    folder = lab_copy(1, files={"envoy.yaml": BAD_INPUTS["unknown field"][0]})
    result = meshlab("check", "1", "--path", str(folder), "--isolate", "--json")
    assert result.code == 2
    data = result.json()
    assert data["status"] == "error" and data["error"]["kind"] == "envoy-config"
    assert data["error"]["where"].endswith(f"envoy.yaml:{STAT_PREFIX_LINE}:11")
    assert data["error"]["fix"] == "did you mean 'stat_prefix'?"


def test_a_missing_envoy_binary_is_exit_2(meshlab, lab_copy):
    folder = lab_copy(1)
    result = meshlab("check", "1", "--path", str(folder), "--isolate", env={"MESHLAB_ENVOY": "/nonexistent/envoy"})
    assert result.code == 2
    assert "MESHLAB_ENVOY=/nonexistent/envoy is not an executable file" in result.output
    assert "Traceback" not in result.output


def test_a_missing_lab_folder_is_exit_2(cli, tmp_path):
    result = cli("check", "1", "--path", str(tmp_path / "nope"))
    assert result.code == 2 and "is not a folder" in result.stderr


def test_a_missing_lab_file_is_exit_2_with_reset_advice(meshlab, lab_copy):
    folder = lab_copy(1)
    (folder / "envoy.yaml").unlink()
    result = meshlab("check", "1", "--path", str(folder), "--isolate")
    assert result.code == 2 and "envoy.yaml is missing" in result.stderr and "meshlab reset 1" in result.stderr


@pytest.mark.xdist_group("host-ports")
def test_a_busy_port_is_exit_2_naming_port_and_holder(meshlab, lab_copy):
    folder = lab_copy(1)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 9901))
        holder.listen()
        ours = True
    except OSError:
        ours = False  # something on this machine already holds it: the verdict is the same
    try:
        result = meshlab("check", "1", "--path", str(folder))
    finally:
        holder.close()
    assert result.code == 2, result.output
    assert "127.0.0.1:9901 (sidecar admin)" in result.stderr
    if ours:
        import os
        assert f"PID {os.getpid()}" in result.stderr
    assert "Traceback" not in result.output


def test_list_json_describes_the_labs(cli):
    result = cli("list", "--json")
    assert result.code == 0
    labs = result.json()
    assert labs[0]["slug"] == "01-hello-mesh" and labs[0]["time_minutes"] == 45


def test_hints_come_one_layer_at_a_time(cli, course):
    hints = course.find(1).hints
    first = cli("hint", "1")
    assert first.code == 0 and "Hint 1/" in first.stdout and "Hint 2/" not in first.stdout
    second = cli("hint", "1")
    assert "Hint 2/" in second.stdout
    assert cli("list", "--json").json()[0]["hints_shown"] == 2
    everything = cli("hint", "1", "--all")
    assert f"Hint {len(hints)}/{len(hints)}" in everything.stdout
    cli("hint", "1", "--reset")
    assert cli("list", "--json").json()[0]["hints_shown"] == 0


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A git clone of the course (reset works on committed starters)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path / "course"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def test_reset_restores_the_starter_and_backs_up_the_learners_file(cli, clone, state_dir):
    learner_file = clone / "labs" / "01-hello-mesh" / "envoy.yaml"
    starter = learner_file.read_text()
    learner_file.write_text("# my work in progress\n")
    result = cli("reset", "1", "--yes", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert result.code == 0, result.output
    assert "Restored envoy.yaml" in result.stdout
    assert learner_file.read_text() == starter
    backups = list((state_dir / "backups" / "01-hello-mesh").glob("*/envoy.yaml"))
    assert [b.read_text() for b in backups] == ["# my work in progress\n"]


def test_reset_works_in_a_course_downloaded_without_git(cli, tmp_path, state_dir):
    copy = tmp_path / "course"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", ".meshlab"))
    env = {"MESHLAB_ROOT": str(copy)}
    learner_file = copy / "labs" / "01-hello-mesh" / "envoy.yaml"
    starter = learner_file.read_text()
    assert cli("list", env=env, cwd=copy).code == 0  # the learner's first command, before any edit
    learner_file.write_text("# my work in progress\n")
    result = cli("reset", "1", "--yes", env=env, cwd=copy)
    assert result.code == 0, result.output
    assert learner_file.read_text() == starter
    assert [b.read_text() for b in (state_dir / "backups" / "01-hello-mesh").glob("*/envoy.yaml")] == [
        "# my work in progress\n"]
    # The kept copy is the starter's, not the learner's later edits.
    learner_file.write_text("# edited again\n")
    cli("list", env=env, cwd=copy)
    cli("reset", "1", "--yes", env=env, cwd=copy)
    assert learner_file.read_text() == starter


def test_reset_without_git_or_a_kept_copy_says_why(tmp_path, state_dir, monkeypatch):
    from meshlab import workspace
    from meshlab.course import load_course
    from meshlab.errors import MeshlabError

    copy = tmp_path / "course"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", ".meshlab"))
    monkeypatch.setenv("MESHLAB_STATE_DIR", str(state_dir))
    course = load_course(copy)
    with pytest.raises(MeshlabError) as raised:
        workspace.reset(course, course.find(1))  # no meshlab command ran before: no copy was kept
    assert "not a git clone" in raised.value.message and "fresh download" in raised.value.fix


def test_doctor_finds_envoy_and_reports_json(cli):
    result = cli("doctor", "--json")
    assert result.code == 0, result.output
    report = result.json()
    findings = {(f["group"], f["name"]): f for f in report["findings"]}
    envoy = findings[("core", "envoy")]
    assert envoy["status"] == "ok" and envoy["detail"].startswith("1.40.0 at ")
    assert ("ports", "127.0.0.1:10000") in findings
    assert findings[("tools", "fortio")]["status"] in ("ok", "absent")
    # This machine has every tool and feature the labs require; only a port that another
    # program holds (whatever else runs here) may keep a lab from being ready.
    for lab in report["labs"]:
        assert all(m["what"].startswith("127.0.0.1:") for m in lab["missing"]), lab
    if all(lab["ready"] for lab in report["labs"]):
        assert report["verdict"] == f"ready for labs 01-{report['labs'][-1]['number']:02d} on this machine"


def test_doctor_exits_2_without_envoy(cli):
    result = cli("doctor", "--json", env={"MESHLAB_ENVOY": "/nonexistent/envoy"})
    assert result.code == 2
    report = result.json()
    envoy = next(f for f in report["findings"] if f["name"] == "envoy")
    assert envoy["status"] == "missing" and envoy["fix"]
    assert not any(lab["ready"] for lab in report["labs"])
    assert report["verdict"].startswith("not ready for any lab")


@pytest.mark.xdist_group("host-ports")
@pytest.mark.skipif(not all(ports.is_free(p) for p in (8080, 9901, 10000)), reason="lab 01's ports are busy here")
def test_start_status_stop(meshlab):
    started = meshlab("start", "1")
    try:
        assert started.code == 0, started.output
        assert "curl -i http://127.0.0.1:10000/" in started.stdout
        # One column for the kinds, however long the names (lab 08's run to 19 characters).
        rows = [line for line in started.stdout.splitlines() if line.startswith(("  app ", "  sidecar "))]
        assert len(rows) == 2 and len({row.index("python" if "python" in row else "envoy") for row in rows}) == 1
        status = meshlab("status", "--json").json()
        assert status[0]["lab"] == "01-hello-mesh"
        assert all(s["running"] for s in status[0]["services"])
        assert meshlab("status", "1", "--json").json() == status  # the lab's own, as learners type it
        assert meshlab("status", "2", "--json").json() == []
        pids = [s["pid"] for s in status[0]["services"]]
        one = meshlab("stop", "1", "--service", "app")
        assert one.code == 0 and "Stopped app of lab 01" in one.stdout
        services = meshlab("status", "--json").json()[0]["services"]
        assert [s["name"] for s in services] == ["sidecar"]
        again = meshlab("start", "1")
        assert "restarted: app" in again.stdout
        pids += [s["pid"] for s in meshlab("status", "--json").json()[0]["services"]]
    finally:
        stopped = meshlab("stop", "1")
    assert stopped.code == 0 and "Stopped 01-hello-mesh" in stopped.stdout
    from meshlab.runtime.processes import alive
    assert not any(alive(pid) for pid in pids)
    assert meshlab("status", "--json").json() == []
    assert json.loads(meshlab("list", "--json").stdout)[0]["running"] is False


FRESH_SCRIPT = """
set -eu
m() { "$PYTHON" -m meshlab "$@"; }
trap 'm stop 1 > /dev/null' EXIT  # whatever fails, nothing outlives the test
m start 1 > /dev/null
m status --json > "$OUT/before.json"
m start 1 > "$OUT/again.txt"
m start 1 --fresh > "$OUT/fresh.txt"
m status --json > "$OUT/after.json"
"""


@pytest.mark.lab_runs
@pytest.mark.skipif(not isolation.available(), reason="needs a network namespace for lab 01's fixed ports")
def test_start_fresh_restarts_the_envoys_of_a_running_lab(state_dir, tmp_path):
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir), "PYTHON": sys.executable,
           "OUT": str(tmp_path), "COLUMNS": "200"}
    run = subprocess.run(isolation.wrap(["sh", "-c", FRESH_SCRIPT]), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "restarted: nothing (no change)" in (tmp_path / "again.txt").read_text()
    assert "restarted: sidecar (fresh counters)" in (tmp_path / "fresh.txt").read_text()

    def pids(name: str) -> dict[str, int]:
        [run_state] = json.loads((tmp_path / name).read_text())
        return {s["name"]: s["pid"] for s in run_state["services"]}

    before, after = pids("before.json"), pids("after.json")
    assert after["app"] == before["app"] and after["sidecar"] != before["sidecar"]


def test_ctrl_c_exits_130_and_does_not_claim_to_stop_a_lab_meshlab_start_runs(capsys):
    # `meshlab watch 7` on a lab run by `meshlab start 7`: Ctrl-C leaves that lab running.
    import click

    from meshlab.cli import main

    def interrupted():
        raise KeyboardInterrupt

    main.add_command(click.Command("interrupted-for-test", callback=interrupted))
    try:
        with pytest.raises(SystemExit) as exit_:
            main.main(["interrupted-for-test"], standalone_mode=False)
    finally:
        main.commands.pop("interrupted-for-test")
    assert exit_.value.code == 130
    said = capsys.readouterr().err
    assert "what this command started was stopped" in said and "meshlab stop" in said
