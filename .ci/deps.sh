#!/bin/sh
# Installs the Debian packages named as arguments, but only those missing.
# apt-get update runs once, and only when something has to be installed.
set -e
missing=""
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
[ -z "$missing" ] && exit 0
echo "installing missing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# another apt or dpkg run (a second make, unattended upgrades) holds the
# lock for a while: wait for it rather than fail
LOCK="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086
$SUDO apt-get $LOCK update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get $LOCK install -y -q --no-install-recommends $missing >/dev/null
