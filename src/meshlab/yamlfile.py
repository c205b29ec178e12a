"""YAML documents that remember where every value came from.

Envoy reports config errors by field path (`static_resources.clusters[0].type`); the
course manifests are checked by key. Both need the line a path lives on, so loading
keeps a map from path to position next to the data.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from meshlab.errors import Location, YamlSyntaxError

# A path into a document: mapping keys (str) and sequence indexes (int).
YamlPath = tuple[str | int, ...]


@dataclass
class YamlDoc:
    file: Path
    data: Any
    # Where each path starts: the key's position for mapping entries, the item's for
    # sequence entries (what an editor should jump to).
    positions: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def location(self, path: YamlPath) -> Location:
        """The closest known position of PATH, walking up to a parent if needed."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        line, column = self.positions.get(path, (1, 1))
        return Location(self.file, line, column)

    def get(self, path: YamlPath, default: Any = None) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def walk(self) -> Iterator[tuple[YamlPath, Any]]:
        """Every (path, value) pair, parents before children."""
        def visit(path: YamlPath, value: Any) -> Iterator[tuple[YamlPath, Any]]:
            yield path, value
            if isinstance(value, dict):
                for key, child in value.items():
                    yield from visit(path + (key,), child)
            elif isinstance(value, list):
                for index, child in enumerate(value):
                    yield from visit(path + (index,), child)
        yield from visit((), self.data)


def format_path(path: YamlPath) -> str:
    """`static_resources.clusters[0].type`, the way Envoy prints paths."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


# Lists that `recording` hands out: every file `load` reads is appended to each.
_recorders: list[list[Path]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[Path]]:
    """The files `load` reads within the block (meshlab.course_cache keys on them)."""
    files: list[Path] = []
    _recorders.append(files)
    try:
        yield files
    finally:
        _recorders.remove(files)


def load(file: Path, text: str | None = None) -> YamlDoc:
    """Parse FILE; a syntax error becomes a YamlSyntaxError with line and column."""
    file = Path(file)
    for files in _recorders:
        files.append(file)
    if text is None:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise YamlSyntaxError(f"{file} does not exist", where=Location(file),
                                  fix="create the file, or run `meshlab reset` to restore the starter") from None
        except UnicodeDecodeError as exc:
            raise YamlSyntaxError(f"{file} is not UTF-8 text ({exc.reason})", where=Location(file)) from None
    try:
        node, data = _parse(text, _FAST_LOADER)
    except yaml.YAMLError:  # parsed again, for the error in the words the fixes know
        try:
            node, data = _parse(text, yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(file, text, exc) from None
        except yaml.YAMLError as exc:  # errors without a position (rare)
            raise YamlSyntaxError(f"{file.name} is not valid YAML: {exc}", where=Location(file)) from None
    doc = YamlDoc(file=file, data=data)
    if node is not None:
        _index(node, (), doc.positions)
    return doc


# libyaml's parser, when PyYAML was built with it: the same nodes and marks, ten times
# faster (every command loads every lab.yaml). Its error texts differ from the pure
# Python parser's, which the fixes below match, so a broken file is parsed again.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, loader_class: type) -> tuple[yaml.Node | None, Any]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _syntax_error(file: Path, text: str, exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
    problem = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    fix = _syntax_fix(problem)
    opened = _runaway_quote(text, where.line)
    if opened is not None:
        # An unclosed quote runs on to the next line's quote; the error shows there.
        fix = (f"the quoted text that starts on line {opened} ends only on line {where.line}: "
               f"close its quote on line {opened}")
    return YamlSyntaxError(
        f"{file.name} is not valid YAML: {problem}{context}",
        where=where,
        fix=fix,
        details=_excerpt(text, where.line),
    )


def _index(node: yaml.Node, path: YamlPath, positions: dict) -> None:
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = path + (key,)
            positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _index(value_node, child, positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, path + (index,), positions)


def _runaway_quote(text: str, error_line: int | None) -> int | None:
    """The line on which a quoted scalar that spans lines up to ERROR_LINE starts: the
    mark of a quote left open (YAML lets a quoted string run over lines)."""
    if error_line is None:
        return None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            start, end = token.start_mark.line + 1, token.end_mark.line + 1
            if start > error_line:
                break
            if isinstance(token, yaml.ScalarToken) and token.style in ('"', "'") and start < end == error_line:
                return start
    except yaml.YAMLError:
        pass
    return None


def _syntax_fix(problem: str) -> str:
    if "tab" in problem or "'\\t'" in problem:
        return "indent with spaces; YAML does not allow tabs"
    if "mapping values are not allowed" in problem:
        return "a `key: value` is out of place; check the indentation of this line and the one above, " \
               "and quote values that contain ': '"
    if "expected <block end>" in problem or "did not find expected" in problem:
        return "check the indentation: items of one list or mapping must start in the same column"
    return "fix the YAML syntax at this position"


def _excerpt(text: str, line: int | None, around: int = 2) -> str | None:
    """A few numbered lines around LINE, with a marker on it."""
    if line is None:
        return None
    lines = text.splitlines()
    start, end = max(1, line - around), min(len(lines), line + around)
    width = len(str(end))
    return "\n".join(
        f"  {'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(start, end + 1)
    )
