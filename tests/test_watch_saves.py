"""How `meshlab watch` hears saves: from the kernel's notifications, one save per burst
of writes (editors write in several steps), whatever way the editor saves, and nothing
for the files it does not watch."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from conftest import ROOT
from meshlab.watch import _Saves

QUIET = 0.3   # generous: the steps below are 20 ms apart, even on a busy machine


def saves_within(saves: _Saves, seconds: float, then: float = 1.0) -> int:
    """How many saves arrive: the first within SECONDS, more within THEN after it."""
    count, wait = 0, seconds
    while True:
        try:
            saves.saved.get(timeout=wait)
        except queue.Empty:
            return count
        count, wait = count + 1, then


@pytest.fixture
def watched(tmp_path: Path):
    config = tmp_path / "envoy.yaml"
    config.write_text("admin: {}\n")
    nested = tmp_path / "src" / "lib.rs"
    nested.parent.mkdir()
    nested.write_text("// starter\n")
    with _Saves([config, nested], QUIET) as saves:
        time.sleep(0.2)  # the watcher is up
        yield saves, config, nested


def test_a_save_by_rename_is_heard_once(watched):
    saves, config, _ = watched
    draft = config.with_name("envoy.yaml.draft")
    draft.write_text("admin: {}\n# saved\n")
    draft.replace(config)
    assert saves_within(saves, 3) == 1


def test_a_save_in_several_steps_is_one_save(watched):
    saves, config, _ = watched
    with open(config, "w") as handle:  # truncate, then write in pieces, as some editors do
        for piece in ("admin:", " {}", "\n"):
            handle.write(piece)
            handle.flush()
            time.sleep(0.02)
    assert saves_within(saves, 3) == 1


def test_a_file_in_a_subfolder_is_watched(watched):
    saves, _, nested = watched
    nested.write_text("// solved\n")
    assert saves_within(saves, 3) == 1


def test_other_files_in_the_folder_are_not_saves(watched):
    saves, config, _ = watched
    (config.parent / "notes.txt").write_text("not a lab file\n")
    (config.parent / "envoy.yaml.swp").write_text("an editor's swap file\n")
    assert saves_within(saves, 1.5) == 0


def test_the_checker_skips_a_preflight_the_watcher_just_passed_and_only_that(lab_copy, course, monkeypatch):
    from meshlab import preflight

    lab = course.find(1)
    folder = lab_copy(1, base="solution")
    passed = preflight.digest(lab, folder)
    validations = []
    monkeypatch.setattr(preflight, "check_files", lambda *args, **kwargs: validations.append(args))
    preflight.prepare_and_check(lab, folder, passed=passed)
    assert validations == []  # the files are as they passed: no second `envoy --mode validate`
    config = folder / "envoy.yaml"
    config.write_text(config.read_text() + "# saved again\n")
    assert preflight.digest(lab, folder) != passed
    preflight.prepare_and_check(lab, folder, passed=passed)
    preflight.prepare_and_check(lab, folder)
    assert len(validations) == 2  # a file saved since, or no digest at all: preflight runs


def test_a_checker_started_ahead_and_called_off_leaves_nothing(state_dir, monkeypatch):
    from meshlab.checking import Checker
    from meshlab.course import load_course

    monkeypatch.setenv("MESHLAB_STATE_DIR", str(state_dir))
    course = load_course(ROOT)
    lab = course.find(1)
    checker = Checker(course, lab, lab.workspace, ahead=True)
    time.sleep(0.5)
    assert checker.child.poll() is None, "it waits for go, running nothing"
    checker.cancel()
    assert checker.child.poll() is not None
    assert checker.go.parent == state_dir / "reports"
    assert list(checker.go.parent.iterdir()) == []  # its FIFO, report and output are gone
