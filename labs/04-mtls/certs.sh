#!/bin/sh
# Lab 04 — the mesh's certificates. meshlab runs this script before every start and
# check (it is the lab's `prepare` step), so write here the commands of step 2 and
# your certificates are made again whenever they are missing or about to expire.
set -eu
cd "$(dirname "$0")"
# `meshlab` is the course's own, even when its virtualenv (.venv) is not activated.
command -v meshlab >/dev/null 2>&1 || PATH="$(cd ../.. && pwd)/.venv/bin:$PATH"
command -v meshlab >/dev/null 2>&1 || { echo "certs.sh: meshlab not found: run \`source .venv/bin/activate\` in the course's folder" >&2; exit 127; }

# TODO(step 2): make the mesh CA in certs/ca for trust domain cluster.local, then an
#   X.509-SVID for spiffe://cluster.local/ns/default/sa/app-a in certs/app-a and one for
#   spiffe://cluster.local/ns/default/sa/app-b in certs/app-b (`meshlab certs --help`).
#   Make them only when they are missing, name another ID or expire soon: `meshlab certs
#   inspect FILE --ca certs/ca --spiffe-id ID --valid-for 1h` exits 0 while a certificate
#   is still good.
echo "certs.sh: no certificates made yet (step 2)"
