"""Lab 11 graded for real: control planes that look right but are wrong fail the check
they should, an unusual correct one passes, and nothing of a mesh outlives its run.
tests/test_course_proves_itself.py grades the starter and the solution."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_variants import fails_only, passes, solution_edited

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]


def solution_with(*edits: tuple[str, str]) -> dict[str, str]:
    """The solution's control_plane.py with each (old, new) edit made."""
    return solution_edited("11-mini-mesh", "control_plane.py", *edits)


# Identity by a header the caller's sidecar adds (and keeps when the app already sent
# one): web -> api works and db -> api is denied, but anyone can claim to be web.
RBAC_BY_HEADER = solution_with(
    ("            http_filters=[hcm.HttpFilter(name=\"envoy.filters.http.rbac\", "
     "typed_config=pack(http_rbac.RBAC(rules=policy))),",
     "            http_filters=[hcm.HttpFilter(name=\"envoy.filters.http.rbac\", "
     "typed_config=pack(http_rbac.RBAC(rules=by_header(node)))),"),
    ("    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[",
     "    return route_pb2.RouteConfiguration(name=name, request_headers_to_add=[base_pb2.HeaderValueOption(\n"
     "        header=base_pb2.HeaderValue(key=\"x-caller\", value=node.workload.service),\n"
     "        append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT)], virtual_hosts=["),
    ("# -- everything one sidecar runs (given)",
     "def by_header(node):\n"
     "    principals = [rbac_pb2.Principal(header=route_components_pb2.HeaderMatcher(\n"
     "        name=\"x-caller\", string_match=string_pb2.StringMatcher(exact=caller)))\n"
     "        for caller in node.mesh.callers(node.workload.service)]\n"
     "    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={\"callers\": rbac_pb2.Policy(\n"
     "        permissions=[rbac_pb2.Permission(any=True)], principals=principals)} if principals else {})\n\n\n"
     "# -- everything one sidecar runs (given)"),
)

# Certificates written next to the control plane once, then served by file name: the
# key lies in the lab folder and a rotation changes nothing.
CERTIFICATES_ON_DISK = solution_with(
    ("    return [\n        secret_pb2.Secret(name=CERTIFICATE, tls_certificate=common_pb2.TlsCertificate(\n"
     "            certificate_chain=base_pb2.DataSource(inline_string=node.certificate.chain_pem),\n"
     "            private_key=base_pb2.DataSource(inline_string=node.certificate.key_pem))),",
     "    import pathlib\n"
     "    folder = pathlib.Path(\"certs\").resolve()\n"
     "    folder.mkdir(exist_ok=True)\n"
     "    chain, key = folder / f\"{node.name}.pem\", folder / f\"{node.name}-key.pem\"\n"
     "    if not chain.exists():\n"
     "        chain.write_text(node.certificate.chain_pem)\n"
     "        key.write_text(node.certificate.key_pem)\n"
     "    return [\n        secret_pb2.Secret(name=CERTIFICATE, tls_certificate=common_pb2.TlsCertificate(\n"
     "            certificate_chain=base_pb2.DataSource(filename=str(chain)),\n"
     "            private_key=base_pb2.DataSource(filename=str(key)))),"),
)

# Only the first version of each rule: every request of api goes to v1.
SPLIT_IGNORES_V2 = solution_with(
    ("            for version, weight in rule.weights.items() if weight > 0]))",
     "            for version, weight in list(rule.weights.items())[:1] if weight > 0]))"),
)

# Correct the other way round: DENY whoever is not one of the callers.
DENY_THE_REST = solution_with(
    ("    policies = {\"callers\": rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)],\n"
     "                                           principals=principals)} if principals else {}\n"
     "    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=policies)",
     "    anyone_else = rbac_pb2.Principal(not_id=rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=principals))) \\\n"
     "        if principals else rbac_pb2.Principal(any=True)\n"
     "    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies={\"not a caller\": rbac_pb2.Policy(\n"
     "        permissions=[rbac_pb2.Permission(any=True)], principals=[anyone_else])})"),
)


# SPIFFE IDs written wrong. A wrong ID breaks web -> api -> db, so every check but the
# first fails; each must say which sidecar refused whom, the ID it was given and the one
# the peer presents, not blame routes, TLS or the split.
EVERY_CHECK_AFTER_SYNC = {
    "test_path_through_the_mesh", "test_mutual_tls_every_hop", "test_plaintext_refused", "test_authorization",
    "test_forged_identity", "test_split", "test_manifest_change_without_restart", "test_rotation_under_load",
    "test_control_plane_outage", "test_abort_share", "test_delay", "test_expiry_and_clear",
}
PRINCIPAL = "principal_name=string_pb2.StringMatcher(exact=node.mesh.spiffe_id(caller))"
SAN_MATCHER = "common_tls_context=tls_context(node.mesh.spiffe_id(name))"

# The caller's ID written by hand, with the trust domain mistyped.
PRINCIPAL_TYPO = solution_with(
    (PRINCIPAL, "principal_name=string_pb2.StringMatcher(exact=f\"spiffe://meshlab.tset/ns/default/sa/{caller}\")"))
# The callee's own ID where the caller's belongs.
PRINCIPAL_OF_THE_CALLEE = solution_with(
    (PRINCIPAL, "principal_name=string_pb2.StringMatcher(exact=node.mesh.spiffe_id(node.workload.service))"))
# The caller's own ID where the destination's belongs: web refuses api's certificate.
SAN_OF_THE_CALLER = solution_with(
    (SAN_MATCHER, "common_tls_context=tls_context(node.mesh.spiffe_id(node.workload.service))"))
# A prefix of the trust domain: every workload of the mesh is let in.
PRINCIPAL_PREFIX = solution_with(
    (PRINCIPAL, "principal_name=string_pb2.StringMatcher(prefix=\"spiffe://meshlab.test/\")"))


def test_a_mistyped_principal_is_named_by_every_check_it_breaks(grade):
    checks = fails_only(grade, 11, PRINCIPAL_TYPO, EVERY_CHECK_AFTER_SYNC)
    path = checks["test_path_through_the_mesh"]
    assert "RBAC filter denied web" in path["message"], path
    assert "exact 'spiffe://meshlab.tset/ns/default/sa/web'" in path["message"], path
    assert "web presents spiffe://meshlab.test/ns/default/sa/web" in path["message"], path
    assert "spiffe://meshlab.test/ns/default/sa/web" in path["expected"], path
    assert "rbac.denied" in path["received"], path
    for cid in ("test_mutual_tls_every_hop", "test_split", "test_abort_share", "test_plaintext_refused"):
        assert "RBAC filter denied web" in checks[cid]["message"], checks[cid]
        assert "principal_name" in checks[cid]["hint"], checks[cid]


def test_the_callees_id_as_principal_is_named(grade):
    checks = fails_only(grade, 11, PRINCIPAL_OF_THE_CALLEE, EVERY_CHECK_AFTER_SYNC)
    message = checks["test_path_through_the_mesh"]["message"]
    assert "allows exact 'spiffe://meshlab.test/ns/default/sa/api' (api's ID)" in message, message


def test_the_callers_id_in_the_san_matcher_is_named(grade):
    checks = fails_only(grade, 11, SAN_OF_THE_CALLER, EVERY_CHECK_AFTER_SYNC)
    path = checks["test_path_through_the_mesh"]
    assert "web-v1's sidecar refused api's certificate" in path["message"], path
    assert "exact 'spiffe://meshlab.test/ns/default/sa/web' (web's ID)" in path["message"], path
    assert "ssl.fail_verify_san" in path["received"], path
    assert "match_typed_subject_alt_names" in path["hint"], path
    # web -> db is refused too, by web's sidecar: not the RBAC filter the check asks for.
    assert "web-v1's sidecar refused db's certificate" in checks["test_authorization"]["message"]
    assert "aborted" not in checks["test_abort_share"]["message"]


def test_a_prefix_principal_lets_every_workload_in(grade):
    checks = fails_only(grade, 11, PRINCIPAL_PREFIX, {"test_authorization", "test_forged_identity",
                                                       "test_manifest_change_without_restart"})
    assert "web reached db" in checks["test_authorization"]["message"]
    assert "allows prefix 'spiffe://meshlab.test/'" in checks["test_authorization"]["received"]


def test_rbac_by_header_fails_the_forged_identity_check(grade):
    checks = fails_only(grade, 11, RBAC_BY_HEADER, {"test_forged_identity"})
    assert "claiming web's identity" in checks["test_forged_identity"]["message"]


def test_certificates_on_disk_fail_the_sds_and_rotation_checks(grade):
    checks = fails_only(grade, 11, CERTIFICATES_ON_DISK, {"test_mutual_tls_every_hop", "test_rotation_under_load"})
    assert "private keys lie in the lab's folder" in checks["test_mutual_tls_every_hop"]["message"]
    assert "still serve the certificate from before" in checks["test_rotation_under_load"]["message"]


def test_a_split_ignoring_v2_fails_the_split_check(grade):
    checks = fails_only(grade, 11, SPLIT_IGNORES_V2, {"test_split"})
    assert "went to api v1" in checks["test_split"]["message"]


def test_deny_everyone_else_passes(grade):
    passes(grade, 11, DENY_THE_REST)


# -- nothing outlives a mesh --------------------------------------------------------------

def _leftovers(prefix: str, run_dir: Path, folder: Path) -> dict[str, list[str]]:
    """The run's namespaces, and the processes of the run: started from its folder
    (apps, control plane) or naming its run folder (Envoys)."""
    namespaces = [n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                       text=True).stdout.splitlines() if n.startswith(prefix)]
    processes = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(run_dir) in argv or cwd == str(folder):
            processes.append(f"{proc.name}: {argv[:120]}")
    return {"namespaces": namespaces, "processes": processes}


@pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")
@pytest.mark.parametrize("how", ["checker killed", "check interrupted"])
def test_nothing_outlives_an_interrupted_run(lab_copy, course, how):
    """SIGKILL to a checker in the middle of lab 11's checks (its reaper removes the pods,
    and with them every rule; the kernel kills its services), or Ctrl-C to `meshlab
    check` (everything unwinds): no namespace and no process of the run remain."""
    from meshlab.runtime.pods import tag_for
    from meshlab.session import run_dir_for

    folder = lab_copy(11, base="solution").resolve()
    run_dir = run_dir_for(course, course.find(11), folder)
    prefix = f"ml{tag_for(run_dir)}-"
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT)}
    if how == "checker killed":
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                str(ROOT / "checker" / "test_11_mini_mesh.py"), "--meshlab-path", str(folder), "-k", "rotation"]
        sig = signal.SIGKILL
    else:
        argv = [sys.executable, "-m", "meshlab", "check", "11", "--path", str(folder)]
        sig = signal.SIGINT
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_leftovers(prefix, run_dir, folder)["namespaces"]) < 6:
            time.sleep(0.5)
        assert len(_leftovers(prefix, run_dir, folder)["namespaces"]) == 6, "the mesh never started"
        time.sleep(3)
        process.send_signal(sig)
        code = process.wait(30)
        if how == "check interrupted":
            assert code == 130
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_leftovers(prefix, run_dir, folder).values()):
            time.sleep(0.5)
        assert _leftovers(prefix, run_dir, folder) == {"namespaces": [], "processes": []}
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")
def test_every_sidecar_is_scrapeable_from_another_pod_and_nothing_else_is(lab_copy, course):
    """The bootstrap's metrics listener (15090) is let through the capture rules; the
    admin API stays on the pod's loopback."""
    from meshlab.mesh import inject, manifest
    from meshlab.session import LabSession, run_dir_for

    folder = lab_copy(11, base="solution").resolve()
    lab = course.find(11)
    session = LabSession.open(lab, folder, run_dir_for(course, lab, folder))
    try:
        where = inject.addresses(manifest.load(lab.mesh))
        scraper = session.pod(inject.CONTROL_POD)
        for workload, address in where.workloads.items():
            metrics = scraper.get(f"http://{address}:{inject.METRICS_PORT}/stats/prometheus")
            assert metrics.status_code == 200 and "envoy_server_live" in metrics.text, workload
            assert scraper.get(f"http://{address}:{inject.METRICS_PORT}/config_dump").status_code == 404
    finally:
        session.close()
