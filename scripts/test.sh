#!/usr/bin/env bash
# The one test command. Installs the tools the tests need (Python tools into
# ./.venv, cargo-deny), then runs the supply-chain checks (deny.toml),
# formatting, lints and every test (unit, integration, corpus, golden,
# schema validation against kubernetes-validate, conformance against Docker Compose).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tools.sh
bash scripts/setup-browser.sh
bash scripts/setup-sshd.sh
bash scripts/setup-prometheus.sh
bash scripts/setup-signing.sh
export STACKD_KUBERNETES_VALIDATE="$PWD/.venv/bin/kubernetes-validate"
export STACKD_DOCKER_COMPOSE="$(echo "$PWD"/.venv/lib/python3*/site-packages/compose/docker-compose)"

# The Dockerfile is not built here (no Docker engine), but it is linted.
.venv/bin/hadolint Dockerfile

# Supply chain, against deny.toml: licences, bans and sources need no network.
# (`cargo deny check` without the flag shows each duplicate's inclusion graph.)
cargo deny --locked check --hide-inclusion-graph licenses bans sources
# Advisories need the RustSec database, a Git clone from GitHub. Fetching it
# on its own first tells "unreachable" apart from "an advisory matched": the
# first skips the check, loudly; the second fails the run.
if deny_fetch_log=$(timeout 300 cargo deny fetch db 2>&1); then
    cargo deny --locked --offline check --hide-inclusion-graph advisories
else
    reason=$(grep -m1 -ioE '(unable to access|could not resolve|timed out|connection refused).*' \
        <<<"$deny_fetch_log" || true)
    echo "SKIPPED: cargo deny check advisories: the RustSec advisory database could not be fetched (${reason:-fetch failed}); licences, bans and sources were checked, advisories were NOT"
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Benchmarks are measured with `cargo bench`; clippy above already proves they compile.
cargo test --lib --bins --tests
bash scripts/fuzz.sh
