"""Lab 02 graded for real: the starter fails every check, the solution passes, setups
that only look right (50/50, 80/20, a header route in the wrong place or matching
mere presence, a mirror that copies everything, answers from v2, or sits on the wrong
route) fail the check they should, and unusual correct ones (weights 9/1 and 900/100,
a regex header match, a mirror fraction out of ten thousand without the -shadow
suffix) pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab_runs

SOLUTION = (Path(__file__).resolve().parents[1] / "solutions" / "02-canary" / "envoy.yaml").read_text()
# The solution around its route list, so tests can put routes of their own in between.
HEAD = SOLUTION[:SOLUTION.index("              routes:\n") + len("              routes:\n")]
TAIL = SOLUTION[SOLUTION.index("          http_filters:"):]
CHECKS = {"test_weighted_split", "test_header_route", "test_mirroring"}


def mirror_route(numerator: int = 50, denominator: str = "HUNDRED", extra: str = "") -> str:
    fraction = (f"                    runtime_fraction:\n"
                f"                      default_value: {{ numerator: {numerator}, denominator: {denominator} }}\n"
                if numerator else "")
    return ('              - match: { prefix: "/checkout" }\n'
            "                route:\n"
            "                  cluster: v1\n"
            "                  request_mirror_policies:\n"
            "                  - cluster: v2\n" + extra + fraction)


def header_route(matcher: str = 'string_match: { exact: "true" }') -> str:
    return ('              - match:\n'
            '                  prefix: "/"\n'
            "                  headers:\n"
            f"                  - name: x-canary\n"
            f"                    {matcher}\n"
            "                route: { cluster: v2 }\n")


def split_route(stable: int = 90, canary: int = 10, prefix: str = "/", extra: str = "") -> str:
    return (f'              - match: {{ prefix: "{prefix}" }}\n'
            "                route:\n"
            "                  weighted_clusters:\n"
            "                    clusters:\n"
            f"                    - {{ name: v1, weight: {stable} }}\n"
            f"                    - {{ name: v2, weight: {canary} }}\n" + extra)


def config(*routes: str) -> dict[str, str]:
    return {"envoy.yaml": HEAD + "".join(routes) + TAIL}


def failing(checks: dict[str, dict]) -> set[str]:
    return {cid for cid, c in checks.items() if c["status"] != "pass"}


def test_the_routes_rebuilt_here_are_the_solution():
    rebuilt = config(mirror_route(), header_route(), split_route())["envoy.yaml"]
    assert yaml.safe_load(rebuilt) == yaml.safe_load(SOLUTION)


def test_starter_fails_every_check_with_its_reason(grade):
    code, checks, _ = grade(2, base="starter")
    assert code == 1 and set(checks) == CHECKS and failing(checks) == CHECKS
    for check in checks.values():
        assert check["message"] and check["expected"] and check["received"] and check["hint"], check
    assert "canary got none" in checks["test_weighted_split"]["message"]
    assert "went to v1" in checks["test_header_route"]["message"]
    assert "no copy" in checks["test_mirroring"]["message"]


def test_solution_passes_every_check(grade):
    code, checks, data = grade(2, base="solution")
    assert code == 0, data
    assert failing(checks) == set()


def test_fifty_fifty_a_presence_match_and_a_full_mirror_fail(grade):
    code, checks, _ = grade(2, files=config(mirror_route(numerator=0), header_route("present_match: true"),
                                            split_route(50, 50)))
    assert code == 1 and failing(checks) == CHECKS
    split = checks["test_weighted_split"]
    assert "exact binomial test" in split["expected"] and "interval" in split["received"]
    assert "x-canary: false went to v2" in checks["test_header_route"]["message"]
    assert "were mirrored to v2" in checks["test_mirroring"]["message"]


def test_eighty_twenty_a_late_header_route_and_a_split_checkout_fail(grade):
    code, checks, _ = grade(2, files=config(split_route(50, 50, prefix="/checkout"), split_route(80, 20),
                                            header_route()))
    assert code == 1 and failing(checks) == CHECKS
    assert "not about 10 %" in checks["test_weighted_split"]["message"]
    assert "in order" in checks["test_header_route"]["hint"]
    assert "got answers from v2" in checks["test_mirroring"]["message"]


def test_a_mirror_on_the_catch_all_route_fails_the_split_and_the_mirror(grade):
    copy_all = ("                  request_mirror_policies:\n"
                "                  - cluster: v2\n")
    _, checks, _ = grade(2, files=config(header_route(), split_route(extra=copy_all)))
    assert failing(checks) == {"test_weighted_split", "test_mirroring"}
    assert "mirrored copies" in checks["test_weighted_split"]["message"]


def test_unusual_correct_configurations_pass(grade):
    code, _, data = grade(2, files=config(
        mirror_route(5000, "TEN_THOUSAND", extra="                    disable_shadow_host_suffix_append: true\n"),
        header_route('string_match: { safe_regex: { regex: "^true$" } }'),
        split_route(9, 1)))
    assert code == 0, data
    code, _, data = grade(2, files=config(mirror_route(), header_route(), split_route(900, 100)))
    assert code == 0, data
