#!/usr/bin/env bash
# Installs what tests/alerts.rs needs (idempotent): Debian's `prometheus`
# package, which ships both `prometheus` and `promtool`. The test checks the
# README's alert rules (docs/alerts.yaml) with `promtool check rules` and runs
# a real Prometheus against a real `stackd run` to see StackdSyncFailing fire
# and resolve. Needs root (or sudo) for apt on Debian 12.
set -euo pipefail

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  # Only the binaries: the package's service is not started (no systemd here,
  # and the test runs its own instance on a free port).
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus
fi
