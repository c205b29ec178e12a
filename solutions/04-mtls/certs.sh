#!/bin/sh
# Lab 04 — the mesh's certificates, solved. meshlab runs this before every start and
# check; it makes the CA and both SVIDs when they are missing or expire within an hour,
# so the lab works on any day (SVIDs live 24 hours).
set -eu
cd "$(dirname "$0")"

fresh() {  # $1: an SVID file; true when it chains to our CA and is valid for another hour
  meshlab certs inspect "$1" --ca certs/ca --valid-for 1h >/dev/null 2>&1
}

if [ -f certs/ca/ca.pem ] && fresh certs/app-a/svid.pem && fresh certs/app-b/svid.pem; then
  exit 0
fi
meshlab certs ca --out certs/ca --trust-domain cluster.local --ttl 30d --force
meshlab certs issue --ca certs/ca --spiffe-id spiffe://cluster.local/ns/default/sa/app-a --out certs/app-a
meshlab certs issue --ca certs/ca --spiffe-id spiffe://cluster.local/ns/default/sa/app-b --out certs/app-b
