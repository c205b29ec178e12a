"""BorrowedFile: a check may rewrite a learner's file, and the learner gets it back
exactly (bytes, mode, modification time), after an error, SIGTERM, or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from meshlab.grading.borrowed import BorrowedFile


@pytest.fixture
def learner_file(tmp_path: Path) -> Path:
    path = tmp_path / "lab" / "intent.yaml"
    path.parent.mkdir()
    path.write_text("# mine\nroutes: []\n")
    path.chmod(0o640)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    return path


def fingerprint(path: Path) -> tuple:
    info = path.stat()
    return path.read_bytes(), info.st_mode & 0o7777, info.st_mtime_ns


def test_given_back_exactly(learner_file: Path, tmp_path: Path):
    before = fingerprint(learner_file)
    with BorrowedFile(learner_file, keep=tmp_path / "run") as borrowed:
        borrowed.write("checker: true\n")
        assert borrowed.read() == "checker: true\n"
        assert learner_file.stat().st_mode & 0o7777 == 0o640  # the mode survives a replace
    assert fingerprint(learner_file) == before
    assert list((tmp_path / "run").iterdir()) == []  # the copy is gone


def test_given_back_after_an_error(learner_file: Path, tmp_path: Path):
    before = fingerprint(learner_file)
    with pytest.raises(RuntimeError):
        with BorrowedFile(learner_file, keep=tmp_path / "run") as borrowed:
            borrowed.write("half done\n")
            raise RuntimeError("a check crashed")
    assert fingerprint(learner_file) == before


def test_a_file_that_did_not_exist_is_removed_again(tmp_path: Path):
    path = tmp_path / "absent.yaml"
    with BorrowedFile(path, keep=tmp_path / "run") as borrowed:
        borrowed.write("x: 1\n")
        assert path.exists()
    assert not path.exists()


def test_a_killed_run_is_repaired_by_the_next(learner_file: Path, tmp_path: Path):
    before = fingerprint(learner_file)
    first = BorrowedFile(learner_file, keep=tmp_path / "run").__enter__()
    first.write("left behind by a killed checker\n")
    # No __exit__: the process "died". The next run puts the learner's file back first.
    with BorrowedFile(learner_file, keep=tmp_path / "run") as second:
        assert fingerprint(learner_file) == before
        second.write("the next run's own change\n")
    assert fingerprint(learner_file) == before


def test_sigterm_gives_the_file_back(learner_file: Path, tmp_path: Path):
    before = fingerprint(learner_file)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from meshlab.grading.borrowed import BorrowedFile\n"
        f"with BorrowedFile(Path({str(learner_file)!r}), keep=Path({str(tmp_path / 'run')!r})) as b:\n"
        "    b.write('changed\\n')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    assert learner_file.read_text() == "changed\n"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=10)
    assert fingerprint(learner_file) == before


def test_writes_are_atomic(learner_file: Path, tmp_path: Path):
    """A reader polling the file (as a control plane does) never sees half of it."""
    big, small = "x: " + "y" * 500_000 + "\n", "short: 1\n"
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(learner_file.read_text())

    with BorrowedFile(learner_file, keep=tmp_path / "run") as borrowed:
        borrowed.write(small)
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for text in (big, small) * 50:
                borrowed.write(text)
        finally:
            stop.set()
            thread.join()
    assert seen <= {big, small} and big in seen
    assert sorted(p.name for p in learner_file.parent.iterdir()) == ["intent.yaml"]
