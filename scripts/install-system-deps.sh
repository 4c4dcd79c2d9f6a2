#!/usr/bin/env bash
# Installs the Debian packages that the tests and the local demo host need, only when one is missing.
set -euo pipefail
packages=(debootstrap systemd-container openssh-client iproute2 curl ca-certificates python3-pip caddy pebble dpkg-dev chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
