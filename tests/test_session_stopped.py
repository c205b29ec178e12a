"""`lab.stopped(service)`: a service stopped for a block comes back, at once or, with
`restart=False`, only when something may use it again: before the next check, and at
the end of a run the checker did not start; a run it started ends without waiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from meshlab.session import LabSession


class Runtime:
    """What a session asks of its runtime, in order."""

    def __init__(self):
        self.calls: list[str] = []

    def stop(self, name: str) -> None:
        self.calls.append(f"stop {name}")

    def start(self, name: str) -> None:
        self.calls.append(f"start {name}")

    def stop_all(self) -> None:
        self.calls.append("stop_all")


@pytest.fixture
def runtime():
    return Runtime()


def session(course, tmp_path, runtime, *, owned: bool) -> LabSession:
    return LabSession(course.find(9), tmp_path, runtime=runtime, owned=owned)


def test_a_stopped_service_comes_back_at_the_end_of_the_block(course, tmp_path, runtime):
    lab = session(course, tmp_path, runtime, owned=True)
    with lab.stopped("redis"):
        assert runtime.calls == ["stop redis"]
    assert runtime.calls == ["stop redis", "start redis"]
    lab.close()
    assert runtime.calls[-1] == "stop_all"


def test_one_left_stopped_comes_back_at_restore_or_before_the_next_stop(course, tmp_path, runtime):
    lab = session(course, tmp_path, runtime, owned=True)
    with lab.stopped("ratelimit-a", restart=False):
        pass
    assert runtime.calls == ["stop ratelimit-a"]
    with lab.stopped("ratelimit-b"):  # never two stopped where the check asked for one
        assert runtime.calls == ["stop ratelimit-a", "start ratelimit-a", "stop ratelimit-b"]
    with lab.stopped("redis", restart=False):
        pass
    lab.restore()
    lab.restore()
    assert runtime.calls[-2:] == ["stop redis", "start redis"]


@pytest.mark.parametrize("owned, calls", [
    (True, ["stop ratelimit-b", "stop_all"]),               # the checker's run ends without starting it again
    (False, ["stop ratelimit-b", "start ratelimit-b"]),     # the learner's run is left whole
], ids=["run-the-checker-started", "run-the-learner-started"])
def test_a_service_left_stopped_at_the_end_of_a_run(course, tmp_path, runtime, owned, calls):
    lab = session(course, tmp_path, runtime, owned=owned)
    with lab.stopped("ratelimit-b", restart=False):
        pass
    lab.close()
    assert runtime.calls == calls


@pytest.mark.parametrize("owned, calls", [
    (True, ["stop redis", "stop_all"]),                     # Ctrl-C waits for no start the stop undoes
    (False, ["stop redis", "start redis"]),                 # the learner's run is left whole
], ids=["run-the-checker-started", "run-the-learner-started"])
def test_a_ctrl_c_in_the_block_starts_nothing_before_the_run_ends(course, tmp_path, runtime, owned, calls):
    lab = session(course, tmp_path, runtime, owned=owned)
    with pytest.raises(KeyboardInterrupt):
        with lab.stopped("redis"):
            raise KeyboardInterrupt
    lab.close()
    assert runtime.calls == calls


def test_a_check_that_fails_in_the_block_gets_the_service_back_at_once(course, tmp_path, runtime):
    lab = session(course, tmp_path, runtime, owned=True)
    with pytest.raises(ValueError):
        with lab.stopped("redis"):
            raise ValueError("a check's own error, which it may catch and go on")
    assert runtime.calls == ["stop redis", "start redis"]


def test_the_checker_restores_the_lab_before_the_next_check(tmp_path):
    # The meshlab plugin with a `lab` fixture of this test's own: the second check must
    # find the service the first one left stopped started again, before its fixtures.
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from types import SimpleNamespace

        import pytest
        from meshlab.course import load_course
        from meshlab.session import LabSession

        CALLS = []

        class Runtime:
            state = SimpleNamespace(services={})  # nothing has raised
            def stop(self, name): CALLS.append(f"stop {name}")
            def start(self, name): CALLS.append(f"start {name}")
            def stop_all(self): CALLS.append("stop_all")

        @pytest.fixture(scope="session")
        def lab():
            session = LabSession(load_course().find(9), ".", runtime=Runtime(), owned=True)
            yield session
            session.close()

        @pytest.fixture
        def calls_at_setup(lab):
            return list(CALLS)
    """))
    (tmp_path / "test_two_checks.py").write_text(textwrap.dedent("""
        from conftest import CALLS

        def test_first(lab):
            with lab.stopped("ratelimit-b", restart=False):
                pass
            assert CALLS == ["stop ratelimit-b"]

        def test_second(lab, calls_at_setup):
            assert calls_at_setup == ["stop ratelimit-b", "start ratelimit-b"]
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout, run.stdout
