"""`meshlab stop` stops what the learner started (`meshlab start`, a `meshlab watch`)
and whatever a dead owner left behind, and leaves to a live check the run it started
for itself: stopped under its checks, that check would fail with confusing errors."""

from __future__ import annotations

import json
import os
import signal

from meshlab.grading import eventually
from meshlab.runtime import LocalRuntime
from meshlab.runtime import processes
from meshlab.runtime.processes import alive

from test_runtime import demo, pids, start_owner  # noqa: F401 (demo: the fixture, a one-lab course)

GRADED = "01-demo@0123abcd"  # the run folder of a graded copy (`check --path` or `--solution`)


def stop(cli, demo, *args: str):
    """`meshlab stop ARGS` on the demo course, in this process."""
    return cli("stop", *args, env={"MESHLAB_ROOT": str(demo["root"]),
                                   "MESHLAB_STATE_DIR": str(demo["root"] / ".meshlab")})


def run_in_state(demo, name: str):
    demo["run"] = demo["root"] / ".meshlab" / "runs" / name  # where the course's commands look
    return demo["run"]


def test_stop_leaves_the_run_of_a_live_check_to_it_and_says_so(demo, cli):
    run_in_state(demo, GRADED)
    check, started = start_owner(demo, "owned")
    for args in (("1",), ()):  # `meshlab stop 1`, and `meshlab stop` (every lab)
        said = stop(cli, demo, *args)
        assert said.code == 0, said.output
        assert said.stdout.splitlines() == [f"Left {GRADED} running: a `meshlab check` grades it "
                                            f"(pid {check.pid}) and stops it when it ends."], said.output
        assert pids(demo["run"]) == started and all(alive(pid) for pid in started.values())
    # The check ends: its run goes with it, and stop has nothing left to say about it.
    check.kill()
    check.wait()
    assert eventually(lambda: not any(alive(pid) for pid in started.values()), 10)
    assert "Lab 1 was not running." in stop(cli, demo, "1").stdout


def test_stop_service_leaves_a_service_of_a_live_check_to_it(demo, cli):
    run_in_state(demo, "01-demo")  # a check of the workspace, with no `meshlab start` before it
    check, started = start_owner(demo, "owned")
    said = stop(cli, demo, "1", "--service", "app")
    assert said.code == 0 and said.stdout.startswith(f"Left app of lab 01 running: a `meshlab check` grades it "
                                                     f"(pid {check.pid})"), said.output
    assert alive(started["app"]) and pids(demo["run"]) == started


def test_stop_stops_a_watched_run_whose_watch_still_runs(demo, cli):
    # The learner's `meshlab watch 1`, left in another terminal: that lab is theirs to stop.
    run_in_state(demo, "01-demo")
    _, watched = start_owner(demo, "watch")
    said = stop(cli, demo, "1")
    assert said.code == 0, said.output
    assert said.stdout.splitlines() == ["Stopped 01-demo: proxy, app"], said.output
    assert eventually(lambda: not any(alive(pid) for pid in watched.values()), 10)


def test_stop_stops_a_run_whose_owner_died(demo, cli):
    # A check killed outright: its services die with it, but one another process
    # restarted meanwhile (as a check restarts the app) cannot, and outlives it.
    run_in_state(demo, GRADED)
    check, started = start_owner(demo, "owned")
    LocalRuntime.attach(demo["lab"], demo["run"]).restart("app")
    survivor = pids(demo["run"])["app"]
    os.kill(check.pid, signal.SIGKILL)
    check.wait()
    assert eventually(lambda: not alive(started["proxy"]), 10)
    assert alive(survivor)
    said = stop(cli, demo, "1")
    assert said.code == 0, said.output
    assert f"stopped the leftovers of {GRADED}, whose owner had died" in said.stderr
    assert "Left" not in said.stdout
    assert eventually(lambda: not alive(survivor), 10)
    assert not (demo["run"] / "state.json").exists()


def test_a_run_whose_owner_died_is_not_left_to_it(demo):
    # Between the cleanup every command does first and stop's own look, an owner may die:
    # stop must still stop its run, not name a dead check.
    from meshlab.cli.labs import _live_owner

    run_in_state(demo, GRADED)
    check, _ = start_owner(demo, "owned")
    assert _live_owner(demo["run"]) is not None
    check.kill()
    check.wait()
    assert _live_owner(demo["run"]) is None


def test_stop_leaves_a_docker_run_of_a_live_check_alone(demo, cli):
    # A docker run's marker names its owner as a local run's state does; this process
    # plays the live check, so no container engine is asked anything.
    folder = run_in_state(demo, GRADED)
    folder.mkdir(parents=True)
    me = os.getpid()
    (folder / "docker.json").write_text(json.dumps({
        "run": "0123456789", "lab": "01-demo", "lab_dir": str(demo["dir"]), "owner_pid": me,
        "owner_started": processes.create_time(me), "owned_by": "check"}))
    said = stop(cli, demo, "1")
    assert said.code == 0, said.output
    assert f"Left {GRADED} running: a `meshlab check` grades it (pid {me})" in said.stdout
    assert (folder / "docker.json").is_file()


def test_status_names_the_check_that_keeps_a_run(demo, cli):
    run_in_state(demo, GRADED)
    check, _ = start_owner(demo, "owned")
    env = {"MESHLAB_ROOT": str(demo["root"]), "MESHLAB_STATE_DIR": str(demo["root"] / ".meshlab")}
    [run] = cli("status", "--json", env=env).json()
    assert run["left_to"] == {"pid": check.pid, "owned_by": "check"}
    assert f"a `meshlab check` grades it (pid {check.pid})" in cli("status", env=env).stdout
