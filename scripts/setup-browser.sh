#!/usr/bin/env bash
# Installs what tests/browser.rs needs (idempotent): Debian's Chromium and the
# pinned playwright-core + axe-core of tests/browser/package-lock.json. npm never
# downloads a browser: check.mjs drives /usr/bin/chromium.
# Needs root (or sudo) for apt on Debian 12, and Node.js 20+ with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  # DejaVu keeps screenshots the same from machine to machine.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium fonts-dejavu-core
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup-browser: Node.js 20+ and npm are needed (not found on PATH)" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup-browser: playwright-core needs Node.js 20+, found $(node --version)" >&2
  exit 1
fi

# `npm ci` wipes node_modules and installs again: only when it differs from the lock.
cd tests/browser
if ! node -e '
  const lock = require("./package-lock.json");
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path && require(`./${path}/package.json`).version !== entry.version) process.exit(1);
  }' 2>/dev/null; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
