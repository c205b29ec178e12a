"""Lab 11, chaos: a running fault experiment (`node.faults`, from `meshlab chaos inject`)
as Envoy's HTTP fault filter, on the sidecars that CALL the faulty service (the outbound
side, like an Istio VirtualService's `fault`).

The filter sits in every outbound HTTP chain with nothing to do, and an experiment is a
per-route setting in RDS. A route update reaches the connections the app already keeps
open; a changed listener would not (its old filter chain serves them until they close).
Without an experiment the routes carry no setting: clearing gives back exactly the
configuration from before, and the same snapshot version.

    http_filters=[faults.http_filter(), router()]                              # the listener
    Route(match=..., route=..., typed_per_filter_config=faults.per_route(node, name))  # each route

Shares are in millionths: 0.5 % is 5,000 per million, which a share of 100 cannot say.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2

FILTER = "envoy.filters.http.fault"


def http_filter() -> hcm.HttpFilter:
    """The fault filter with no fault of its own: routes may give it one."""
    return hcm.HttpFilter(name=FILTER, typed_config=_pack(fault_pb2.HTTPFault()))


def per_route(node, service: str) -> dict[str, any_pb2.Any]:
    """The experiment on SERVICE as a route's `typed_per_filter_config` (empty without one)."""
    running = [fault for fault in node.faults if fault.service == service]
    return {FILTER: _pack(_config(running[-1]))} if running else {}


def _share(percent: float) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def _config(fault) -> fault_pb2.HTTPFault:
    config = fault_pb2.HTTPFault()
    if fault.abort_percent is not None:
        config.abort.CopyFrom(fault_pb2.FaultAbort(http_status=fault.abort_status,
                                                   percentage=_share(fault.abort_percent)))
    if fault.delay_ms is not None:
        config.delay.CopyFrom(common_fault.FaultDelay(
            fixed_delay=duration_pb2.Duration(seconds=fault.delay_ms // 1000, nanos=fault.delay_ms % 1000 * 1_000_000),
            percentage=_share(fault.delay_percent)))
    if fault.route is not None:
        config.headers.append(route_components_pb2.HeaderMatcher(
            name=":path", string_match=string_pb2.StringMatcher(prefix=fault.route)))
    return config


def _pack(message) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder
