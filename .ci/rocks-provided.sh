#!/bin/sh
# Writes a LuaRocks configuration (to standard output) that declares the Lua
# modules Debian installed as rocks LuaRocks can see: Debian's packages do
# not register with LuaRocks, so without this `luarocks make` could only skip
# its dependency check (--deps-mode=none). Each argument is DEB=ROCK, e.g.
# lua-socket=luasocket; the rock's version is the package's upstream
# version, as dpkg reports it. No rocks server is configured: a dependency
# that nothing provides fails the install instead of being downloaded.
set -e
echo "-- written by .ci/rocks-provided.sh: rocks provided by Debian packages"
echo "rocks_servers = {}"
echo "rocks_provided = {"
for pair in "$@"; do
  deb=${pair%%=*}
  rock=${pair#*=}
  version=$(dpkg-query -W -f='${Version}' "$deb")
  # 1:2.1.0+dfsg-2.2 -> 2.1.0 (no epoch, no repack suffix, no Debian revision)
  upstream=$(echo "$version" | sed -e 's/^[0-9]*://' -e 's/[+~-].*$//')
  echo "  [\"$rock\"] = \"$upstream-1\", -- Debian $deb $version"
done
echo "}"
