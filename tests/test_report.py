"""`meshlab report`: a class gradebook from collected `meshlab check --json` results.

The results are made by the same code `meshlab check --json` uses (LabResult.to_json),
and one is produced by a real graded run; the gradebook is read back cell by cell from
each of its three forms (HTML, CSV, JSON)."""

from __future__ import annotations

import csv
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from meshlab.checking import RESULT_SCHEMA_VERSION, CheckResult, LabResult, default_learner


def result(learner: str | None, number: int, statuses: dict[str, str], finished_at: str | None,
           *, version: int = RESULT_SCHEMA_VERSION) -> dict:
    slug = {1: "01-hello-mesh", 2: "02-canary", 3: "03-resilience"}[number]
    checks = [CheckResult(id=f"test_{title.lower().replace(' ', '_')}", title=title, status=status)
              for title, status in statuses.items()]
    overall = "pass" if all(s == "pass" for s in statuses.values()) else "fail"
    data = LabResult(lab=slug, number=number, title=slug[3:].replace("-", " ").title(), path="/x", status=overall,
                     checks=checks, learner=learner, finished_at=finished_at).to_json()
    if version == 1:  # what meshlab wrote before results named their learner
        del data["learner"], data["finished_at"]
        data["version"] = 1
    return data


def write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def collected(tmp_path: Path) -> Path:
    """A folder as an instructor collects it: several runs per learner, a copy, junk."""
    root = tmp_path / "results"
    # alice: lab 1 failed then passed; lab 2 failing on one check.
    write(root, "alice/01-a.json", result("alice", 1, {"Body": "pass", "Header": "fail"}, "2026-03-02T09:10:00+00:00"))
    write(root, "alice/01-b.json", result("alice", 1, {"Body": "pass", "Header": "pass"}, "2026-03-02T09:20:00+00:00"))
    write(root, "alice/02.json", result("alice", 2, {"Split": "fail", "Header route": "pass", "Mirror": "error"},
                                        "2026-03-02T10:30:00+00:00"))
    # The same file collected twice is one attempt.
    write(root, "copies/alice-02.json", result("alice", 2, {"Split": "fail", "Header route": "pass",
                                                            "Mirror": "error"}, "2026-03-02T10:30:00+00:00"))
    # bob: passed lab 2, then broke it (the latest run decides, "passed before" is kept).
    write(root, "bob/02-1.json", result("bob", 2, {"Split": "pass", "Header route": "pass", "Mirror": "pass"},
                                        "2026-03-02T10:00:00+00:00"))
    write(root, "bob/02-2.json", result("bob", 2, {"Split": "fail", "Header route": "pass", "Mirror": "pass"},
                                        "2026-03-02T11:00:00+00:00"))
    # A format-1 result has no learner.
    write(root, "old.json", result(None, 3, {"Breaker": "pass"}, None, version=1))
    # Not results.
    write(root, "broken.json", '{"version": 2, "lab": "01-hello')
    write(root, "package.json", {"name": "left-pad", "version": "1.3.0"})
    write(root, "future.json", {**result("carol", 1, {"Body": "pass"}, "2026-03-02T09:00:00+00:00"), "version": 99})
    write(root, "damaged.json", {**result("dave", 1, {"Body": "pass"}, "2026-03-02T09:00:00+00:00"), "status": "ok"})
    write(root, "list.json", [1, 2, 3])
    (root / "binary.json").write_bytes(b"\xff\xfe\x00")
    write(root, "notes.txt", "not json, not even looked at")
    return root


SKIPPED = {"broken.json": "not JSON", "package.json": "not a `meshlab check --json` result",
           "future.json": "version 99", "damaged.json": "unknown status 'ok'",
           "list.json": "not a `meshlab check --json` result", "binary.json": "not text"}


class TableReader(HTMLParser):
    """The gradebook's table as rows of cell texts and cell classes."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self._cell: list[str] | None = None
        self._class = ""

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self._cell, self._class = [], dict(attrs).get("class", "")
        elif tag in ("li", "br", "div") and self._cell is not None:
            self._cell.append(" | ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append((" ".join("".join(self._cell).split()), self._class))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_gradebook_cell_by_cell(cli, collected, tmp_path):
    out = tmp_path / "book"
    run = cli("report", str(collected), "-o", str(out))
    assert run.code == 0, run.output
    for name, reason in SKIPPED.items():
        assert f"skipped {collected / name}" in run.stderr.replace("\n", " ") or name in run.stderr
        assert reason in " ".join(run.stderr.split()), (name, run.stderr)
    assert "Traceback" not in run.output and "notes.txt" not in run.output

    # CSV: one row per learner and lab.
    rows = {(r["learner"], r["lab"]): r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert set(rows) == {("alice", "01-hello-mesh"), ("alice", "02-canary"), ("bob", "02-canary"),
                         ("(unnamed)", "03-resilience")}
    assert rows["alice", "01-hello-mesh"] | {} == {
        "learner": "alice", "lab": "01-hello-mesh", "number": "1", "title": "Hello Mesh", "status": "pass",
        "passed": "yes", "ever_passed": "yes", "checks_passed": "2", "checks_total": "2", "failing": "",
        "attempts": "2", "last": "2026-03-02T09:20:00+00:00"}
    assert rows["alice", "02-canary"] == {
        "learner": "alice", "lab": "02-canary", "number": "2", "title": "Canary", "status": "fail",
        "passed": "no", "ever_passed": "no", "checks_passed": "1", "checks_total": "3", "failing": "Split; Mirror",
        "attempts": "1", "last": "2026-03-02T10:30:00+00:00"}
    assert rows["bob", "02-canary"] == {
        "learner": "bob", "lab": "02-canary", "number": "2", "title": "Canary", "status": "fail",
        "passed": "no", "ever_passed": "yes", "checks_passed": "2", "checks_total": "3", "failing": "Split",
        "attempts": "2", "last": "2026-03-02T11:00:00+00:00"}
    assert rows["(unnamed)", "03-resilience"] == {
        "learner": "(unnamed)", "lab": "03-resilience", "number": "3", "title": "Resilience", "status": "pass",
        "passed": "yes", "ever_passed": "yes", "checks_passed": "1", "checks_total": "1", "failing": "",
        "attempts": "1", "last": ""}
    assert list(rows) == [("alice", "01-hello-mesh"), ("alice", "02-canary"), ("bob", "02-canary"),
                          ("(unnamed)", "03-resilience")]

    # HTML: learners down, labs across, one cell each.
    table = TableReader()
    table.feed((out / "gradebook.html").read_text())
    header, *body = table.rows
    assert [text for text, _ in header] == ["Learner", "Lab 01 | Hello Mesh", "Lab 02 | Canary", "Lab 03 | Resilience"]
    grid = {row[0][0]: row[1:] for row in body}
    assert list(grid) == ["alice", "bob", "(unnamed)"]
    assert grid["alice"] == [("✔ passed 2/2 | 2 attempts, last 2026-03-02T09:20:00+00:00", "pass"),
                             ("✘ failing 1/3 | Split | Mirror | 1 attempt, last 2026-03-02T10:30:00+00:00", "fail"),
                             ("not attempted", "none")]
    assert grid["bob"] == [("not attempted", "none"),
                           ("✘ failing 2/3 | Split | 2 attempts, last 2026-03-02T11:00:00+00:00, passed before", "fail"),
                           ("not attempted", "none")]
    assert grid["(unnamed)"] == [("not attempted", "none"), ("not attempted", "none"), ("✔ passed 1/1 | 1 attempt", "pass")]
    page = (out / "gradebook.html").read_text()
    for name in SKIPPED:
        assert name in page


def test_the_gradebook_as_json(cli, collected, tmp_path):
    run = cli("report", str(collected / "alice"), str(collected / "bob" / "02-2.json"), "-o", str(tmp_path / "b"),
              "--json")
    assert run.code == 0, run.output
    book = run.json()
    assert book["version"] == 1 and book["runs"] == 4 and book["skipped"] == []
    assert book["learners"] == ["alice", "bob"]
    assert [lab["lab"] for lab in book["labs"]] == ["01-hello-mesh", "02-canary"]
    cells = {(c["learner"], c["lab"]): c for c in book["cells"]}
    assert cells["alice", "01-hello-mesh"]["attempts"] == 2 and cells["alice", "01-hello-mesh"]["passed"] is True
    assert cells["alice", "02-canary"]["failing"] == ["Split", "Mirror"]
    # Given one file of bob's, bob has one attempt that never passed.
    assert cells["bob", "02-canary"] | {} == {
        "learner": "bob", "lab": "02-canary", "number": 2, "title": "Canary", "status": "fail", "passed": False,
        "ever_passed": False, "checks_passed": 2, "checks_total": 3, "failing": ["Split"], "attempts": 1,
        "last": "2026-03-02T11:00:00+00:00"}


def test_nothing_readable_is_exit_2_without_a_traceback(cli, tmp_path):
    write(tmp_path, "junk/a.json", "{")
    run = cli("report", str(tmp_path / "junk"), str(tmp_path / "missing"), "-o", str(tmp_path / "out"))
    assert run.code == 2
    assert "a.json: not JSON" in " ".join(run.stderr.split())
    assert "missing: no such file or folder" in " ".join(run.stderr.split())
    assert "no `meshlab check --json` result found" in run.output and "fix:" in run.output
    assert not (tmp_path / "out").exists()


def test_the_learner_comes_from_the_environment_then_git(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "config", "user.name", "Ada Lovelace"], check=True)
    monkeypatch.setenv("MESHLAB_LEARNER", "ada-42")
    assert default_learner(tmp_path) == "ada-42"
    monkeypatch.delenv("MESHLAB_LEARNER")
    assert default_learner(tmp_path) == "Ada Lovelace"


def test_a_real_check_names_its_learner_and_feeds_the_report(meshlab, tmp_path):
    run = meshlab("check", "1", "--solution", "--isolate", "--learner", "grace", "--json")
    assert run.code == 0, run.output
    data = run.json()
    assert data["version"] == RESULT_SCHEMA_VERSION == 2
    assert data["learner"] == "grace" and data["finished_at"].endswith("+00:00")
    write(tmp_path, "in/grace.json", run.stdout)
    book = meshlab("report", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json").json()
    (cell,) = book["cells"]
    assert (cell["learner"], cell["lab"], cell["status"], cell["failing"]) == ("grace", "01-hello-mesh", "pass", [])
    # The checks of lab 01's Docker part are skipped on the local runtime: not in the count.
    graded = [c for c in data["checks"] if c["status"] != "skip"]
    assert len(graded) < len(data["checks"])
    assert cell["checks_passed"] == cell["checks_total"] == len(graded)
