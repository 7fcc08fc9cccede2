#!/usr/bin/env bash
# Installs what tests/git_ssh.rs needs (idempotent): Debian's OpenSSH server and
# client. The test starts its own private sshd on 127.0.0.1; nothing is enabled
# as a system service here.
# Needs root (or sudo) for apt on Debian 12.
set -euo pipefail

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  # --no-install-recommends: no xauth or ncurses-term, only the daemon and client.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client
fi
