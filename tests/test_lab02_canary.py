"""Lab 02 graded for real: setups that only look right (50/50, 80/20, a header route in
the wrong place or matching mere presence, a mirror that copies everything, answers
from v2, or sits on the wrong route) fail the check they should, and unusual correct
ones (weights 9/1 and 900/100, a regex header match, a mirror fraction out of ten
thousand without the -shadow suffix) pass. tests/test_course_proves_itself.py grades
the starter and the solution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lab_variants import fails_only, passes

pytestmark = pytest.mark.lab_runs

SOLUTION = (Path(__file__).resolve().parents[1] / "solutions" / "02-canary" / "envoy.yaml").read_text()
# The solution around its route list, so tests can put routes of their own in between.
HEAD = SOLUTION[:SOLUTION.index("              routes:\n") + len("              routes:\n")]
TAIL = SOLUTION[SOLUTION.index("          http_filters:"):]
EVERY_CHECK = {"test_weighted_split", "test_header_route", "test_mirroring"}


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


def test_the_routes_rebuilt_here_are_the_solution():
    rebuilt = config(mirror_route(), header_route(), split_route())["envoy.yaml"]
    assert yaml.safe_load(rebuilt) == yaml.safe_load(SOLUTION)


def test_fifty_fifty_a_presence_match_and_a_full_mirror_fail(grade):
    checks = fails_only(grade, 2, config(mirror_route(numerator=0), header_route("present_match: true"),
                                         split_route(50, 50)), EVERY_CHECK)
    split = checks["test_weighted_split"]
    assert "exact binomial test" in split["expected"] and "interval" in split["received"]
    assert "x-canary: false went to v2" in checks["test_header_route"]["message"]
    assert "were mirrored to v2" in checks["test_mirroring"]["message"]


def test_eighty_twenty_a_late_header_route_and_a_split_checkout_fail(grade):
    checks = fails_only(grade, 2, config(split_route(50, 50, prefix="/checkout"), split_route(80, 20),
                                         header_route()), EVERY_CHECK)
    assert "not about 10 %" in checks["test_weighted_split"]["message"]
    assert "in order" in checks["test_header_route"]["hint"]
    assert "got answers from v2" in checks["test_mirroring"]["message"]


def test_a_mirror_on_the_catch_all_route_fails_the_split_and_the_mirror(grade):
    copy_all = ("                  request_mirror_policies:\n"
                "                  - cluster: v2\n")
    # Copies of the split check's requests may still be reaching v2 when the header
    # check counts what v2 received: whether that check fails too is chance.
    checks = fails_only(grade, 2, config(header_route(), split_route(extra=copy_all)),
                        {"test_weighted_split", "test_mirroring"}, may_fail={"test_header_route"})
    assert "mirrored copies" in checks["test_weighted_split"]["message"]


def test_unusual_correct_configurations_pass(grade):
    passes(grade, 2, config(
        mirror_route(5000, "TEN_THOUSAND", extra="                    disable_shadow_host_suffix_append: true\n"),
        header_route('string_match: { safe_regex: { regex: "^true$" } }'),
        split_route(9, 1)))
    passes(grade, 2, config(mirror_route(), header_route(), split_route(900, 100)))
