#!/bin/sh
# Lab 04 — the mesh's certificates, solved. meshlab runs this before every start and
# check; it makes the CA and both SVIDs when they are missing, name another SPIFFE ID
# or expire within an hour, so the lab works on any day (SVIDs live 24 hours).
set -eu
cd "$(dirname "$0")"
# `meshlab` is the course's own, even when its virtualenv (.venv) is not activated.
command -v meshlab >/dev/null 2>&1 || PATH="$(cd ../.. && pwd)/.venv/bin:$PATH"
command -v meshlab >/dev/null 2>&1 || { echo "certs.sh: meshlab not found: run \`source .venv/bin/activate\` in the course's folder" >&2; exit 127; }

fresh() {  # $1: an SVID file, $2: its SPIFFE ID; true when it chains to our CA, names
           # that ID and is valid for another hour
  meshlab certs inspect "$1" --ca certs/ca --spiffe-id "$2" --valid-for 1h >/dev/null 2>&1
}

# Both inspections at once (each is a meshlab start): the check waits for this script.
if [ -f certs/ca/ca.pem ]; then
  fresh certs/app-a/svid.pem spiffe://cluster.local/ns/default/sa/app-a & a=$!
  fresh certs/app-b/svid.pem spiffe://cluster.local/ns/default/sa/app-b & b=$!
  good=yes
  wait $a || good=no
  wait $b || good=no
  [ $good = yes ] && exit 0
fi
meshlab certs ca --out certs/ca --trust-domain cluster.local --ttl 30d --force
# The two SVIDs side by side too; `wait` fails the script if either issue fails.
meshlab certs issue --ca certs/ca --spiffe-id spiffe://cluster.local/ns/default/sa/app-a --out certs/app-a & a=$!
meshlab certs issue --ca certs/ca --spiffe-id spiffe://cluster.local/ns/default/sa/app-b --out certs/app-b & b=$!
wait $a
wait $b
