#!/usr/bin/env bash
# Installs the Debian 12 packages the build, the tests and the demo need,
# only when one is missing (so a prepared machine pays nothing).
set -euo pipefail
PKGS=(
  build-essential pkg-config
  librabbitmq-dev libcurl4-openssl-dev libjson-c-dev libhiredis-dev libconfig-dev
  libmicrohttpd-dev libsodium-dev libssl-dev uuid-dev libcmocka-dev
  rabbitmq-server redis-server mariadb-server mariadb-client
  php-cli php-amqp php-amqplib php-illuminate-database phpunit php-mysql php-curl php-mbstring
  curl procps gnuplot-nox python3
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the packages from starting system-wide services: the
# tests and the demo start their own private instances.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
