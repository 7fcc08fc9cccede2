#!/usr/bin/env bash
# Installs what tests/verify.rs needs (idempotent): `ssh-keygen` (openssh-client)
# and `gpg` (gnupg), which make keys and sign commits at test time for the
# signed-commits check (`verify:`). Needs root (or sudo) for apt on Debian 12.
set -euo pipefail

if ! command -v ssh-keygen >/dev/null || ! command -v gpg >/dev/null || ! command -v gpgconf >/dev/null; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    openssh-client gnupg
fi
