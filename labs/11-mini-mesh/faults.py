"""Lab 11, chaos: a running fault experiment (`node.faults`, from `meshlab chaos inject`)
as Envoy's HTTP fault filter, on the sidecars that CALL the faulty service (the outbound
side, like an Istio VirtualService's `fault`).

control_plane.py puts `http_filter()` in every outbound HTTP chain (before the router)
and gives each route of service NAME `typed_per_filter_config=per_route(node, NAME)`.

Each fault of `node.faults` has: service, abort_percent (or None), abort_status,
delay_ms (or None), delay_percent, route (a path prefix, or None), id, expires_at.
The control plane's scaffolding keeps the list and drops an experiment when it ends;
you only translate what is running now.
"""

from __future__ import annotations

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

FILTER = "envoy.filters.http.fault"


def http_filter() -> hcm.HttpFilter:
    """The fault filter with no fault of its own: routes may give it one."""
    holder = any_pb2.Any()
    holder.Pack(fault_pb2.HTTPFault())
    return hcm.HttpFilter(name=FILTER, typed_config=holder)


def per_route(node, service: str) -> dict[str, any_pb2.Any]:
    """The experiment on SERVICE as a route's `typed_per_filter_config`: {FILTER: an
    HTTPFault packed in an Any}; empty when none runs, so that clearing gives back
    exactly the configuration from before."""
    # TODO(step 6): for the experiment on SERVICE in node.faults, an HTTPFault with
    # abort (http_status, percentage as a FractionalPercent), delay (fixed_delay,
    # percentage) and, for a route, a header matcher on ":path" by prefix.
    return {}
