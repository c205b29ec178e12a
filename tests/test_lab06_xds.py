"""Lab 06 graded for real: control planes that only look right fail the check they
should, unusual correct ones pass, and the learner's intent.yaml comes back exactly as
it was. tests/test_course_proves_itself.py grades the starter and the solution."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_variants import fails_only, passes, solution_edited

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]


def solution_with(*edits: tuple[str, str]) -> dict[str, str]:
    """The solution's control_plane.py with each (old, new) edit made."""
    return solution_edited("06-xds", "control_plane.py", *edits)


def test_a_fixed_version_never_reaches_envoy(grade):
    """Steps 1-4 done, step 5 not: the first snapshot works, no change ever arrives."""
    checks = fails_only(grade, 6, solution_with(('    return "intent-" + digest.hexdigest()[:10]', '    return "v1"')),
                        {"test_change_applied_without_restart", "test_nack_reported_while_traffic_flows"})
    change = checks["test_change_applied_without_restart"]
    assert "still does not reach green" in change["message"] and "step 5" in change["hint"]


def test_a_version_that_changes_when_nothing_changed_fails_the_unchanged_check(grade):
    """A timestamp for a version: every save pushes, even one that changed only a comment."""
    code, checks, _ = grade(6, files=solution_with(
        ("import logging\n", "import logging\nimport time\n"),
        ('    return "intent-" + digest.hexdigest()[:10]', '    return f"t{time.time_ns()}"')))
    assert code == 1
    assert {cid for cid, c in checks.items() if c["status"] != "pass"} == {"test_unchanged_intent_pushes_nothing"}
    failed = checks["test_unchanged_intent_pushes_nothing"]
    assert "made a new snapshot version" in failed["message"] and "step 5" in failed["hint"], failed
    assert failed["expected"] and failed["received"], failed


def test_a_late_reader_with_a_new_version_per_save_fails_the_unchanged_check(grade):
    """The check stops watching soon after the control plane has read the save: one that
    reads late (every 0.5 s) and then makes a new version of the same intent is still
    caught, as is one that digests the file's text, comments included."""
    code, checks, _ = grade(6, files=solution_with(
        ("async for text in watch_file(options.intent):", "async for text in watch_file(options.intent, interval=0.5):"),
        ("        apply(cache, text, options.intent)", "        LAST_TEXT[:] = [text]\n        apply(cache, text, options.intent)"),
        ('log = logging.getLogger("control-plane")', 'log = logging.getLogger("control-plane")\nLAST_TEXT: list = [""]'),
        ('    return "intent-" + digest.hexdigest()[:10]',
         '    return "text-" + hashlib.sha256(LAST_TEXT[0].encode()).hexdigest()[:10]')))
    assert code == 1
    failed = {cid for cid, c in checks.items() if c["status"] != "pass"}
    # Reading every 0.5 s may also miss the 1 s bound of the change check on a loaded machine.
    assert "test_unchanged_intent_pushes_nothing" in failed
    assert failed <= {"test_unchanged_intent_pushes_nothing", "test_change_applied_without_restart"}, checks
    assert "made a new snapshot version" in checks["test_unchanged_intent_pushes_nothing"]["message"]


def test_inline_routes_and_static_endpoints_fail_the_xds_check(grade):
    """Traffic flows, but routes do not come over RDS: the RDS/EDS check fails. A change
    then replaces the whole listener, and Envoy drains the old one gradually: the
    checker's kept-alive connection may stay on the old routes for seconds, so the
    checks that follow a change may fail too (whether they do is chance)."""
    checks = fails_only(grade, 6, solution_with(
        ("        rds=hcm.Rds(route_config_name=ROUTE_CONFIG_NAME, config_source=ads()),",
         "        route_config=build_route_configuration(CURRENT[0]),"),
        ("    manager = hcm.HttpConnectionManager(", "    CURRENT[:] = [intent]\n    manager = hcm.HttpConnectionManager("),
        ("    resources = [build_listener(intent), build_route_configuration(intent)]",
         "    resources = [build_listener(intent)]"),
        ('log = logging.getLogger("control-plane")', 'log = logging.getLogger("control-plane")\nCURRENT: list = []'),
    ), {"test_routes_and_endpoints_over_rds_and_eds"},
        may_fail={"test_change_applied_without_restart", "test_unchanged_intent_pushes_nothing",
                  "test_nack_reported_while_traffic_flows"})
    assert "not over RDS" in checks["test_routes_and_endpoints_over_rds_and_eds"]["message"]


def test_static_clusters_fail_the_eds_check(grade):
    checks = fails_only(grade, 6, solution_with(
        ("        type=cluster_pb2.Cluster.EDS,\n        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),",
         "        type=cluster_pb2.Cluster.STATIC,\n        load_assignment=build_load_assignment(service),"),
        ("        resources += [build_cluster(service), build_load_assignment(service)]",
         "        resources += [build_cluster(service)]"),
    ), {"test_routes_and_endpoints_over_rds_and_eds"})
    failed = checks["test_routes_and_endpoints_over_rds_and_eds"]
    assert "over EDS" in failed["message"] and "STATIC" in failed["received"]


def test_routes_in_reverse_order_fail_the_route_check(grade):
    """The catch-all "/" first: Envoy takes the first match, so / works and /shop never
    reaches shop. Only traffic down every route of the intent tells."""
    reversed_routes = solution_with(("    ) for route in intent.routes]", "    ) for route in reversed(intent.routes)]"))
    checks = fails_only(grade, 6, reversed_routes, {"test_routes_and_endpoints_over_rds_and_eds"})
    failed = checks["test_routes_and_endpoints_over_rds_and_eds"]
    assert "/shop/meshlab-route-probe did not go to service shop" in failed["message"], failed
    assert "in order" in failed["hint"]


def test_ignored_weights_fail_the_weights_check(grade):
    checks = fails_only(grade, 6, solution_with(
        ("                load_balancing_weight=wrappers_pb2.UInt32Value(value=e.weight),\n", "")),
        {"test_endpoint_weights"})
    assert "weight 1, 127.0.0.1:8082 weight 1" in checks["test_endpoint_weights"]["received"]


def test_a_listener_on_every_address_fails_the_listener_check(grade):
    checks = fails_only(grade, 6, solution_with(('            address="127.0.0.1", port_value=intent.listener_port',
                                                 '            address="0.0.0.0", port_value=intent.listener_port')),
                        {"test_listener_arrives_over_xds"})
    assert "listens on 0.0.0.0" in checks["test_listener_arrives_over_xds"]["message"]


def test_a_control_plane_that_filters_bad_ports_shows_no_nack(grade):
    checks = fails_only(grade, 6, solution_with(
        ("            ) for e in service.endpoints])],", "            ) for e in service.endpoints if e.port < 65536])],")),
        {"test_nack_reported_while_traffic_flows"})
    assert "rejected nothing" in checks["test_nack_reported_while_traffic_flows"]["message"]


def test_unusual_but_correct_control_planes_pass(grade):
    """The delta protocol, a counter for a version, other names: all fine."""
    files = solution_with(
        ("def snapshot_version(resources: list[Message]) -> str:",
         "VERSIONS: dict[bytes, int] = {}\n\n\ndef snapshot_version(resources: list[Message]) -> str:"),
        ('    return "intent-" + digest.hexdigest()[:10]',
         '    return f"release-{VERSIONS.setdefault(digest.digest(), len(VERSIONS) + 1)}"'),
        ('LISTENER_NAME = "ingress"', 'LISTENER_NAME = "front-door"'),
        ('ROUTE_CONFIG_NAME = "routes"', 'ROUTE_CONFIG_NAME = "lab06-routes"'),
        ("        name=service.name,\n        type=", "        name=f\"svc-{service.name}\",\n        type="),
        ("        route=route_components_pb2.RouteAction(cluster=route.service),",
         "        route=route_components_pb2.RouteAction(cluster=f\"svc-{route.service}\"),"),
        ("        cluster_name=service.name,", "        cluster_name=f\"svc-{service.name}\","),
    )
    envoy = (ROOT / "labs/06-xds/envoy.yaml").read_text().replace("api_type: GRPC", "api_type: DELTA_GRPC")
    passes(grade, 6, {**files, "envoy.yaml": envoy})


def test_the_learners_intent_comes_back_exactly(grade, lab_copy):
    """Whatever intent the learner left (here: / sent to shop), the checks run on their
    own, and the file is given back byte for byte, with its modification time."""
    folder = lab_copy(6, base="solution")
    intent = folder / "intent.yaml"
    intent.write_text(intent.read_text().replace("    service: blue", "    service: shop"))
    before = (intent.read_bytes(), intent.stat().st_mtime_ns, intent.stat().st_mode)
    passes(grade, 6, path=folder)
    assert (intent.read_bytes(), intent.stat().st_mtime_ns, intent.stat().st_mode) == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_a_control_plane_that_raises_is_named_with_its_traceback_at_once(grade):
    """A bug in a build_* function: the control plane logs the traceback and keeps
    serving nothing. The checks say so, with the learner's line, without waiting."""
    bad = '    address = int("127.0.0.1")  # a learner\'s slip\n'
    files = solution_with(('    manager = hcm.HttpConnectionManager(\n        stat_prefix=LISTENER_NAME,',
                           bad + '    manager = hcm.HttpConnectionManager(\n        stat_prefix=LISTENER_NAME,'))
    line = files["control_plane.py"].splitlines().index(bad.rstrip("\n")) + 1
    code, checks, _ = grade(6, files=files)
    assert code == 1
    first = checks["test_listener_arrives_over_xds"]
    assert first["status"] == "fail"
    assert f"your control plane raised ValueError at control_plane.py:{line}" in first["message"], first
    assert "build_listener" in first["received"] and "invalid literal for int()" in first["received"], first
    assert first["duration"] < 3, first["duration"]
    assert {cid for cid, c in checks.items() if c["status"] == "fail"} == set(checks)
    assert sum(c["duration"] for c in checks.values()) < 10
