"""A Ctrl-C in a checker: pytest shows one line of it (where it struck) unless
--full-trace is given, so the plugin keeps only that part of the traceback before
pytest formats it; formatting all of it read and parsed the source of every frame
while the lab was still running (half a second with a checker's stack)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEPTH = 30


@pytest.fixture
def interrupted(tmp_path: Path):
    """Run pytest (with the meshlab plugin, as every run has it) on a check interrupted
    DEPTH calls deep while it handled an error; the traceback pytest then formats."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_keyboard_interrupt(excinfo):
            with open("formatted.txt", "w") as out:
                out.write(f"{len(excinfo.traceback)} {excinfo.value.__suppress_context__}")
    """))
    (tmp_path / "test_deep.py").write_text(textwrap.dedent(f"""
        def down(depth):
            if depth:
                return down(depth - 1)
            try:
                raise ValueError("an error being handled")
            except ValueError:
                raise KeyboardInterrupt  # line 8

        def test_interrupted():
            down({DEPTH})
    """))

    def run(*options: str) -> tuple[subprocess.CompletedProcess, int, bool]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options, str(tmp_path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        entries, suppressed = (tmp_path / "formatted.txt").read_text().split()
        return proc, int(entries), suppressed == "True"

    return run


def test_only_the_frame_shown_is_formatted(interrupted):
    proc, entries, suppressed = interrupted()
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pytest: interrupted
    assert entries == 1 and suppressed
    assert "test_deep.py:8: KeyboardInterrupt" in proc.stdout, proc.stdout  # the line pytest always showed


def test_full_trace_keeps_the_whole_traceback(interrupted):
    proc, entries, suppressed = interrupted("--full-trace")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert entries > DEPTH and not suppressed
    assert "an error being handled" in proc.stdout
