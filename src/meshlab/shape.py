"""The course's shape, checked: the rules of docs/course-shape.md as code.

`check_course(course)` reads every lab's files as they are on disk (the manifest, the
README, the starters, the checker module, the deck, the solution) and returns one
Finding per breach: file, line, rule, message and fix. Each rule is a small function
of one lab's files, registered in RULES in the order the document lists them; a test
keeps the two in step.

Checker modules are read as Python syntax (their `@check("Title", ...)` decorators),
never imported: importing a checker runs its module code. READMEs and decks are parsed
with markdown-it (CommonMark), which knows where each heading and code block starts.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

from markdown_it import MarkdownIt

from meshlab import yamlfile
from meshlab.course import LAB_FILE, MANIFEST_FORMAT, Course, Lab, text_problems

# The README's `##` sections, in this order (others may sit between them).
SECTIONS = ("Goal and the core question", "Concepts to understand first", "Steps", "Hints", "Verification",
            "Questions to think about", "Further reading", "Time estimate")
# A hint counts as repeated when this many characters of it (whitespace folded) appear elsewhere.
REPEAT_CHARS = 60


@dataclass(frozen=True, order=True)
class Finding:
    """One breach of a rule, where an author fixes it."""

    file: Path
    line: int
    rule: str
    message: str = field(compare=False)
    fix: str = field(compare=False)

    def path(self, root: Path) -> str:
        """The file relative to the course root (as authors type it)."""
        try:
            return self.file.relative_to(root).as_posix()
        except ValueError:
            return os.path.relpath(self.file, root)

    def to_dict(self, root: Path) -> dict:
        return {"file": self.path(root), "line": self.line, "rule": self.rule,
                "message": self.message, "fix": self.fix}


# What a rule yields: (file, line, message, fix); the runner adds the rule's id.
Breach = tuple[Path, int, str, str]


@dataclass(frozen=True)
class Rule:
    id: str
    check: Callable[["LabFiles"], Iterable[Breach]]


RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable:
    def register(check: Callable[["LabFiles"], Iterable[Breach]]) -> Callable:
        RULES[rule_id] = Rule(rule_id, check)
        return check
    return register


def check_course(course: Course) -> list[Finding]:
    """Every breach of every rule in every lab, sorted by file and line."""
    findings = []
    for lab in course.labs:
        files = LabFiles(course.root, lab)
        for entry in RULES.values():
            findings += [Finding(file, line, entry.id, message, fix) for file, line, message, fix in entry.check(files)]
    return sorted(findings)


# --- reading the files -------------------------------------------------------------

@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    line: int


@dataclass(frozen=True)
class Block:
    """A Markdown block: a top-level heading, paragraph, list..., or a code block anywhere."""

    kind: str        # h1-h6 for headings, else markdown-it's token type: paragraph, fence, code_block...
    line: int        # where the block starts
    text: str        # the inline text, or a code block's content
    first: int       # the line of the content's first line (after a fence's opening line)
    end: int         # the block's last line


class Markdown:
    """A Markdown file as blocks with their lines."""

    def __init__(self, file: Path):
        self.file = file
        self.text = file.read_text(encoding="utf-8", errors="replace")
        self.lines = self.text.splitlines()
        self.blocks: list[Block] = []
        tokens = MarkdownIt("commonmark").parse(_blank_front_matter(self.text))
        for index, token in enumerate(tokens):
            nested = token.level != 0 and token.type not in ("fence", "code_block")  # code counts anywhere
            if nested or token.nesting == -1 or not token.map:
                continue
            start = token.map[0] + 1
            if token.nesting == 1:
                following = tokens[index + 1] if index + 1 < len(tokens) else None
                inline = following.content if following is not None and following.type == "inline" else ""
                kind = token.tag if token.type == "heading_open" else token.type.removesuffix("_open")
                self.blocks.append(Block(kind, start, inline, start, token.map[1]))
            else:
                first = start + 1 if token.type == "fence" else start
                self.blocks.append(Block(token.type, start, token.content, first, token.map[1]))

    @cached_property
    def headings(self) -> list[Heading]:
        return [Heading(int(b.kind[1]), b.text, b.line) for b in self.blocks if re.fullmatch(r"h[1-6]", b.kind)]

    def section(self, title: str) -> tuple[int, int] | None:
        """The lines (heading, end) of the `## TITLE` section, end exclusive."""
        for heading in self.headings:
            if heading.level == 2 and heading.text == title:
                later = [h.line for h in self.headings if h.line > heading.line and h.level <= 2]
                return heading.line, min(later, default=len(self.lines) + 1)
        return None

    def between(self, span: tuple[int, int]) -> list[Block]:
        return [b for b in self.blocks if span[0] < b.line < span[1]]

    def lines_of(self, span: tuple[int, int]) -> str:
        return "\n".join(self.lines[span[0] - 1:span[1] - 1])

    @cached_property
    def prose(self) -> str:
        """The text with every code block's lines blanked (line numbers kept)."""
        lines = list(self.lines)
        for block in self.blocks:
            if block.kind in ("fence", "code_block"):
                lines[block.line - 1:block.end] = [""] * (block.end - block.line + 1)
        return "\n".join(lines)


def _blank_front_matter(text: str) -> str:
    """A deck's YAML front matter (`---` ... `---`, for slide tools) blanked, lines kept."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for end in range(1, len(lines)):
            if lines[end].strip() == "---":
                return "\n" * end + "\n" + "\n".join(lines[end + 1:])
    return text


@dataclass(frozen=True)
class CheckTitle:
    title: str | None   # None when the title is not a string literal
    line: int


class CheckerModule:
    """A checker module read as syntax: its check titles in order, and its string literals."""

    def __init__(self, file: Path):
        self.file = file
        self.error: SyntaxError | None = None
        try:
            self.tree: ast.Module | None = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        except SyntaxError as error:
            self.tree, self.error = None, error

    @cached_property
    def titles(self) -> list[CheckTitle]:
        """`@check("Title", ...)` in definition order, the order pytest runs them."""
        found = []
        for node in ast.walk(self.tree) if self.tree else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and _called_name(decorator.func) == "check":
                        found.append(CheckTitle(_title_argument(decorator), decorator.lineno))
        return sorted(found, key=lambda t: t.line)

    @cached_property
    def strings(self) -> list[tuple[str, int]]:
        """Every string literal (implicit concatenation joined by the parser) and its line."""
        if self.tree is None:
            return []
        return [(node.value, node.lineno) for node in ast.walk(self.tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _title_argument(call: ast.Call) -> str | None:
    node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "title"), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class LabFiles:
    """One lab's files, each read once when a rule first asks for it."""

    def __init__(self, root: Path, lab: Lab):
        self.root = root
        self.lab = lab
        self.manifest_file = lab.workspace / LAB_FILE
        self.readme_file = lab.workspace / "README.md"
        self.deck_file = root / "slides" / f"{lab.slug}.md"

    @property
    def number(self) -> str:
        return f"{self.lab.number:02d}"

    @cached_property
    def manifest(self) -> yamlfile.YamlDoc:
        return yamlfile.load(self.manifest_file)

    @cached_property
    def readme(self) -> Markdown | None:
        return Markdown(self.readme_file) if self.readme_file.is_file() else None

    @cached_property
    def deck(self) -> Markdown | None:
        return Markdown(self.deck_file) if self.deck_file.is_file() else None

    @cached_property
    def checker(self) -> CheckerModule | None:
        return CheckerModule(self.lab.checks) if self.lab.checks.is_file() else None

    @cached_property
    def steps(self) -> dict[int, tuple[Heading, tuple[int, int]]]:
        """README step N: its `### N. Title` heading and its lines (to the next heading)."""
        span = self.readme.section("Steps") if self.readme else None
        if span is None:
            return {}
        headings = [h for h in self.readme.headings if span[0] < h.line < span[1]]
        steps = {}
        for heading, following in zip(headings, headings[1:] + [None]):
            match = re.match(r"(\d+)\. \S", heading.text)
            if heading.level == 3 and match:
                steps.setdefault(int(match.group(1)), (heading, (heading.line, following.line if following else span[1])))
        return steps

    def title_line(self) -> str:
        return f"# Lab {self.number} — {self.lab.title}"

    def title_problem(self, line: str) -> str | None:
        """Why LINE is not `# Lab NN — Title` (optionally `: subtitle`), or None."""
        expected = self.title_line()
        if line == expected or line.startswith(expected + ": "):
            return None
        return f"the title is `{line}`; it must be `{expected}`, optionally followed by `: subtitle`"


# --- the rules ---------------------------------------------------------------------

@rule("manifest-format")
def manifest_format(lab: LabFiles) -> Iterator[Breach]:
    data = lab.manifest.data if isinstance(lab.manifest.data, dict) else {}
    if "format" not in data:
        yield (lab.manifest_file, 1, f"{LAB_FILE} does not say which manifest format it is written in",
               f"add `format: {MANIFEST_FORMAT}` as its first line")
    elif next(iter(data)) != "format":
        yield (lab.manifest_file, lab.manifest.location(("format",)).line, "`format` is not the manifest's first key",
               "move `format: 1` to the top of the file")


@rule("manifest-text")
def manifest_text(lab: LabFiles) -> Iterator[Breach]:
    # The loader refuses the first of these; the linter reads the file again and names all.
    for problem in text_problems(lab.manifest):
        yield lab.manifest_file, problem.where.line or 1, problem.message, problem.fix or ""


@rule("readme-title")
def readme_title(lab: LabFiles) -> Iterator[Breach]:
    if lab.readme is None:
        yield lab.readme_file, 1, "the lab has no README.md", "write one from the template in docs/course-shape.md"
        return
    first = lab.readme.lines[0] if lab.readme.lines else ""
    problem = lab.title_problem(first)
    if problem:
        yield lab.readme_file, 1, problem, f"make the first line `{lab.title_line()}` or `{lab.title_line()}: subtitle`"


@rule("readme-header")
def readme_header(lab: LabFiles) -> Iterator[Breach]:
    if lab.readme is None:
        return
    blocks = lab.readme.blocks
    titles = [i for i, b in enumerate(blocks) if b.kind == "h1"]
    if not titles:
        return  # readme-title says so
    after = blocks[titles[0] + 1] if titles[0] + 1 < len(blocks) else None
    line = after.line if after else blocks[titles[0]].line
    ports = lab.lab.ports()
    proposal = (f"**Time:** about {lab.lab.time_minutes} minutes. **You edit:** "
                + ", ".join(f"`{f}`" for f in lab.lab.edit) + ". **Ports:** "
                + ", ".join(f"{service} {role} {port}" for service, role, port in ports) + " (all on 127.0.0.1).")
    text = " ".join(after.text.split()) if after and after.kind == "paragraph" else ""
    match = re.fullmatch(r"\*\*Time:\*\* about (\d+) minutes\. \*\*You edit:\*\* (.*?) \*\*Ports:\*\* (.*)", text)
    if not match:
        yield lab.readme_file, line, "the title is not followed by the header line (time, files to edit, ports)", \
            f"put this paragraph under the title: {proposal}"
        return
    minutes, edited, listed = int(match.group(1)), match.group(2), match.group(3)
    if minutes != lab.lab.time_minutes:
        yield (lab.readme_file, line, f"the header says about {minutes} minutes; lab.yaml says {lab.lab.time_minutes}",
               "make the two agree (lab.yaml's `time` is the one `meshlab list` shows)")
    for name in lab.lab.edit:
        # A whole path: `docker/network/envoy.yaml` does not name `envoy.yaml`.
        if not re.search(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", edited):
            yield lab.readme_file, line, f"the header's **You edit:** does not name `{name}`", \
                f"list every file of lab.yaml's `edit`: {', '.join(lab.lab.edit)}"
    for service, role, port in ports:
        if not re.search(rf"(?<!\d){port}(?!\d)", listed):
            yield lab.readme_file, line, f"the header's **Ports:** does not name port {port} ({service} {role})", \
                "name every port lab.yaml declares, with what listens on it"


@rule("readme-sections")
def readme_sections(lab: LabFiles) -> Iterator[Breach]:
    if lab.readme is None:
        return
    found = {}
    for heading in lab.readme.headings:
        if heading.level == 2 and heading.text in SECTIONS:
            found.setdefault(heading.text, heading.line)
    order = " · ".join(SECTIONS)
    for index, title in enumerate(SECTIONS):
        if title not in found:
            later = [found[t] for t in SECTIONS[index + 1:] if t in found]
            yield (lab.readme_file, min(later, default=len(lab.readme.lines) or 1), f"no `## {title}` section",
                   f"add it; the sections are, in order: {order}")
    previous = None
    for title, line in sorted(found.items(), key=lambda item: item[1]):
        if previous is not None and SECTIONS.index(title) < SECTIONS.index(previous):
            yield (lab.readme_file, line, f"`## {title}` comes after `## {previous}`",
                   f"order the sections: {order}")
        else:
            previous = title


@rule("readme-steps")
def readme_steps(lab: LabFiles) -> Iterator[Breach]:
    span = lab.readme.section("Steps") if lab.readme else None
    if span is None:
        return  # readme-sections says so
    headings = [h for h in lab.readme.headings if span[0] < h.line < span[1] and h.level == 3]
    if not headings:
        yield (lab.readme_file, span[0], "the Steps section has no `### N. Title` step headings",
               "give each step a heading `### 1. What it does`, numbered from 1")
        return
    expected = 1
    for heading in headings:
        match = re.match(r"(\d+)\. \S", heading.text)
        if not match:
            yield (lab.readme_file, heading.line, f"`### {heading.text}` is not a numbered step",
                   "write step headings as `### N. Title`; other text under Steps goes in paragraphs")
            continue
        number = int(match.group(1))
        if number != expected:
            yield (lab.readme_file, heading.line, f"step {number} where step {expected} was due",
                   "number the steps 1, 2, 3 ... with no gap and no repeat")
        expected = number + 1


@rule("todo-step")
def todo_step(lab: LabFiles) -> Iterator[Breach]:
    steps = lab.steps
    for name in lab.lab.edit:
        starter = lab.lab.workspace / name
        if not starter.is_file():
            continue
        lines = starter.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, text in enumerate(lines, start=1):
            for todo in re.finditer(r"\bTODO\b(?:\(step (\d+)\))?", text):
                if todo.group(1) is None:
                    yield (starter, number, "a TODO without its step",
                           "write it `TODO(step N)`, N the README step that fills this gap")
                    continue
                step = int(todo.group(1))
                if step not in steps:
                    known = ", ".join(map(str, sorted(steps))) or "none"
                    yield (starter, number, f"TODO(step {step}) names no step of the README (its steps: {known})",
                           "number the TODO as the README step that fills it")
                elif Path(name).name not in lab.readme.lines_of(steps[step][1]):
                    heading = steps[step][0]
                    yield (starter, number, f"README step {step} (`### {heading.text}`) does not name {name}",
                           f"number the TODO as the step that edits {name}, or name the file in that step")


@rule("hints-one-source")
def hints_one_source(lab: LabFiles) -> Iterator[Breach]:
    span = lab.readme.section("Hints") if lab.readme else None
    if span is not None and not re.search(rf"meshlab hint 0*{lab.lab.number}\b", lab.readme.lines_of(span)):
        yield (lab.readme_file, span[0], f"the Hints section does not point to `meshlab hint {lab.lab.number}`",
               f"say that `meshlab hint {lab.lab.number}` gives the hints one layer at a time")
    places: list[tuple[Path, list[tuple[str, int]], str]] = []
    # Code blocks do not count: a step's config or a deck's example is the lesson itself.
    if lab.readme:
        places.append((lab.readme_file, [(lab.readme.prose, 1)], "point to `meshlab hint N` instead"))
    if lab.deck:
        places.append((lab.deck_file, [(lab.deck.prose, 1)], "leave the hints to `meshlab hint N`"))
    if lab.checker:
        places.append((lab.checker.file, lab.checker.strings,
                       "give the check a hint of its own, about what this check needs"))
    for index, hint in enumerate(lab.lab.hints, start=1):
        for file, texts, fix in places:
            line = _repeated(hint, texts)
            if line is not None:
                yield (file, line, f"hint {index} of lab.yaml is repeated here (lab.yaml is the hints' one source)",
                       fix)


@rule("verification-scorecard")
def verification_scorecard(lab: LabFiles) -> Iterator[Breach]:
    span = lab.readme.section("Verification") if lab.readme else None
    if span is None:
        return  # readme-sections says so
    if lab.checker is None:
        yield (lab.manifest_file, 1, f"the lab's checker module {lab.lab.checks.name} does not exist",
               "write it, or point lab.yaml's `checks` to it")
        return
    if lab.checker.error is not None:
        yield (lab.checker.file, lab.checker.error.lineno or 1, f"the checker is not valid Python: "
               f"{lab.checker.error.msg}", "fix the syntax")
        return
    titles = []
    for title in lab.checker.titles:
        if title.title is None:
            yield (lab.checker.file, title.line, "the check's title is not a string literal",
                   "write the title as a literal: the linter reads titles without importing the checker")
        else:
            titles.append(title.title)
    command = re.compile(rf"\s*\$ meshlab check 0*{lab.lab.number}\s*")
    block = next((b for b in lab.readme.between(span) if b.kind in ("fence", "code_block")
                  and any(command.fullmatch(line) for line in b.text.splitlines())), None)
    if block is None:
        yield (lab.readme_file, span[0], f"the Verification section shows no `$ meshlab check {lab.lab.number}` "
               "console block", f"show the scorecard of a passing run, as `meshlab check {lab.lab.number}` prints it")
        return
    shown = [(line.strip()[1:].strip(), block.first + offset) for offset, line in enumerate(block.text.splitlines())
             if line.strip()[:1] in ("✔", "✘") or line.strip().startswith("- ")]  # "-": skipped here
    texts = [text for text, _ in shown]
    fix = f"copy the scorecard from a real run of `meshlab check {lab.lab.number}`"
    matcher = difflib.SequenceMatcher(None, texts, titles, autojunk=False)
    for op, s1, s2, t1, t2 in matcher.get_opcodes():
        if op == "equal":
            continue
        paired = set()
        for text, line in shown[s1:s2]:
            if text in titles:
                message = (f"`{text}` is out of order: the checker runs it as check {titles.index(text) + 1} "
                           f"of {len(titles)}")
            else:
                real = next((t for t in titles[t1:t2] if t not in texts and t not in paired), None)
                paired.add(real)
                message = (f"the scorecard shows `{text}`; the checker's check is `{real}`" if real
                           else f"the scorecard shows `{text}`, which is no check of the checker")
            yield lab.readme_file, line, message, fix
        # What the scorecard lacks belongs before its next line (or after its last).
        line = shown[s2][1] if s2 < len(shown) else (shown[-1][1] if shown else block.first)
        for real in titles[t1:t2]:
            if real not in texts and real not in paired:
                yield lab.readme_file, line, f"the scorecard lacks the check `{real}`", fix


@rule("slides-exist")
def slides_exist(lab: LabFiles) -> Iterator[Breach]:
    if lab.deck is None:
        yield (lab.deck_file, 1, f"lab {lab.number} has no deck",
               f"write slides/{lab.lab.slug}.md, starting with `{lab.title_line()}`")
        return
    headings = lab.deck.headings
    if not headings:
        yield lab.deck_file, 1, "the deck has no heading", f"start it with `{lab.title_line()}`"
        return
    first = headings[0]
    problem = lab.title_problem("#" * first.level + " " + first.text)
    if problem:
        yield lab.deck_file, first.line, f"the deck's first heading: {problem}", \
            f"start the deck with `{lab.title_line()}`, the README's title style"


@rule("solution-edit-only")
def solution_edit_only(lab: LabFiles) -> Iterator[Breach]:
    if not lab.lab.solution.is_dir():
        return
    for file in sorted(lab.lab.solution.rglob("*")):
        if not file.is_file() or "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        name = file.relative_to(lab.lab.solution).as_posix()
        if name not in lab.lab.edit:
            yield (file, 1, f"{name} is not one of the files the learner edits ({', '.join(lab.lab.edit)})",
                   "remove it from the solution, or add it to lab.yaml's `edit` (a starter with its TODOs)")


@rule("time-minutes")
def time_minutes(lab: LabFiles) -> Iterator[Breach]:
    data = lab.manifest.data if isinstance(lab.manifest.data, dict) else {}
    if "time" not in data:
        yield lab.manifest_file, 1, "lab.yaml has no `time`", "add the time estimate in minutes, like `time: 45m`"
    elif not (isinstance(data["time"], str) and re.fullmatch(r"\d+m", data["time"])):
        yield (lab.manifest_file, lab.manifest.location(("time",)).line,
               f"`time: {data['time']}` is not written in minutes", f"write `time: {lab.lab.time_minutes}m`")


EPHEMERAL_PORTS = 32768  # Linux's default ip_local_port_range starts here
# Where a text names a port on this machine: 127.0.0.1:N or localhost:N, a bare :N
# ("Envoy on :10000"), Envoy's `port_value: N`, "port N", or a `--port N` argument.
_PORT_MENTION = re.compile(
    r"\b(?:127\.0\.0\.1|localhost):(\d{2,5})\b"
    r"|(?<![^\s(`]):(\d{4,5})\b"
    r"|\bport(?:_value)?:?\s*(\d{2,5})\b"
    r"|--(?:[a-z]+-)?port[= ]\"?(\d{2,5})\b")


@rule("ports-declared")
def ports_declared(lab: LabFiles) -> Iterator[Breach]:
    declared = {port for _, _, port in lab.lab.ports()}
    shown = ", ".join(str(p) for p in sorted(declared)) or "none"
    files = [lab.readme_file, lab.deck_file, lab.manifest_file,
             *(lab.lab.workspace / name for name in lab.lab.edit),
             *(lab.lab.solution / name for name in lab.lab.edit)]
    for file in dict.fromkeys(files):
        if not file.is_file():
            continue
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            for match in _PORT_MENTION.finditer(line):
                port = int(next(group for group in match.groups() if group))
                # An ephemeral port (a client's end of a connection, in shown output) is no lab's.
                if port not in declared and port < EPHEMERAL_PORTS:
                    yield (file, number, f"names port {port}, which lab.yaml does not declare (its ports: {shown})",
                           "write one of the lab's ports here, or declare this one in lab.yaml's `ports`")


# --- repeated text -----------------------------------------------------------------

def _fold(text: str, first_line: int) -> tuple[str, list[int]]:
    """TEXT with every run of whitespace made one space, and the line of each character."""
    chars: list[str] = []
    lines: list[int] = []
    line, space = first_line, False
    for char in text:
        if char.isspace():
            space = bool(chars)
            line += char == "\n"
            continue
        if space:
            chars.append(" ")
            lines.append(line)
            space = False
        chars.append(char)
        lines.append(line)
    return "".join(chars), lines


def _repeated(hint: str, texts: list[tuple[str, int]]) -> int | None:
    """The line where REPEAT_CHARS characters of HINT (whitespace folded) appear in TEXTS."""
    folded_hint = " ".join(hint.split())
    windows = [folded_hint[i:i + REPEAT_CHARS] for i in range(len(folded_hint) - REPEAT_CHARS + 1)]
    for text, first_line in texts:
        if len(text) < REPEAT_CHARS:
            continue
        folded, lines = _fold(text, first_line)
        for window in windows:
            at = folded.find(window)
            if at >= 0:
                return lines[at]
    return None
