"""Lab 09 graded for real (two Envoys, two service replicas, real Redis): the starter
fails, the solution passes, services and Envoy configs that only look right fail the
checks they should, and unusual correct ones pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab_variants import fails_only, passes

pytestmark = [
    pytest.mark.lab_runs,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="lab 09 needs redis-server"),
]

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "09-rate-limit"
SERVICE = (SOLUTION / "ratelimit_service.py").read_text()
ENVOYS = {name: (SOLUTION / name).read_text() for name in ("envoy-a.yaml", "envoy-b.yaml")}
CHECKS = {
    "test_global_limit", "test_counts_in_redis", "test_descriptors_counted_separately",
    "test_unmatched_not_limited", "test_window_resets", "test_ratelimit_headers",
    "test_fast_without_redis", "test_redis_down", "test_service_down",
}
COUNT_BODY = "    return int(client.eval(_INCR_AND_EXPIRE, 1, key, hits, ttl_seconds))\n"


def service(old: str, new: str) -> dict[str, str]:
    assert old in SERVICE, old
    return {"ratelimit_service.py": SERVICE.replace(old, new)}


def both_envoys(old: str, new: str) -> dict[str, str]:
    for text in ENVOYS.values():
        assert old in text, old
    return {name: text.replace(old, new) for name, text in ENVOYS.items()}


# -- plausible but wrong ------------------------------------------------------------------

def test_a_counter_per_process(grade):
    # Each replica counts in its own memory: each Envoy admits the full limit, and
    # without Redis nothing notices.
    files = service(COUNT_BODY, "    COUNTS[key] = COUNTS.get(key, 0) + hits\n    return COUNTS[key]\n")
    files["ratelimit_service.py"] = files["ratelimit_service.py"].replace(
        "def count_hit(", "COUNTS: dict[str, int] = {}\n\n\ndef count_hit(")
    checks = fails_only(grade, 9, files, {"test_global_limit", "test_counts_in_redis",
                                          "test_fast_without_redis", "test_redis_down"})
    assert "each Envoy let 5 through" in checks["test_global_limit"]["message"]
    assert "own count" in checks["test_global_limit"]["hint"]
    assert "no key" in checks["test_counts_in_redis"]["message"]


def test_get_then_set_under_concurrent_load(grade):
    files = service(COUNT_BODY, "    count = int(client.get(key) or 0) + hits\n"
                                "    client.set(key, count, ex=ttl_seconds)\n    return count\n")
    # The count in Redis always falls short of the requests sent: that check decides.
    # Whether the lost updates also let more than the limit through depends on how the
    # requests interleave, so the limit check may pass; when it fails, its hint names
    # the race, even when one Envoy happened never to be refused (its requests sent one
    # at a time are limited: its descriptors are right).
    checks = fails_only(grade, 9, files, {"test_counts_in_redis"},
                        may_fail={"test_global_limit"})
    if checks["test_global_limit"]["status"] != "pass":
        hint = checks["test_global_limit"]["hint"]
        assert "not atomic" in hint, hint
    assert "lost" in checks["test_counts_in_redis"]["hint"]


def test_envoy_b_asking_the_replica_of_envoy_a(grade):
    # envoy-b.yaml copied from envoy-a.yaml, the service's port left as it was: every
    # count is right (one replica answers both Envoys), but the replicas were never
    # shown to agree. Stopping ratelimit-a leaves envoy-b unanswered too.
    files = {"envoy-b.yaml": ENVOYS["envoy-b.yaml"].replace("port_value: 18082", "port_value: 18081")}
    assert files["envoy-b.yaml"] != ENVOYS["envoy-b.yaml"]
    checks = fails_only(grade, 9, files, {"test_service_down"})
    down = checks["test_service_down"]
    assert "envoy-b was not answered either: it asks ratelimit-a, not ratelimit-b" in down["message"], down
    assert "leads to port 18081" in down["received"] and "127.0.0.1:18082" in down["hint"], down


def test_descriptor_key_that_the_limits_do_not_know(grade):
    # Envoy sends ("x-user-id", <id>): no node of limits.yaml matches, so users are
    # silently unlimited; the service itself is right (asked directly, it answers an error
    # without Redis) and both Envoys fail as configured when it is gone.
    files = both_envoys("descriptor_key: user", "descriptor_key: x-user-id")
    checks = fails_only(grade, 9, files, CHECKS - {"test_fast_without_redis", "test_service_down"})
    assert "descriptor key `user`" in checks["test_global_limit"]["hint"]


def test_one_envoy_with_a_descriptor_key_the_limits_do_not_know(grade):
    # Only envoy-b is wrong: its half of each burst passes, and only envoy-a's half is
    # counted. The checks must blame envoy-b's descriptors, not an atomicity race.
    files = {"envoy-b.yaml": ENVOYS["envoy-b.yaml"].replace("descriptor_key: user }", "descriptor_key: users }")}
    assert files["envoy-b.yaml"] != ENVOYS["envoy-b.yaml"]
    checks = fails_only(grade, 9, files, {"test_global_limit", "test_counts_in_redis", "test_ratelimit_headers",
                                          "test_redis_down"})
    assert "envoy-b let all 12" in checks["test_global_limit"]["message"], checks["test_global_limit"]
    for cid in ("test_global_limit", "test_counts_in_redis", "test_ratelimit_headers"):
        assert "no limit for envoy-b's descriptors" in checks[cid]["hint"], checks[cid]
    assert "compare the rate_limits" in checks["test_redis_down"]["hint"].lower(), checks["test_redis_down"]


ENVOY_A_FAILS = {"test_global_limit", "test_counts_in_redis", "test_descriptors_counted_separately",
                 "test_unmatched_not_limited", "test_window_resets", "test_ratelimit_headers"}


def test_a_grpc_service_naming_no_cluster(grade):
    # Envoy would start, and every call of envoy-a fail (open): preflight names the line
    # before anything starts, with the cluster meant.
    files = {"envoy-a.yaml": ENVOYS["envoy-a.yaml"].replace("cluster_name: ratelimit }", "cluster_name: rate-limit }")}
    assert files["envoy-a.yaml"] != ENVOYS["envoy-a.yaml"]
    line = next(n for n, text in enumerate(files["envoy-a.yaml"].splitlines(), 1) if "cluster_name: rate-limit" in text)
    code, checks, data = grade(9, files=files)
    assert code == 2 and not checks, data
    assert f"envoy-a.yaml:{line}:" in data["error"]["where"], data["error"]
    assert "did you mean 'ratelimit'?" in data["error"]["fix"], data["error"]


def test_a_service_cluster_without_http2(grade):
    http2 = ("      typed_extension_protocol_options:\n"
             "        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
             "          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
             "          explicit_http_config:\n"
             "            http2_protocol_options: {}\n")
    assert http2 in ENVOYS["envoy-a.yaml"]
    checks = fails_only(grade, 9, {"envoy-a.yaml": ENVOYS["envoy-a.yaml"].replace(http2, "")}, ENVOY_A_FAILS)
    assert "speaks HTTP/1.1 to a gRPC service" in checks["test_global_limit"]["hint"]


def test_a_service_that_raises(grade):
    # A NameError in find_limit: gRPC answers UNKNOWN, both Envoys count errors. The
    # scorecard names the learner's error (its file and line), not the filter's timeout.
    # Once the traceback is in the service's log, the checks after it name it at once.
    code, checks, data = grade(9, files=service("    nodes = tree\n", "    nodes = trees\n"))
    assert code == 1 and all(c["status"] == "fail" for c in checks.values()), data
    first = checks["test_global_limit"]
    said = " ".join(str(first[k] or "") for k in ("message", "received", "hint"))
    assert "NameError" in said and "ratelimit_service.py" in said, first
    named = [c for c in checks.values() if "raised NameError at ratelimit_service.py:" in (c["message"] or "")]
    assert named, {cid: c["message"] for cid, c in checks.items()}


def test_counter_without_expiry(grade):
    checks = fails_only(grade, 9, service(COUNT_BODY, "    return int(client.incrby(key, hits))\n"),
                        {"test_counts_in_redis"})
    assert "never expires" in checks["test_counts_in_redis"]["message"]


def test_key_alone_wins_over_key_and_value(grade):
    files = service('node = nodes.get(f"{key}_{value}") or nodes.get(key)',
                    'node = nodes.get(key) or nodes.get(f"{key}_{value}")')
    checks = fails_only(grade, 9, files, {"test_descriptors_counted_separately"})
    assert "batch-job got the limit of `user` alone" in checks["test_descriptors_counted_separately"]["hint"]


def test_redis_client_with_its_default_retries(grade):
    files = service("    return redis.Redis(host=host, port=int(port), socket_connect_timeout=0.2, socket_timeout=0.2,\n"
                    "                       retry=Retry(NoBackoff(), 0))\n",
                    "    return redis.Redis(host=host, port=int(port))\n")
    # Envoy's timeout hides the slowness from the failure modes; only the direct question notices.
    checks = fails_only(grade, 9, files, {"test_fast_without_redis"})
    assert "too long" in checks["test_fast_without_redis"]["message"]


# -- unusual but correct --------------------------------------------------------------------

def test_multi_exec_route_level_actions_and_a_recursive_matcher(grade):
    files = service(COUNT_BODY, "    with client.pipeline(transaction=True) as pipe:\n"
                                "        pipe.incrby(key, hits)\n"
                                "        pipe.expire(key, ttl_seconds, nx=True)\n"
                                "        count, _ = pipe.execute()\n"
                                "    return int(count)\n")
    matcher = SERVICE[SERVICE.index("    nodes = tree\n"):SERVICE.index("\n\n# -- step 4")]
    files["ratelimit_service.py"] = files["ratelimit_service.py"].replace(matcher, (
        "    if not entries:\n        return None\n"
        "    key, value = entries[0]\n"
        "    node = tree.get(key + '_' + value, tree.get(key))\n"
        "    if node is None:\n        return None\n"
        "    return node.limit if len(entries) == 1 else find_limit(node.children, entries[1:])\n"))
    assert "pipe.execute()" in files["ratelimit_service.py"] and "find_limit(node.children" in files["ratelimit_service.py"]
    # The actions on the route instead of the virtual host.
    vh_actions = ("                      rate_limits:\n"
                  "                        - actions:\n"
                  "                            - request_headers: { header_name: x-user-id, descriptor_key: user }\n"
                  "                        - actions:\n"
                  "                            - request_headers: { header_name: \":path\", descriptor_key: path }\n")
    for name, text in ENVOYS.items():
        assert vh_actions in text
        route_actions = "\n".join("      " + line if line else line for line in vh_actions.splitlines()) + "\n"
        files[name] = text.replace(vh_actions, "").replace(
            "                          route: { cluster: app }\n",
            "                          route:\n                            cluster: app\n" + route_actions)
    passes(grade, 9, files)
