"""An Envoy whose whole configuration comes from an xDS server: a bootstrap with the
node, the admin API, the xDS server's cluster and `dynamic_resources`, nothing else.

    with DynamicEnvoy("node-1", xds_port=server.port, workdir=tmp) as envoy:
        envoy.admin.listeners()

The admin API binds an ephemeral port (Envoy writes it to a file we read), so any
number of these run side by side, next to the labs. The process dies with ours.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from meshlab.envoy import Admin, find_binary
from meshlab.errors import ServiceFailed
from meshlab.runtime import processes

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


class DynamicEnvoy:
    def __init__(self, node_id: str, *, xds_port: int, workdir: Path, delta: bool = False,
                 concurrency: int = 1, ready_timeout: float = 15.0):
        self.node_id = node_id
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap = self.workdir / f"{node_id}.json"
        self.bootstrap.write_text(json.dumps(dynamic_bootstrap(node_id, xds_port, delta=delta), indent=2))
        self.log_path = self.workdir / f"{node_id}.log"
        self._address_file = self.workdir / f"{node_id}.admin-address"
        self.concurrency = concurrency
        self.ready_timeout = ready_timeout
        self.admin: Admin | None = None
        self._popen = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    def start(self) -> "DynamicEnvoy":
        self._address_file.unlink(missing_ok=True)
        argv = [str(find_binary().path), "-c", str(self.bootstrap), "--concurrency", str(self.concurrency),
                "--disable-hot-restart", "--admin-address-path", str(self._address_file),
                "-l", "warning", "--component-log-level", "main:error"]
        with open(self.log_path, "ab") as log:
            self._popen = processes.spawn(argv, cwd=self.workdir, env=dict(os.environ), stdout=log, stderr=log,
                                          die_with_parent=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise ServiceFailed(f"Envoy {self.node_id} exited with code {self._popen.returncode}",
                                    details=processes.tail(self.log_path, 15))
            address = self._address_file.read_text().strip() if self._address_file.is_file() else ""
            if address:
                try:
                    httpx.get(f"http://{address}/ready", timeout=1.0, trust_env=False)
                    self.admin = Admin(f"http://{address}")
                    return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.01)
        self.stop()
        raise ServiceFailed(f"Envoy {self.node_id} did not start within {self.ready_timeout:.0f} s",
                            details=processes.tail(self.log_path, 15))

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self._popen is not None and self._popen.poll() is None:
            processes.terminate_group(self._popen.pid, self._popen.pid, popen=self._popen)

    def __enter__(self) -> "DynamicEnvoy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
