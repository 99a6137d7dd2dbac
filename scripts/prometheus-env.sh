#!/usr/bin/env bash
# Installs Prometheus and promtool (Debian's `prometheus` package, 2.42)
# idempotently: the alert unit tests (scripts/test-chart.sh), the Prometheus
# end-to-end test (tests/prometheus_e2e.rs) and the playground use them. The
# tests start their own Prometheus on a free port; the package's system
# service, if the machine runs systemd, is stopped and disabled.
set -euo pipefail
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
