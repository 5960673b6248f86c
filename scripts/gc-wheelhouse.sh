#!/usr/bin/env bash
# gc-wheelhouse.sh VENV DEST: wheels of the globus-compute-endpoint installed in VENV and of
# its dependencies, at VENV's versions, in DEST. GC's default user endpoint template installs
# that package with `uv pip install`; tests/gc points uv at DEST with `no-index`, so the test
# proves nothing comes from the internet. Built once (from PyPI, or the configured index) and
# kept: a stamp names the version it was built for.
set -euo pipefail
venv=$1 dest=$2
ver=$("$venv/bin/python" -c 'from importlib.metadata import version
print(version("globus-compute-endpoint"))')
stamp="$dest/.globus-compute-endpoint-$ver"
[ -e "$stamp" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# VENV's own versions as constraints: the set pip already resolved, minus local checkouts.
"$venv/bin/pip" freeze --exclude-editable | grep -v ' @ ' > "$tmp/constraints.txt"
# `pip wheel`, not `pip download`: a dependency published as an sdist only becomes a wheel
# here, so uv installs it offline without a build backend.
"$venv/bin/pip" wheel --quiet --wheel-dir "$tmp/wheels" -c "$tmp/constraints.txt" \
  "globus-compute-endpoint==$ver"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/wheels" "$dest"
chmod -R a+rX "$dest"
touch "$stamp"
