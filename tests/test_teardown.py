"""No process outlives its lab: after a check, a failed check, Ctrl-C, a killed CLI or a
killed checker, no Envoy or app of the run is left. Processes of a run are found by
their working directory, the graded lab folder, which is private to each test. Nor does
a key: a checker killed outright leaves no private key of its run behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import CAN_ISOLATE, ROOT

from meshlab.grading import eventually

pytestmark = pytest.mark.lab_runs


def processes_in(folder: Path) -> list[psutil.Process]:
    """Live processes whose working directory is FOLDER (psutil fills `.info` with
    their cmdline, read in the same pass: a process may exit right after)."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "status", "cmdline"]):
        if proc.info["cwd"] == str(folder) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def started():
    """CLIs a test started: their process groups are killed at the end, pass or fail."""
    clis: list[subprocess.Popen] = []
    yield clis
    for cli in clis:
        try:
            os.killpg(cli.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        cli.wait()


def start_check(folder: Path, state_dir: Path, started: list, number: int = 1) -> subprocess.Popen:
    args = [sys.executable, "-m", "meshlab", "check", str(number), "--path", str(folder), "--json"]
    if CAN_ISOLATE:
        args.append("--isolate")
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    # A session of its own, like a terminal's foreground job, so Ctrl-C can reach the group.
    cli = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True)
    started.append(cli)
    return cli


def lab_is_up(folder: Path, app: str = "meshlab.apps.hello") -> bool:
    names = " ".join(" ".join(p.info["cmdline"] or []) for p in processes_in(folder))
    return "envoy" in names and app in names


def checks_done(state_dir: Path) -> int:
    """How many checks the running checker has reported (the report the CLI follows)."""
    lines = [line for report in (state_dir / "reports").glob("*.jsonl") for line in report.read_text().splitlines()]
    return sum(1 for line in lines if '"event": "check"' in line)


@pytest.mark.parametrize("base", ["solution", "starter"])
def test_nothing_is_left_after_a_check(meshlab, lab_copy, base):
    folder = lab_copy(1, base=base)
    args = ["check", "1", "--path", str(folder)] + (["--isolate"] if CAN_ISOLATE else [])
    result = meshlab(*args)
    assert result.code == (0 if base == "solution" else 1)
    assert processes_in(folder) == []


def test_ctrl_c_stops_the_lab_and_exits_130(lab_copy, state_dir, started):
    folder = lab_copy(1)
    cli = start_check(folder, state_dir, started)
    assert eventually(lambda: lab_is_up(folder), 30), "the lab never came up"
    os.killpg(cli.pid, signal.SIGINT)
    assert cli.wait(timeout=30) == 130
    assert "interrupted; what this command started was stopped" in cli.stderr.read().decode()
    assert eventually(lambda: processes_in(folder) == [], 5), processes_in(folder)


# A learner who presses Ctrl-C expects the prompt back within about a second.
CTRL_C_BUDGET_S = 1.0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="lab 09 needs redis-server")
@pytest.mark.parametrize("after_checks", [1, 6], ids=["in-the-first-checks", "with-a-service-stopped"])
def test_ctrl_c_during_a_check_of_lab_09_returns_within_a_second_and_leaves_nothing(lab_copy, state_dir, started,
                                                                                   after_checks):
    # Lab 09's checks stop and start its services, and a checker's stack runs deep (grpc,
    # httpx): pytest formatting all of it, and a stopped service started again only to be
    # stopped, came between the Ctrl-C and the lab's stop. After six checks, the next
    # ones stop Redis or a replica of the service.
    folder = lab_copy(9)
    cli = start_check(folder, state_dir, started, number=9)
    assert eventually(lambda: checks_done(state_dir) >= after_checks, 60), f"{after_checks} checks never finished"
    pressed = time.monotonic()
    os.killpg(cli.pid, signal.SIGINT)
    code = cli.wait(timeout=30)
    took = time.monotonic() - pressed
    assert code == 130, cli.stderr.read().decode()
    assert took < CTRL_C_BUDGET_S, f"the command returned {took:.2f} s after Ctrl-C"
    assert processes_in(folder) == []
    runs = list((state_dir / "runs").iterdir())
    assert runs and not [path for run in runs for path in run.iterdir() if path.name in ("state.json", "state")]
    assert list((state_dir / "reports").iterdir()) == []  # nobody reads an interrupted run's report


def test_a_cli_killed_with_sigkill_leaves_nothing(lab_copy, state_dir, started):
    folder = lab_copy(1)
    cli = start_check(folder, state_dir, started)
    assert eventually(lambda: lab_is_up(folder), 30), "the lab never came up"
    cli.kill()  # the CLI alone, with no chance to clean up
    cli.wait()
    assert eventually(lambda: processes_in(folder) == [], 5), processes_in(folder)


def test_a_checker_killed_with_sigkill_leaves_nothing_and_is_exit_2(lab_copy, state_dir, started):
    folder = lab_copy(1)
    cli = start_check(folder, state_dir, started)
    assert eventually(lambda: lab_is_up(folder), 30), "the lab never came up"
    def is_pytest(child: psutil.Process) -> bool:
        try:
            return "pytest" in " ".join(child.cmdline())
        except psutil.Error:
            return False
    pytest_process = next(p for p in psutil.Process(cli.pid).children(recursive=True) if is_pytest(p))
    pytest_process.kill()
    assert cli.wait(timeout=30) == 2
    assert b"did not run to completion" in cli.stdout.read()
    assert eventually(lambda: processes_in(folder) == [], 5), processes_in(folder)


@pytest.mark.parametrize("number, slug", [
    (1, "01-hello-mesh"),
    # A lab with pods: its namespaces, cgroups and reaper are made before pytest loads too.
    pytest.param(7, "07-interception", marks=pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")),
])
def test_services_launched_before_pytest_are_stopped_when_no_check_runs(lab_copy, state_dir, number, slug):
    # The checker's process launches the lab's first services before it imports pytest
    # (meshlab.checker_process --lab); when no check takes them (here: every check
    # deselected), the process stops them itself on its way out.
    from meshlab.runtime.pods import NETNS_DIR, cgroup2_root, tag_for

    folder = lab_copy(number)
    checker = [sys.executable, "-m", "meshlab.checker_process", "--lab", slug,
               str(ROOT / "checker" / f"test_{slug.replace('-', '_')}.py"), "-q", "-p", "meshlab.pytest_plugin",
               "--rootdir", str(ROOT), "--meshlab-path", str(folder), "-k", "no_such_check"]
    argv = ["unshare", "--net", "--mount", "--", *checker[:3], "--isolated", *checker[3:]] if CAN_ISOLATE else checker
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir),
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stdout + proc.stderr  # pytest: no test ran
    runs = list((state_dir / "runs").iterdir())
    assert runs, "nothing was launched early"
    # Stopped, not merely killed with the process: the run's record is gone too.
    assert not any((run / "state.json").exists() for run in runs)
    assert eventually(lambda: processes_in(folder) == [], 5), processes_in(folder)
    tag = tag_for(runs[0])
    root = cgroup2_root()
    assert not list(NETNS_DIR.glob(f"ml{tag}-*")) if NETNS_DIR.is_dir() else True
    assert root is None or not (root / f"meshlab-{tag}").exists()


def private_keys_in(*folders: Path) -> list[Path]:
    """Files under FOLDERS that hold a PEM private key."""
    found = []
    for folder in folders:
        # os.walk, not rglob: a folder removed while we look is skipped, not an error
        for directory, _, files in os.walk(folder):
            for name in files:
                path = Path(directory) / name
                try:
                    if b"PRIVATE KEY" in path.read_bytes():
                        found.append(path)
                except OSError:
                    pass  # removed while we looked
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")
def test_a_checker_killed_with_sigkill_leaves_no_private_key(lab_copy, state_dir, started):
    # Lab 11's control plane keeps its CA's key in the run's state folder. The run's
    # owner killed outright cannot remove it; its reaper (started with the pods, waiting
    # for the owner's death) must, not the next `meshlab` command.
    from meshlab.runtime.pods import NETNS_DIR, tag_for

    folder = lab_copy(11)
    cli = start_check(folder, state_dir, started, number=11)
    assert eventually(lambda: private_keys_in(state_dir), 60), "the CA's key was never written"
    run_dir = private_keys_in(state_dir)[0].relative_to(state_dir / "runs").parts[0]
    run_dir = state_dir / "runs" / run_dir
    owner = json.loads((run_dir / "state.json").read_text())["owner_pid"]  # what the reaper waits on
    os.kill(owner, signal.SIGKILL)
    assert cli.wait(timeout=30) == 2
    assert eventually(lambda: private_keys_in(state_dir, folder) == [], 5), private_keys_in(state_dir, folder)
    assert eventually(lambda: not list(NETNS_DIR.glob(f"ml{tag_for(run_dir)}-*")), 5)
    assert eventually(lambda: processes_in(folder) == [], 5), processes_in(folder)


@pytest.mark.parametrize("killed", ["checker", "cli"])
def test_the_checks_own_keys_go_with_a_check_killed_with_sigkill(lab_copy, state_dir, started, killed):
    # Lab 04's checks make keys of their own (test clients, one from a foreign CA) in
    # pytest's temporary folder: meshlab gives the checker one under its state folder,
    # removed when the check ends, even when the checker (then the CLI removes it) or
    # the CLI (then the checker, sent SIGTERM) was killed outright.
    folder = lab_copy(4)
    cli = start_check(folder, state_dir, started, number=4)
    reports = state_dir / "reports"
    assert eventually(lambda: private_keys_in(reports), 30, interval=0.01), "the checks wrote no key there"
    if killed == "checker":
        checker, = psutil.Process(cli.pid).children()  # the CLI's one child (unshare has exec'd it)
        checker.kill()
        assert cli.wait(timeout=30) == 2
    else:
        cli.kill()
        cli.wait()
    assert eventually(lambda: private_keys_in(state_dir) == [], 5), private_keys_in(state_dir)
    assert eventually(lambda: not list(reports.glob("*.tmp")), 5)
