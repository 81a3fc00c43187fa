#!/usr/bin/env bash
# Install the `prometheus` binary from the Debian/Ubuntu package when it is missing (the e2e test
# tests/e2e/test_prometheus_analysis.py runs this). The test starts its own Prometheus on
# 127.0.0.1 with a generated config; the packaged service must never start, so a policy-rc.d that
# forbids service starts is in place for the duration of the install.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
# Parallel test workers may all get here: one installs, the others wait and find it installed.
exec 9>"${TMPDIR:-/tmp}/fleetgate-install-prometheus.lock"
flock 9
if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ "$OWN_POLICY" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
install() {
    "${SUDO[@]}" apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends prometheus
}
# A fresh machine (or container) may have no package lists yet.
if ! install; then
    "${SUDO[@]}" apt-get update -q
    install
fi
command -v prometheus >/dev/null
