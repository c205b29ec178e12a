"""Assertions for grading variants of a lab (with the `grade` fixture of conftest):
a wrong configuration must fail exactly the checks named, each with EXPECTED, RECEIVED
and a hint; a correct one must pass every check. Failures show each check's message."""

from __future__ import annotations


def fails_only(grade, number: int, files: dict[str, str], failing: set[str]) -> dict:
    code, checks, data = grade(number, files=files)
    assert code == 1, data.get("message") or data
    got = {cid for cid, c in checks.items() if c["status"] != "pass"}
    assert got == failing, {cid: (checks[cid].get("message"), checks[cid].get("received")) for cid in got}
    for cid in failing:
        assert checks[cid]["expected"] and checks[cid]["received"] and checks[cid]["hint"], checks[cid]
    return checks


def passes(grade, number: int, files: dict[str, str]) -> dict:
    code, checks, data = grade(number, files=files)
    failing = {cid: (c.get("message"), c.get("received")) for cid, c in checks.items() if c["status"] != "pass"}
    assert code == 0 and not failing, failing or data
    return checks
