#!/usr/bin/env bash
# The one test command. Installs the Python tools the tests need into ./.venv,
# then runs formatting, lints and every test (unit, integration, corpus, golden,
# schema validation against kubernetes-validate, conformance against Docker Compose).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tools.sh
bash scripts/setup-browser.sh
bash scripts/setup-sshd.sh
export STACKD_KUBERNETES_VALIDATE="$PWD/.venv/bin/kubernetes-validate"
export STACKD_DOCKER_COMPOSE="$(echo "$PWD"/.venv/lib/python3*/site-packages/compose/docker-compose)"

# The Dockerfile is not built here (no Docker engine), but it is linted.
.venv/bin/hadolint Dockerfile

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Benchmarks are measured with `cargo bench`; clippy above already proves they compile.
cargo test --lib --bins --tests
bash scripts/fuzz.sh
