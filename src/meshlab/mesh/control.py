"""The scaffolding of a mesh's control plane: everything but the translation.

A learner's control plane (lab 11's control_plane.py) writes one function,
`build(node) -> [resources]`: what one sidecar should run, given the manifest, the
workload and its certificate. This module does the rest, the way istiod does:

- reads the manifest and follows its changes (a new split reaches every sidecar
  without a restart);
- runs the mesh's certificate authority and gives every workload an X.509-SVID for
  its service's SPIFFE ID, short-lived, renewed at 2/3 of its lifetime; the CA's key
  stays in a 0600 file of the run's state folder ($MESHLAB_SERVICE_STATE, removed with the
  run, by the pods' reaper if the run's owner is killed), so a restarted control plane
  signs with the same CA and no sidecar ever distrusts another; the workloads' keys stay
  in memory and travel only over xDS (SDS);
- serves the snapshots over ADS (meshlab.xds) and an admin API (JSON):

      GET  /status   the version, and per node: acknowledged, last NACK, why its build was not
                     pushed (build_error), certificate
      POST /rotate   {"ttl_seconds": N} (optional): new certificates for every node now
      GET  /xds      the xDS server's own view (streams, versions per type)
      GET|POST|DELETE /faults   fault experiments (meshlab.mesh.faults); build sees them as node.faults

    python control_plane.py --mesh mesh.yaml     # ports from the manifest
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from meshlab.errors import MeshlabError
from meshlab.mesh import inject, manifest
from meshlab.mesh.faults import Experiments
from meshlab.mesh.manifest import Mesh, Workload
from meshlab.xds import Snapshot, SnapshotCache, XdsServer, watch_file
from meshlab.xds import admin as xds_admin
from meshlab.xds import types as xds_types

log = logging.getLogger("control-plane")

CA_TTL = dt.timedelta(days=1)
RENEW_AT = 2 / 3              # of a certificate's lifetime


@dataclass(frozen=True)
class Certificate:
    """A workload's X.509-SVID: its chain and key in PEM (in memory only)."""

    spiffe_id: str
    chain_pem: str
    key_pem: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    def to_json(self) -> dict:
        return {"serial": format(self.serial, "x"), "not_after": self.not_after.isoformat(),
                "spiffe_id": self.spiffe_id}


class Authority:
    """The mesh's CA: a P-256 key and a self-signed certificate for the trust domain."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.key = key
        self.cert = cert
        self.root_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(cls, trust_domain: str, folder: Path | None) -> "Authority":
        """The CA kept in FOLDER (created there, key 0600, if absent); with no folder,
        one that lives as long as this process."""
        if folder is not None:
            key_file, cert_file = folder / "ca.key", folder / "ca.crt"
            if key_file.is_file() and cert_file.is_file():
                key = serialization.load_pem_private_key(key_file.read_bytes(), None)
                cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
                if cert.not_valid_after_utc > _now() + dt.timedelta(hours=1):
                    return cls(key, cert)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} mesh CA")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + CA_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            key_file = folder / "ca.key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
            (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert)

    def issue(self, spiffe_id: str, ttl: dt.timedelta) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                                                      "meshlab")]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(seconds=30)).not_valid_after(now + ttl)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM).decode() + self.root_pem
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return Certificate(spiffe_id, chain, key_pem, cert.serial_number, now - dt.timedelta(seconds=30), now + ttl)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Node:
    """What `build` knows about the sidecar it configures."""

    mesh: Mesh
    workload: Workload
    addresses: inject.Addresses
    certificate: Certificate          # this workload's SVID
    trust_bundle_pem: str             # the CA certificate(s) every peer's chain must lead to
    faults: tuple = ()                # the fault experiments running now (meshlab.chaos.Fault)

    @property
    def name(self) -> str:
        return self.workload.name


Build = Callable[[Node], list[Message]]

_SENDS_TO_CLUSTER = {"envoy.config.route.v3.RouteAction", "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}


def missing_clusters(snapshot: Snapshot) -> list[str]:
    """The clusters a route or tcp_proxy of SNAPSHOT sends to that the snapshot lacks, in
    words. Envoy accepts such a route and answers 503 (no cluster) to every request on it;
    a sidecar's bootstrap has no cluster but the control plane's, so here it is a mistake."""
    named: dict[str, str] = {}          # cluster -> the resource that names it

    def walk(message: Message, owner: str) -> None:
        full_name = message.DESCRIPTOR.full_name
        if full_name in _SENDS_TO_CLUSTER and message.cluster:
            named.setdefault(message.cluster, owner)
        if full_name.endswith("WeightedCluster.ClusterWeight") and message.name:
            named.setdefault(message.name, owner)
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items = list(value.values()) if field.message_type.fields_by_name["value"].message_type else []
            else:
                items = [value] if isinstance(value, Message) else list(value)
            for item in items:
                if item.DESCRIPTOR.full_name == "google.protobuf.Any":
                    try:
                        item = xds_types.message_class(item.type_url).FromString(item.value)
                    except KeyError:
                        continue        # a type nobody imported cannot name a cluster we know of
                walk(item, owner)

    for type_url, kind in ((xds_types.LISTENER, "listener"), (xds_types.ROUTE, "route configuration")):
        for name, resource in snapshot.resources(type_url).items():
            walk(resource.message(), f"{kind} {name!r}")
    clusters = snapshot.resources(xds_types.CLUSTER)
    return [f"{owner} sends to cluster {cluster!r}, which the snapshot lacks (it has: {', '.join(sorted(clusters)) or 'none'})"
            for cluster, owner in sorted(named.items()) if cluster not in clusters]


class ControlPlane:
    def __init__(self, build: Build, mesh_file: Path, *, state_dir: Path | None = None):
        self.build = build
        self.mesh_file = Path(mesh_file)
        self.mesh: Mesh | None = None
        self.cache = SnapshotCache()
        self.server: XdsServer | None = None
        self.authority: Authority | None = None
        self.state_dir = state_dir
        self.certificates: dict[str, Certificate] = {}
        self.ttl: dt.timedelta | None = None       # set by POST /rotate; else the manifest's
        self.version = ""
        self._rotated = asyncio.Event()
        self.faults = Experiments()
        self.build_errors: dict[str, str] = {}     # node -> why its last build was not pushed

    # -- building ------------------------------------------------------------------

    def apply(self, mesh: Mesh) -> None:
        """Translate MESH for every workload and hand the snapshots to the cache.
        Whatever goes wrong for one node, it keeps its previous snapshot."""
        self.mesh = mesh
        if self.authority is None:
            self.authority = Authority.load_or_create(mesh.trust_domain, self.state_dir)
        for workload in mesh.workloads:
            if workload.name not in self.certificates:
                self.certificates[workload.name] = self._issue(workload)
        self.push()

    def push(self) -> None:
        mesh = self.mesh
        where = inject.addresses(mesh)
        versions = []
        for workload in mesh.workloads:
            node = Node(mesh, workload, where, self.certificates[workload.name], self.authority.root_pem,
                        self.faults.active())
            try:
                resources = [r for r in self.build(node) if r is not None]
                snapshot = Snapshot(resources)
            except Exception as error:  # noqa: BLE001 - a bug in the learner's build must not stop the control plane
                log.exception("building the configuration of %s failed; it keeps its previous one", workload.name)
                self.build_errors[workload.name] = self._where(error)
                continue
            problems = snapshot.problems() + missing_clusters(snapshot)
            if problems:
                log.error("the snapshot of %s is inconsistent, not pushed:\n  %s", workload.name,
                          "\n  ".join(problems))
                self.build_errors[workload.name] = f"inconsistent snapshot: {problems[0]}"
                continue
            self.build_errors.pop(workload.name, None)
            if self.cache.set_snapshot(workload.name, snapshot):
                log.info("pushing version %s to %s", snapshot.version, workload.name)
            versions.append(snapshot.version)
        self.version = hashlib.sha256(" ".join(versions).encode()).hexdigest()[:12]

    def _where(self, error: Exception) -> str:
        """ERROR in one line, at the deepest line of the learner's own files (the folder of
        `build`), so that `meshlab mesh status` can point at it without the log."""
        code = getattr(self.build, "__code__", None)
        folder = Path(code.co_filename).parent if code else None
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if folder is not None and Path(f.filename).parent == folder]
        message = f"{type(error).__name__}: {error}"
        if frames:
            return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}: {message}"
        return message

    def _issue(self, workload: Workload) -> Certificate:
        ttl = self.ttl or dt.timedelta(seconds=self.mesh.certificate_ttl_seconds)
        return self.authority.issue(self.mesh.spiffe_id(workload.service), ttl)

    def rotate(self, ttl_seconds: int | None = None) -> dict[str, str]:
        """New certificates for every workload now (and TTL_SECONDS for future ones)."""
        if ttl_seconds is not None:
            self.ttl = dt.timedelta(seconds=ttl_seconds)
        for workload in self.mesh.workloads:
            self.certificates[workload.name] = self._issue(workload)
        self.push()
        self._rotated.set()
        return {name: format(c.serial, "x") for name, c in self.certificates.items()}

    async def renew_forever(self) -> None:
        """Rotate at RENEW_AT of the shortest lifetime left (sooner after POST /rotate)."""
        while True:
            if self.certificates:
                soonest = min(c.not_before + (c.not_after - c.not_before) * RENEW_AT
                              for c in self.certificates.values())
                wait = max(0.5, (soonest - _now()).total_seconds())
            else:
                wait = 1.0
            self._rotated.clear()
            try:
                await asyncio.wait_for(self._rotated.wait(), timeout=wait)
                continue
            except asyncio.TimeoutError:
                pass
            if self.mesh is not None:
                log.info("certificates reach 2/3 of their lifetime: rotating")
                self.rotate()

    # -- the admin API --------------------------------------------------------------

    def status(self) -> dict:
        nodes = {}
        board = self.server.board
        for workload in (self.mesh.workloads if self.mesh else []):
            streams = board.streams(workload.name)
            nack = board.last_nack(workload.name)
            certificate = self.certificates.get(workload.name)
            snapshot = self.cache.snapshot(workload.name)   # an empty snapshot is falsy: compare with None
            nodes[workload.name] = {
                "acked": next((s.synced_version for s in streams if s.synced_version), None),
                "target": snapshot.version if snapshot is not None else None,
                "connected": bool(streams),
                # the proxy's reason in one line (the field path, without the resource's dump)
                "nack": nack.summary if nack else None,
                "build_error": self.build_errors.get(workload.name),
                "certificate": certificate.to_json() if certificate else None,
            }
        return {"version": self.version, "nodes": nodes}

    def respond(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, object]:
        if path == "/status" and method == "GET":
            return 200, self.status()
        if path == "/rotate" and method == "POST":
            try:
                data = json.loads(body or b"{}")
                ttl = data.get("ttl_seconds") if isinstance(data, dict) else None
                if ttl is not None and (not isinstance(ttl, int) or ttl < 10):
                    return 400, {"error": "ttl_seconds must be a whole number of seconds, at least 10"}
            except ValueError:
                return 400, {"error": "the body must be JSON, like {\"ttl_seconds\": 60}"}
            return 200, {"serials": self.rotate(ttl)}
        if path == "/faults":
            code, document = self.faults.respond(method, query, body, self.mesh)
            if code == 200 and method != "GET" and self.mesh is not None:
                self.push()
            return code, document
        if path == "/xds" and method == "GET":
            return 200, xds_admin.status(self.cache, self.server.board)
        if path == "/":
            return 200, {"endpoints": ["GET /status", "POST /rotate", "GET /xds", "GET/POST/DELETE /faults"]}
        return 404, {"error": f"no such page: {method} {path}"}

    async def _serve_admin(self, host: str, port: int) -> asyncio.AbstractServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                path, _, query = target.partition("?")
                code, document = self.respond(method, path, parse_qs(query), body)
                data = json.dumps(document, indent=2).encode() + b"\n"
                writer.write(f"HTTP/1.1 {code} {'OK' if code == 200 else 'Error'}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                             "Connection: close\r\n\r\n".encode() + data)
                await writer.drain()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError,
                    ConnectionError):
                pass
            finally:
                writer.close()
        return await asyncio.start_server(handle, host, port, reuse_address=True)

    # -- running --------------------------------------------------------------------

    async def run(self, host: str = "0.0.0.0") -> None:
        first = manifest.load(self.mesh_file)
        self.server = XdsServer(self.cache, host=host, port=first.xds_port)
        await self.server.start()
        admin = await self._serve_admin(host, first.admin_port)
        log.info("control plane: xDS on %s:%d, admin API on %s:%d", host, first.xds_port, host, first.admin_port)
        renewer = asyncio.create_task(self.renew_forever())
        expiry = asyncio.create_task(self.faults.expire_forever(self.push))
        try:
            async for _ in watch_file(self.mesh_file):
                try:
                    mesh = manifest.load(self.mesh_file)
                except MeshlabError as error:
                    log.error("%s: %s; keeping the previous configuration", error.where or self.mesh_file,
                              error.message)
                    continue
                self.apply(mesh)
        finally:
            renewer.cancel()
            expiry.cancel()
            admin.close()


def main(build: Build, description: str = "A mesh's control plane.") -> None:
    """The command line of a control plane whose translation is BUILD."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mesh", default="mesh.yaml", help="the mesh manifest to follow (default mesh.yaml)")
    parser.add_argument("--host", default="0.0.0.0", help="address to serve on (default: the control pod's)")
    parser.add_argument("--verbose", action="store_true", help="log every xDS request and response")
    options = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    state = os.environ.get("MESHLAB_SERVICE_STATE")
    plane = ControlPlane(build, Path(options.mesh), state_dir=Path(state) / "mesh-ca" if state else None)
    try:
        asyncio.run(plane.run(options.host))
    except KeyboardInterrupt:
        pass
    except MeshlabError as error:
        print(f"{error.where or options.mesh}: {error.message}" + (f"\n  fix: {error.fix}" if error.fix else ""),
              file=sys.stderr)
        sys.exit(2)
