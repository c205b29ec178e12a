"""Shared fixtures for meshlab's own tests.

Lab tests grade variants of a lab through the real CLI (`meshlab check --path DIR
--json`), against real Envoy. Where the machine allows network namespaces, every
graded run gets its own (`--isolate`), so tests run in parallel (`pytest -n 2`) and
never meet whatever holds ports 10000/9901/8080 on the host. Tests that must use the
host's real ports carry `@pytest.mark.xdist_group("host-ports")` so they run one at a
time on one worker (`--dist loadgroup`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Wide output for every CLI run, in-process ones included: rich reads COLUMNS when its
# consoles are made, at the first import of meshlab.ui.
os.environ["COLUMNS"] = "200"

from meshlab import isolation, workspace  # noqa: E402
from meshlab.course import Course, Lab, load_course  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAN_ISOLATE = isolation.available()
FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Without namespaces, every test that runs a lab competes for the same ports.
    if not CAN_ISOLATE:
        for item in items:
            if item.get_closest_marker("lab_runs"):
                item.add_marker(pytest.mark.xdist_group("host-ports"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_runs: the test starts a lab's processes (ports)")


@dataclass
class Run:
    """The outcome of a `meshlab` command."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course(ROOT)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private .meshlab/ for one test (runs, progress, reports)."""
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def meshlab(state_dir: Path):
    """Run the real CLI: `meshlab("check", "1", "--json")` -> Run."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = ROOT) -> Run:
        environment = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir),
                       "COLUMNS": "200", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "meshlab", *args], cwd=cwd, env=environment,
                              capture_output=True, text=True, timeout=timeout)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def cli(state_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in this process, through click's runner: `cli("list", "--json")` -> Run.
    For commands that start no lab: no interpreter start-up, so they cost milliseconds.
    An exception that is not an exit is a traceback the learner would see: it fails."""
    from click.testing import CliRunner

    from meshlab.cli import main

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, input: str | None = None) -> Run:
        monkeypatch.chdir(cwd)
        environment = {"MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir), "COLUMNS": "200",
                       **(env or {})}
        result = CliRunner().invoke(main, list(args), prog_name="meshlab", env=environment, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def lab_copy(tmp_path: Path, course: Course):
    """A copy of a lab to grade: `lab_copy(1, base="solution", files={"envoy.yaml": text})`.
    BASE is "starter" (as committed) or "solution" (starter with the solution laid over);
    FILES replace or add files in the copy."""

    def make(number: int, *, base: str = "solution", files: dict[str, str] | None = None,
             name: str = "lab") -> Path:
        lab: Lab = course.find(number)
        dest = tmp_path / name
        starter = workspace.pristine_starter(course, lab, tmp_path / f"{name}-starter")
        if base == "solution":
            workspace.solution_tree(course, lab, dest, starter=starter)
        else:
            shutil.copytree(starter, dest)
        for relative, text in (files or {}).items():
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            (dest / relative).write_text(text)
        return dest

    return make


@pytest.fixture
def grade(meshlab, lab_copy):
    """Grade a variant of a lab through the CLI; returns (exit code, results by check id).

        code, checks = grade(1, files={"envoy.yaml": WRONG})
        assert checks["test_injected_header"]["status"] == "fail"
    """

    def run(number: int, *, base: str = "solution", files: dict[str, str] | None = None,
            path: Path | None = None) -> tuple[int, dict[str, dict], dict]:
        folder = path or lab_copy(number, base=base, files=files)
        args = ["check", str(number), "--path", str(folder), "--json"]
        if CAN_ISOLATE:
            args.append("--isolate")
        result = meshlab(*args)
        assert result.code in (0, 1, 2), result.output
        data = result.json()
        return result.code, {c["id"]: c for c in data["checks"]}, data

    return run
