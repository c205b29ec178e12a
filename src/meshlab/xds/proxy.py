"""An Envoy whose whole configuration comes from an xDS server: a bootstrap with the
node, the admin API, the xDS server's cluster and `dynamic_resources`, nothing else.

    with DynamicEnvoy("node-1", xds_port=server.port, workdir=tmp) as envoy:
        envoy.admin.listeners()

The admin API binds an ephemeral port (Envoy writes it to a file we read), so any
number of these run side by side, next to the labs. The process dies with ours.
"""

from __future__ import annotations

import json
from pathlib import Path

from meshlab.envoy import EnvoyProcess

XDS_CLUSTER = "xds"


def dynamic_bootstrap(node_id: str, xds_port: int, *, delta: bool = False, node_cluster: str = "meshlab",
                      xds_host: str = "127.0.0.1") -> dict:
    """Envoy's bootstrap for a proxy configured entirely over ADS (as JSON data)."""
    source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    # Reconnect quickly when the control plane comes back (default: from 0.5 s up to 30 s).
                    "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}},
                }}],
            },
            "cds_config": source,
            "lds_config": source,
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            # gRPC needs HTTP/2 to the control plane.
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }},
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}}}]}]},
        }]},
    }


class DynamicEnvoy(EnvoyProcess):
    """An Envoy started from `dynamic_bootstrap`; ready once its admin API answers (its
    listeners come later, from the control plane)."""

    def __init__(self, node_id: str, *, xds_port: int, workdir: Path, delta: bool = False,
                 concurrency: int = 1, ready_timeout: float = 15.0):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        bootstrap = workdir / f"{node_id}.json"
        bootstrap.write_text(json.dumps(dynamic_bootstrap(node_id, xds_port, delta=delta), indent=2))
        super().__init__(bootstrap, workdir=workdir, name=node_id, concurrency=concurrency, live=False,
                         ready_timeout=ready_timeout)
        self.node_id = node_id
        self.bootstrap = bootstrap
