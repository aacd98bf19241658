#!/usr/bin/env bash
# Install the Debian packages the tests (or the demo) need, if they are missing.
# Services are never started by the install: tests start their own on free loopback ports.
set -euo pipefail

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(redis-server rabbitmq-server)

declare -A binary=([redis-server]=redis-server [rabbitmq-server]=rabbitmq-server [prometheus]=promtool [kubernetes-client]=kubectl [prometheus-alertmanager]=prometheus-alertmanager [node-typescript]=tsc)
missing=()
for pkg in "${want[@]}"; do
  command -v "${binary[$pkg]:-$pkg}" >/dev/null 2>&1 || [ -x "/usr/sbin/${binary[$pkg]:-$pkg}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} (Debian packages)"
# Keep the packages' init scripts from starting system-wide services during install.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
