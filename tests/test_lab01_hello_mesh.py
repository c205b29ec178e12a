"""Lab 01 graded for real: configurations that only look right fail the check they
should, and unusual correct ones pass (tests/test_course_proves_itself.py grades the
starter and the solution)."""

from __future__ import annotations

import pytest
from lab_variants import fails_only, passes

pytestmark = pytest.mark.lab_runs


def solution_text(course) -> str:
    return (course.find(1).solution / "envoy.yaml").read_text()


def variant(course, *replacements: tuple[str, str]) -> str:
    text = solution_text(course)
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


ROUTE = "                route: { cluster: app }\n"
HEADER = "              - header: { key: x-my-injected-header, value: envoy-was-here }\n"

# Configurations that look right and are not. Each must fail exactly the checks named,
# and pass the others (a check that fails for the wrong reason teaches the wrong thing).
WRONG = {
    "direct_response imitating the app": (
        [(ROUTE, '                direct_response: { status: 200, body: { inline_string: "Hello from the Python '
                 'App!" } }\n')],
        {"test_greeting_through_envoy", "test_injected_header", "test_server_is_envoy",
         "test_upstream_service_time", "test_cluster_counters", "test_503_when_app_down"},
        "never reached the app"),
    "header added to the request instead of the response": (
        [("              response_headers_to_add:\n", "              request_headers_to_add:\n")],
        {"test_injected_header"},
        "went to the app with the request"),
    "listener on every interface": (
        [("address: 127.0.0.1, port_value: 10000", "address: 0.0.0.0, port_value: 10000")],
        {"test_listener_on_loopback"},
        "accepts connections from every network"),
    "cluster pointing at the wrong port": (
        [("port_value: 8080", "port_value: 8081")],
        {"test_greeting_through_envoy", "test_injected_header", "test_server_is_envoy",
         "test_upstream_service_time", "test_cluster_counters", "test_503_when_app_down"},
        "never reached the app"),
    "misspelled header name": (
        [("key: x-my-injected-header,", "key: x-my-injected-headers,")],
        {"test_injected_header"},
        "lacks x-my-injected-header"),
    "a server name of its own": (
        [("stat_prefix: ingress_http\n", "stat_prefix: ingress_http\n          server_name: my-proxy\n")],
        {"test_server_is_envoy"},
        "has another server"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_plausible_wrong_configs_fail_the_right_checks(grade, course, case):
    replacements, failing, message = WRONG[case]
    checks = fails_only(grade, 1, {"envoy.yaml": variant(course, *replacements)}, failing)
    assert message in " ".join(c["message"] or "" for c in checks.values())


LUA_HEADER = '''\
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  function envoy_on_response(response_handle)
                    response_handle:headers():add("x-my-injected-header", "envoy-was-here")
                  end
'''

# Unusual but correct: each must pass every check.
CORRECT = {
    "another cluster name, header on the route configuration, an extra route": [
        ("route: { cluster: app }", "route: { cluster: python_app }"),
        ("  - name: app\n    connect_timeout", "  - name: python_app\n    connect_timeout"),
        ("      cluster_name: app", "      cluster_name: python_app"),
        ("            name: local_route\n", "            name: local_route\n            response_headers_to_add:\n"
                                            "            - header: { key: x-my-injected-header, value: envoy-was-here }\n"),
        ("              response_headers_to_add:\n" + HEADER, ""),
        ("              - match: { prefix: \"/\" }\n",
         "              - match: { path: \"/ready\" }\n                direct_response: { status: 200 }\n"
         "              - match: { prefix: \"/\" }\n"),
    ],
    "header added by a Lua filter": [
        ("              response_headers_to_add:\n" + HEADER, ""),
        ("          http_filters:\n", "          http_filters:\n" + LUA_HEADER),
    ],
    "a DNS cluster resolving localhost over IPv4": [
        ("    type: STATIC\n", "    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n"),
        ("socket_address: { address: 127.0.0.1, port_value: 8080 }",
         "socket_address: { address: localhost, port_value: 8080 }"),
    ],
}


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_unusual_correct_configs_pass(grade, course, case):
    passes(grade, 1, {"envoy.yaml": variant(course, *CORRECT[case])})
