"""Assertions for grading variants of a lab (with the `grade` fixture of conftest):
a wrong configuration must fail exactly the checks named, each with EXPECTED, RECEIVED
and a hint; a correct one must pass every check. Failures show each check's message.

    checks = fails_only(grade, 1, {"envoy.yaml": WRONG}, {"test_injected_header"})
    assert "went to the app" in checks["test_injected_header"]["message"]
    passes(grade, 1, {"envoy.yaml": UNUSUAL_BUT_RIGHT})
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fails_only(grade, number: int, files: dict[str, str], failing: set[str], *,
               may_fail: set[str] = frozenset()) -> dict:
    """Grade the solution of lab NUMBER with FILES replaced: exactly the checks FAILING
    fail (and perhaps some of MAY_FAIL, for a variant whose verdict there is chance: say
    why where it is used), each saying what it expected, what it got, and a hint.
    Returns the checks by id."""
    code, checks, data = grade(number, files=files)
    assert code == 1, data.get("message") or data
    # A skipped check did not run here (lab 01's Docker part on the local runtime).
    got = {cid for cid, c in checks.items() if c["status"] not in ("pass", "skip")}
    assert failing <= got <= failing | may_fail, \
        {cid: (checks[cid].get("message"), checks[cid].get("received")) for cid in got}
    for cid in got:
        assert checks[cid]["status"] == "fail", checks[cid]
        assert checks[cid]["expected"] and checks[cid]["received"] and checks[cid]["hint"], checks[cid]
    return checks


def passes(grade, number: int, files: dict[str, str] | None = None, *, path: Path | None = None) -> dict:
    """Grade the solution of lab NUMBER with FILES replaced (or the folder PATH): every
    check passes. Returns the checks by id."""
    code, checks, data = grade(number, files=files, path=path)
    failing = {cid: (c.get("message"), c.get("received")) for cid, c in checks.items()
               if c["status"] not in ("pass", "skip")}
    assert code == 0 and checks and not failing, failing or data
    return checks


def solution_edited(slug: str, name: str, *edits: tuple[str, str]) -> dict[str, str]:
    """{NAME: lab SLUG's solution file NAME with each (old, new) edit made}, for `files=`;
    every OLD must be in the text, so a changed solution cannot make an edit vanish."""
    text = (ROOT / "solutions" / slug / name).read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return {name: text}
