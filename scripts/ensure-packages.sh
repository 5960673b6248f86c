#!/usr/bin/env bash
# Install the Debian packages named as arguments that are missing (as root, with apt-get);
# otherwise name what is missing and how to get it. Each argument is PACKAGE or
# PACKAGE:COMMAND, the command proving the package is there on machines without dpkg.
set -euo pipefail
missing=()
for spec in "$@"; do
  pkg=${spec%%:*}; cmd=${spec#*:}
  if command -v dpkg-query >/dev/null; then
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  elif [ "$cmd" != "$spec" ] && ! command -v "$cmd" >/dev/null; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "error: missing system packages: ${missing[*]}. Run this as root on Debian/Ubuntu" \
       "(apt-get install ${missing[*]}), or see README.md for a set-up without root." >&2
  exit 1
fi
