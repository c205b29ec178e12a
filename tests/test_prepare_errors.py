"""A prepare step that fails on a learner's file (a compiler naming FILE:LINE) is the
learner's mistake: an InputError at that line with the tool's message, exit 2; any
other failure stays a ServiceFailed with the output's tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.course import load_lab
from meshlab.errors import InputError, ServiceFailed
from meshlab.runtime.local import run_prepare_steps


def make_lab(tmp_path: Path, script: str) -> tuple:
    lab_dir = tmp_path / "labs" / "09-prep"
    lab_dir.mkdir(parents=True)
    (lab_dir / "build.sh").write_text(script)
    (lab_dir / "filter.rs").write_text("fn main() {}\n")
    (lab_dir / "lab.yaml").write_text(
        "title: prep\nedit: [filter.rs]\nprepare:\n  - [sh, build.sh]\n"
        "services:\n  app:\n    python: meshlab.apps.hello\n    args: [--port, '1']\n")
    return load_lab(tmp_path, "09-prep"), lab_dir


@pytest.mark.parametrize("message", [
    "filter.rs:12:5: error[E0425]: cannot find value `x` in this scope",
    "error[E0425]: cannot find value `x` in this scope\n  --> filter.rs:12:5\n   |",
    "error[E0425]: in /some/where/filter.rs:12:5",
])
def test_a_compile_error_points_at_the_learners_line(tmp_path: Path, message: str):
    lab, lab_dir = make_lab(tmp_path, f"cat >&2 <<'EOF'\n{message}\nEOF\nexit 1\n")
    with pytest.raises(InputError) as caught:
        run_prepare_steps(lab, lab_dir)
    error = caught.value
    assert error.exit_code == 2
    assert (error.where.file, error.where.line, error.where.column) == (lab_dir / "filter.rs", 12, 5)
    assert "E0425" in error.details and "filter.rs" in error.message


def test_other_failures_stay_a_failed_step(tmp_path: Path):
    lab, lab_dir = make_lab(tmp_path, "echo 'no rustc with the wasm32 target' >&2; echo 'other.rs:3:1' >&2; exit 1\n")
    with pytest.raises(ServiceFailed) as caught:
        run_prepare_steps(lab, lab_dir)
    assert "no rustc" in caught.value.details and caught.value.where is None
