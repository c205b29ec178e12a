"""The course linter (`meshlab dev check`, meshlab.shape): every rule of
docs/course-shape.md fires, with its file and line, on a copy of lab 01 that breaks it,
and stays quiet on the copy as it is. All in-process and without Envoy."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from meshlab.cli import main
from meshlab.course import load_course
from meshlab.shape import RULES, SECTIONS, Finding, check_course

SLUG = "01-hello-mesh"


class Copy:
    """A one-lab course: lab 01's real files copied into a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        self.lab = root / "labs" / SLUG
        self.manifest = self.lab / "lab.yaml"
        self.readme = self.lab / "README.md"
        self.starter = self.lab / "envoy.yaml"
        self.checker = root / "checker" / "test_01_hello_mesh.py"
        self.deck = root / "slides" / f"{SLUG}.md"
        self.solution = root / "solutions" / SLUG

    def text(self, file: Path) -> str:
        return file.read_text(encoding="utf-8")

    def replace(self, file: Path, old: str, new: str, count: int = 1) -> None:
        text = self.text(file)
        assert old in text, f"{old!r} is not in {file.name}"
        file.write_text(text.replace(old, new, count), encoding="utf-8")

    def line_of(self, file: Path, pattern: str) -> int:
        """The line of the first line of FILE matching PATTERN (a regex)."""
        for number, line in enumerate(self.text(file).splitlines(), start=1):
            if re.search(pattern, line):
                return number
        raise AssertionError(f"no line of {file.name} matches {pattern!r}")

    def append(self, file: Path, text: str) -> int:
        """Append TEXT as new lines; the line it starts on."""
        before = self.text(file)
        if not before.endswith("\n"):
            before += "\n"
        file.write_text(before + text + "\n", encoding="utf-8")
        return len(before.splitlines()) + 1

    def findings(self) -> list[Finding]:
        return check_course(load_course(self.root))

    def found(self) -> list[tuple[str, str, int]]:
        return [(f.rule, f.path(self.root), f.line) for f in self.findings()]

    def rel(self, file: Path) -> str:
        return file.relative_to(self.root).as_posix()


@pytest.fixture
def copy(tmp_path: Path) -> Copy:
    root = tmp_path / "course"
    made = Copy(root)
    shutil.copytree(ROOT / "labs" / SLUG, made.lab)
    shutil.copytree(ROOT / "solutions" / SLUG, made.solution)
    made.checker.parent.mkdir()
    shutil.copy(ROOT / made.rel(made.checker), made.checker)
    made.deck.parent.mkdir()
    shutil.copy(ROOT / made.rel(made.deck), made.deck)
    (root / "course.yaml").write_text(f"title: A copy\nlabs:\n  - {SLUG}\n")
    return made


@pytest.fixture(autouse=True)
def _signal_handlers_kept():
    # The CLI turns SIGTERM into Ctrl-C for its own process; in-process, give pytest's back.
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def invoke(root: Path, *args: str):
    return CliRunner().invoke(main, ["dev", "check", *args], env={"MESHLAB_ROOT": str(root)})


def test_the_copy_of_lab_01_has_the_shape(copy):
    assert copy.findings() == []


# --- each rule, broken once ---------------------------------------------------------

def test_manifest_format_missing(copy):
    copy.replace(copy.manifest, "format: 1\n", "")
    assert copy.found() == [("manifest-format", "labs/01-hello-mesh/lab.yaml", 1)]
    assert load_course(copy.root).labs[0].title == "Hello Mesh", "without `format`, the loader reads format 1"


def test_manifest_format_not_first(copy):
    copy.replace(copy.manifest, "format: 1\n", "")
    line = copy.append(copy.manifest, "format: 1")
    assert copy.found() == [("manifest-format", "labs/01-hello-mesh/lab.yaml", line)]


def test_manifest_text_every_mapping_is_named_though_the_loader_stops_at_the_first(copy):
    course = load_course(copy.root)
    copy.replace(copy.manifest, "  - curl -i http://127.0.0.1:10000/", "  - curl -H 'x-user: alice' http://127.0.0.1:10000/")
    copy.replace(copy.manifest, "hints:\n", "hints:\n  - Step 2: the route comes first\n")
    findings = check_course(course)  # the course as it was loaded; the linter reads the file again
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("manifest-text", "labs/01-hello-mesh/lab.yaml", copy.line_of(copy.manifest, "x-user: alice")),
        ("manifest-text", "labs/01-hello-mesh/lab.yaml", copy.line_of(copy.manifest, "Step 2: the route"))]
    assert "`hints[0]` must be text, but YAML read a mapping" in findings[1].message
    assert "quote" in findings[1].fix


def test_manifest_text_stops_the_cli_with_exit_2_and_the_line(copy):
    copy.replace(copy.manifest, "hints:\n", "hints:\n  - Step 2: the route comes first\n")
    line = copy.line_of(copy.manifest, "Step 2: the route")
    result = invoke(copy.root)
    assert result.exit_code == 2, result.output
    assert "`hints[0]` must be text, but YAML read a mapping" in result.stderr
    assert f"lab.yaml:{line}:" in result.stderr and "Traceback" not in result.output
    document = json.loads(invoke(copy.root, "--json").stdout)
    assert document["ok"] is False and document["error"]["where"].endswith(f"lab.yaml:{line}:5")


def test_readme_title(copy):
    copy.replace(copy.readme, "# Lab 01 — Hello Mesh", "# Lab 01 · Hello Mesh")
    assert copy.found() == [("readme-title", "labs/01-hello-mesh/README.md", 1)]


def test_readme_title_may_have_a_subtitle_but_not_another_title(copy):
    first = copy.text(copy.readme).splitlines()[0]
    copy.replace(copy.readme, first, "# Lab 01 — Hello Mesh: anything after a colon")
    assert copy.found() == []
    copy.replace(copy.readme, "# Lab 01 — Hello Mesh", "# Lab 01 — Hello Meshes")
    assert copy.found() == [("readme-title", "labs/01-hello-mesh/README.md", 1)]


def test_readme_missing_is_one_finding_not_a_crash(copy):
    copy.readme.unlink()
    found = copy.found()
    assert found[0] == ("readme-title", "labs/01-hello-mesh/README.md", 1)
    assert {rule for rule, _, _ in found[1:]} <= {"todo-step"}  # the TODOs name steps of no README


def test_readme_header_missing(copy):
    line = copy.line_of(copy.readme, r"^\*\*Time:\*\*")
    copy.replace(copy.readme, "**Time:**", "Time:")
    findings = copy.findings()
    assert [(f.rule, f.line) for f in findings] == [("readme-header", line)]
    assert "**Time:** about 45 minutes. **You edit:** `envoy.yaml`, `docker/network/envoy.yaml`" in findings[0].fix
    assert "**Ports:** app http 8080" in findings[0].fix


@pytest.mark.parametrize("old, new, message", [
    ("about 45 minutes", "about 50 minutes", "the header says about 50 minutes; lab.yaml says 45"),
    ("`envoy.yaml`;", "the config;", "does not name `envoy.yaml`"),
    ("admin 9901", "admin 9902", "does not name port 9901 (sidecar admin)"),
])
def test_readme_header_disagrees_with_the_manifest(copy, old, new, message):
    line = copy.line_of(copy.readme, r"^\*\*Time:\*\*")
    copy.replace(copy.readme, old, new)
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("readme-header", "labs/01-hello-mesh/README.md", line)]
    assert message in findings[0].message


def test_readme_sections_missing(copy):
    copy.replace(copy.readme, "## Further reading\n", "## Reading\n")
    line = copy.line_of(copy.readme, "^## Time estimate")
    findings = copy.findings()
    assert [(f.rule, f.line) for f in findings] == [("readme-sections", line)]
    assert findings[0].message == "no `## Further reading` section"


def test_readme_sections_out_of_order(copy):
    copy.replace(copy.readme, "## Questions to think about\n", "## PLACEHOLDER\n")
    copy.replace(copy.readme, "## Further reading\n", "## Questions to think about\n")
    copy.replace(copy.readme, "## PLACEHOLDER\n", "## Further reading\n")
    line = copy.line_of(copy.readme, "^## Questions to think about")
    findings = copy.findings()
    assert [(f.rule, f.line) for f in findings] == [("readme-sections", line)]
    assert findings[0].message == "`## Questions to think about` comes after `## Further reading`"


def test_readme_sections_others_may_sit_between(copy):
    copy.replace(copy.readme, "## Concepts to understand first\n",
                 "## The specification\n\nAnything.\n\n## Concepts to understand first\n")
    assert copy.findings() == []


def test_readme_steps_with_a_gap(copy):
    last = max(int(n) for n in re.findall(r"^### (\d+)\.", copy.text(copy.readme), flags=re.M))
    copy.replace(copy.readme, f"### {last}. ", f"### {last + 1}. ")
    # (the TODOs of the step renumbered now name a missing step: todo-step says so too)
    findings = [f for f in copy.findings() if f.rule != "todo-step"]
    assert [(f.rule, f.line) for f in findings] == [("readme-steps", copy.line_of(copy.readme, f"^### {last + 1}\\."))]
    assert findings[0].message == f"step {last + 1} where step {last} was due"


def test_readme_steps_unnumbered(copy):
    last = max(int(n) for n in re.findall(r"^### (\d+)\.", copy.text(copy.readme), flags=re.M))
    copy.replace(copy.readme, f"### {last}. ", "### ")
    line = copy.line_of(copy.readme, r"^### [^\d]")
    found = [finding for finding in copy.found() if finding[0] != "todo-step"]  # that step's TODOs, too
    assert found == [("readme-steps", "labs/01-hello-mesh/README.md", line)]


def test_readme_steps_as_a_list_instead_of_headings(copy):
    copy.readme.write_text(re.sub(r"^### (\d+)\. ", r"\1. ", copy.text(copy.readme), flags=re.M))
    steps = copy.line_of(copy.readme, "^## Steps")
    found = copy.found()
    assert ("readme-steps", "labs/01-hello-mesh/README.md", steps) in found
    # With no steps, every TODO names a missing step.
    assert {rule for rule, _, _ in found} == {"readme-steps", "todo-step"}


def test_todo_without_step_and_with_a_missing_step(copy):
    bare = copy.append(copy.starter, "# TODO: tidy up")
    missing = copy.append(copy.starter, "# TODO(step 99): nothing")
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("todo-step", "labs/01-hello-mesh/envoy.yaml", bare), ("todo-step", "labs/01-hello-mesh/envoy.yaml", missing)]
    assert findings[0].message == "a TODO without its step"
    assert findings[1].message.startswith("TODO(step 99) names no step of the README")


def test_todo_whose_step_does_not_name_the_file(copy):
    step = int(re.search(r"TODO\(step (\d+)\)", copy.text(copy.starter)).group(1))
    readme = copy.text(copy.readme)
    start = readme.index(f"\n### {step}. ")
    end = re.compile(r"\n##+ ").search(readme, start + 1).start()
    copy.readme.write_text(readme[:start] + readme[start:end].replace("envoy.yaml", "the config") + readme[end:])
    todos = [n for n, line in enumerate(copy.text(copy.starter).splitlines(), start=1)
             if f"TODO(step {step})" in line]
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("todo-step", "labs/01-hello-mesh/envoy.yaml", n) for n in todos]
    assert f"README step {step}" in findings[0].message and "does not name envoy.yaml" in findings[0].message


def _a_hint(copy: Copy) -> tuple[int, str]:
    hints = load_course(copy.root).labs[0].hints
    index, hint = max(enumerate(hints, start=1), key=lambda pair: len(pair[1]))
    return index, hint


def test_hint_repeated_in_the_readme(copy):
    index, hint = _a_hint(copy)
    copy.replace(copy.readme, "## Verification\n", f"Or read this:\n{hint[:80]}\n\n## Verification\n")
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("hints-one-source", "labs/01-hello-mesh/README.md", copy.line_of(copy.readme, "^Or read this") + 1)]
    assert findings[0].message.startswith(f"hint {index} of lab.yaml is repeated here")


def test_hint_repeated_with_other_line_breaks_still_counts(copy):
    _, hint = _a_hint(copy)
    words = hint[:90].split()
    rewrapped = "\n".join(" ".join(words[i:i + 3]) for i in range(0, len(words), 3))
    copy.replace(copy.readme, "## Verification\n", f"{rewrapped}\n\n## Verification\n")
    assert [rule for rule, _, _ in copy.found()] == ["hints-one-source"]


def test_hint_in_a_code_block_or_shorter_than_60_characters_is_no_repeat(copy):
    _, hint = _a_hint(copy)
    copy.replace(copy.readme, "## Verification\n", f"```text\n{hint}\n```\n\n{hint[:59]}\n\n## Verification\n")
    assert copy.found() == []


def test_hint_repeated_in_the_deck(copy):
    _, hint = _a_hint(copy)
    line = copy.append(copy.deck, f"\n{hint}")
    assert copy.found() == [("hints-one-source", "slides/01-hello-mesh.md", line + 1)]


def test_hint_repeated_in_the_checker_even_split_over_literals(copy):
    _, hint = _a_hint(copy)
    words = hint.split()
    half = len(words) // 2
    line = copy.append(copy.checker, f'LAB_HINT = ({" ".join(words[:half])!r}\n            " {" ".join(words[half:])}")')
    assert copy.found() == [("hints-one-source", "checker/test_01_hello_mesh.py", line)]


def test_hints_section_without_its_pointer(copy):
    readme = copy.text(copy.readme)
    copy.readme.write_text(re.sub(r"`meshlab hint 0*1`", "the hint command", readme))
    assert copy.found() == [("hints-one-source", "labs/01-hello-mesh/README.md", copy.line_of(copy.readme, "^## Hints"))]


def _scorecard(copy: Copy) -> list[tuple[int, str]]:
    return [(n, line.strip()[1:].strip()) for n, line in enumerate(copy.text(copy.readme).splitlines(), start=1)
            if line.strip()[:1] in ("✔", "✘")]


def test_scorecard_with_a_title_the_checker_does_not_have(copy):
    line, title = _scorecard(copy)[1]
    copy.replace(copy.readme, title, "Envoy listens somewhere")
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("verification-scorecard", "labs/01-hello-mesh/README.md", line)]
    assert findings[0].message == f"the scorecard shows `Envoy listens somewhere`; the checker's check is `{title}`"


def test_scorecard_missing_a_check(copy):
    (line, title), (following, _) = _scorecard(copy)[2:4]
    copy.replace(copy.readme, f" ✔ {title}\n", "")
    findings = copy.findings()
    assert [(f.rule, f.line) for f in findings] == [("verification-scorecard", following - 1)]
    assert findings[0].message == f"the scorecard lacks the check `{title}`"


def test_scorecard_in_another_order(copy):
    (first, a), (second, b) = _scorecard(copy)[:2]
    copy.replace(copy.readme, f" ✔ {a}\n ✔ {b}\n", f" ✔ {b}\n ✔ {a}\n")
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root)) for f in findings] == [
        ("verification-scorecard", "labs/01-hello-mesh/README.md")]
    assert findings[0].line in (first, second) and "is out of order: the checker runs it as check" in findings[0].message


def test_scorecard_without_the_check_command(copy):
    copy.replace(copy.readme, "$ meshlab check 1\n", "")
    line = copy.line_of(copy.readme, "^## Verification")
    assert copy.found() == [("verification-scorecard", "labs/01-hello-mesh/README.md", line)]


def test_check_titles_are_read_as_syntax_implicit_concatenation_included(copy):
    _, title = _scorecard(copy)[0]
    cut = len(title) // 2
    copy.replace(copy.checker, f'@check("{title}"', f'@check("{title[:cut]}"\n       "{title[cut:]}"')
    assert copy.found() == []
    copy.replace(copy.checker, f'"{title[:cut]}"\n       "{title[cut:]}"', "TITLE")
    line = copy.line_of(copy.checker, r"^@check\(TITLE")
    found = copy.found()
    assert ("verification-scorecard", "checker/test_01_hello_mesh.py", line) in found
    assert {rule for rule, _, _ in found} == {"verification-scorecard"}


def test_slides_missing(copy):
    copy.deck.unlink()
    assert copy.found() == [("slides-exist", "slides/01-hello-mesh.md", 1)]


def test_slides_in_another_title_style(copy):
    line = copy.line_of(copy.deck, "^# Lab 01")
    copy.replace(copy.deck, "# Lab 01 — Hello Mesh", "# Lab 01 · Hello Mesh")
    assert copy.found() == [("slides-exist", "slides/01-hello-mesh.md", line)]


def test_solution_with_a_file_the_learner_does_not_edit(copy):
    (copy.solution / "notes.md").write_text("the answer\n")
    (copy.solution / "__pycache__").mkdir()
    (copy.solution / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert copy.found() == [("solution-edit-only", "solutions/01-hello-mesh/notes.md", 1)]


def test_time_not_in_minutes(copy):
    copy.replace(copy.manifest, "time: 45m", "time: 0h45m")
    findings = copy.findings()
    assert [(f.rule, f.path(copy.root), f.line) for f in findings] == [
        ("time-minutes", "labs/01-hello-mesh/lab.yaml", copy.line_of(copy.manifest, "^time:"))]
    assert findings[0].fix == "write `time: 45m`"


def test_a_port_changed_in_the_manifest_leaves_no_text_naming_the_old_one(copy):
    # The instructor moves the listener off 10000 in lab.yaml, the starter and the solution...
    copy.replace(copy.manifest, "listener: 10000", "listener: 10010")
    copy.replace(copy.manifest, "127.0.0.1:10000/", "127.0.0.1:10010/")
    copy.starter.write_text(copy.text(copy.starter).replace("10000", "10010"))
    solution = copy.solution / "envoy.yaml"
    solution.write_text(solution.read_text().replace("10000", "10010"))
    found = copy.found()
    # ...and every line of the README and the deck that still names 10000 is pointed at.
    stale = {(copy.rel(file), number) for file in (copy.readme, copy.deck)
             for number, line in enumerate(copy.text(file).splitlines(), 1) if "10000" in line}
    flagged = {(path, line) for rule, path, line in found if rule in ("ports-declared", "readme-header")}
    header_start = copy.line_of(copy.readme, r"^\*\*Time:\*\*")
    # the header paragraph, flagged once
    assert stale - flagged <= {(copy.rel(copy.readme), header_start + n) for n in (1, 2)}
    assert ("readme-header", copy.rel(copy.readme), header_start) in found
    assert {rule for rule, _, _ in found} == {"ports-declared", "readme-header"}
    hint_line = copy.line_of(copy.manifest, "port_value 10000")
    assert ("ports-declared", copy.rel(copy.manifest), hint_line) in found  # a hint naming the old port


def test_ephemeral_ports_in_shown_output_are_not_the_labs(copy):
    copy.append(copy.readme, "  stream #1 (sotw, ipv4:127.0.0.1:42778): in sync")
    assert copy.found() == []


def test_every_rule_has_a_test_here():
    source = Path(__file__).read_text()
    for rule in RULES:
        assert f'"{rule}"' in source, rule


# --- the command ---------------------------------------------------------------------

def test_cli_passes_on_a_course_with_its_shape(copy):
    result = invoke(copy.root)
    assert result.exit_code == 0, result.output
    assert "the course has its shape" in result.output
    document = json.loads(invoke(copy.root, "--json").stdout)
    assert document == {"ok": True, "labs": 1, "rules": list(RULES), "findings": []}


def test_cli_prints_findings_sorted_with_their_fix_and_exits_1(copy):
    copy.replace(copy.manifest, "time: 45m", "time: 0h45m")
    copy.replace(copy.manifest, "format: 1\n", "")
    copy.replace(copy.readme, "# Lab 01 — Hello Mesh", "# Lab 01 · Hello Mesh")
    result = invoke(copy.root)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines[::2]] == [
        ["labs/01-hello-mesh/README.md:1", "readme-title"],
        ["labs/01-hello-mesh/lab.yaml:1", "manifest-format"],
        [f"labs/01-hello-mesh/lab.yaml:{copy.line_of(copy.manifest, '^time:')}", "time-minutes"]]
    assert all(line.startswith("    fix: ") for line in lines[1::2])
    assert "3 findings in 2 files" in result.stderr


def test_cli_json(copy):
    copy.replace(copy.manifest, "time: 45m", "time: 0h45m")
    result = invoke(copy.root, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["rules"] == list(RULES)
    assert document["findings"] == [{
        "file": "labs/01-hello-mesh/lab.yaml", "line": copy.line_of(copy.manifest, "^time:"),
        "rule": "time-minutes", "message": "`time: 0h45m` is not written in minutes", "fix": "write `time: 45m`"}]


def test_cli_help_names_the_exit_codes():
    result = CliRunner().invoke(main, ["dev", "check", "--help"])
    assert result.exit_code == 0 and "Exit 0 when the course passes, 1 when it has findings, 2" in result.output


# --- the real course and the document --------------------------------------------------

def test_the_real_course_has_its_shape(course):
    assert [f"{f.path(course.root)}:{f.line}: {f.rule}: {f.message}" for f in check_course(course)] == []


def test_the_document_lists_the_rules_in_the_linters_order():
    document = (ROOT / "docs" / "course-shape.md").read_text()
    assert re.findall(r"^\| `([a-z-]+)` \|", document, flags=re.M) == list(RULES)
    assert " · ".join(SECTIONS) in document
