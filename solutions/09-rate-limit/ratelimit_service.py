"""Lab 09 — the rate-limit service, solved (steps 3, 4 and 6 of the README).

Envoy asks this service, for every request, whether it may pass: the request's
descriptors arrive over gRPC (envoy.service.ratelimit.v3.RateLimitService), and the
service answers OK or OVER_LIMIT. It reads its limits from a YAML file in the format
of envoyproxy/ratelimit, and counts hits in Redis, so that every replica of the
service (and every Envoy behind them) shares one count per window.

    python ratelimit_service.py --config limits.yaml --port 18081 --redis 127.0.0.1:16379
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import redis
import yaml
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("ratelimit")

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
Code = rls_pb2.RateLimitResponse.Code


# -- the limits file (given) ------------------------------------------------------------

@dataclass
class Limit:
    requests_per_unit: int
    unit: str                      # second, minute, hour or day

    @property
    def seconds(self) -> int:
        return UNITS[self.unit]


@dataclass
class Node:
    """One entry of the descriptor tree: its limit (if any) and the nodes below it,
    found by "key_value" (a specific value) or by "key" alone (any value)."""

    limit: Limit | None = None
    children: dict[str, "Node"] = field(default_factory=dict)


def load_limits(path: str) -> tuple[str, dict[str, Node]]:
    """The domain and the top-level nodes of a limits file."""
    with open(path) as file:
        document = yaml.safe_load(file)
    return document["domain"], _nodes(document.get("descriptors") or [])


def _nodes(entries: list[dict]) -> dict[str, Node]:
    nodes = {}
    for entry in entries:
        name = entry["key"] if entry.get("value") is None else f"{entry['key']}_{entry['value']}"
        limit = entry.get("rate_limit")
        nodes[name] = Node(
            limit=Limit(int(limit["requests_per_unit"]), str(limit["unit"]).lower()) if limit else None,
            children=_nodes(entry.get("descriptors") or []),
        )
    return nodes


# -- step 3: which limit applies to a descriptor ------------------------------------------

def find_limit(tree: dict[str, Node], entries: list[tuple[str, str]]) -> Limit | None:
    """The limit for a descriptor (its ENTRIES, in order), or None if it has none."""
    nodes = tree
    for depth, (key, value) in enumerate(entries):
        node = nodes.get(f"{key}_{value}") or nodes.get(key)
        if node is None:
            return None
        if depth == len(entries) - 1:
            return node.limit
        nodes = node.children
    return None


# -- step 4: counting, in Redis ---------------------------------------------------------------

# INCR and EXPIRE in one step: no other client runs between them.
_INCR_AND_EXPIRE = """
local hits = redis.call('INCRBY', KEYS[1], ARGV[1])
if hits == tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return hits
"""


def count_hit(client: redis.Redis, key: str, hits: int, ttl_seconds: int) -> int:
    """Add HITS to the counter KEY; the count after adding."""
    return int(client.eval(_INCR_AND_EXPIRE, 1, key, hits, ttl_seconds))


# -- step 6: a Redis client that fails fast ------------------------------------------------------

def connect_redis(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))


# -- the service (given) -----------------------------------------------------------------------

def cache_key(domain: str, entries: list[tuple[str, str]], window_start: int) -> str:
    """The Redis key of one descriptor's counter in one window, as envoyproxy/ratelimit
    names it: ingress_user_alice_1764600000."""
    return "_".join([domain, *(f"{k}_{v}" for k, v in entries), str(window_start)])


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, domain: str, tree: dict[str, Node], client: redis.Redis):
        self.domain, self.tree, self.redis = domain, tree, client

    def ShouldRateLimit(self, request, context):
        if request.domain != self.domain:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown domain {request.domain!r}")
        hits = request.hits_addend or 1
        now = time.time()
        response = rls_pb2.RateLimitResponse(overall_code=Code.OK)
        for descriptor in request.descriptors:
            entries = [(entry.key, entry.value) for entry in descriptor.entries]
            limit = find_limit(self.tree, entries)
            if limit is None:
                response.statuses.add(code=Code.OK)
                continue
            window_start = int(now // limit.seconds * limit.seconds)
            try:
                count = count_hit(self.redis, cache_key(self.domain, entries, window_start), hits, limit.seconds)
            except redis.RedisError as error:
                # Not ours to decide: Envoy's failure_mode_deny says what an error means.
                log.warning("redis: %s", error)
                context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {error}")
            over = count > limit.requests_per_unit
            status = response.statuses.add(
                code=Code.OVER_LIMIT if over else Code.OK,
                current_limit=rls_pb2.RateLimitResponse.RateLimit(
                    requests_per_unit=limit.requests_per_unit, unit=Unit.Value(limit.unit.upper())),
                limit_remaining=max(limit.requests_per_unit - count, 0),
            )
            status.duration_until_reset.FromNanoseconds(int((window_start + limit.seconds - now) * 1e9))
            if over:
                response.overall_code = Code.OVER_LIMIT
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the limits file (envoyproxy/ratelimit's format)")
    parser.add_argument("--port", type=int, required=True, help="the gRPC port, on 127.0.0.1")
    parser.add_argument("--redis", required=True, help="Redis as HOST:PORT")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

    domain, tree = load_limits(options.config)
    # gRPC shares a port with any other process by default (SO_REUSEPORT): a second copy
    # of this service would answer half the calls, silently. Off, it cannot start.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=[("grpc.so_reuseport", 0)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
        RateLimitService(domain, tree, connect_redis(options.redis)), server)
    try:
        server.add_insecure_port(f"127.0.0.1:{options.port}")
    except RuntimeError:
        raise SystemExit(f"ratelimit: cannot listen on 127.0.0.1:{options.port}: the port is in use "
                         f"(`ss -ltnp | grep {options.port}` shows by what)") from None
    server.start()
    log.info("serving domain %r on 127.0.0.1:%d, counting in Redis at %s", domain, options.port, options.redis)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
