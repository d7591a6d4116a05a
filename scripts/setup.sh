#!/usr/bin/env bash
# One-time set-up on a fresh machine: everything the tests and example modules need.
set -euo pipefail
cd "$(dirname "$0")/.."
# Three builds of detwasm (host, aarch64, another wasmtime), a second Rust toolchain,
# Ray and the workloads: about 7 GiB in all (measured on a fresh clone). Said up front,
# since a build that runs out of disk fails deep in a compiler's output.
avail_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ -n "$avail_kib" ] && [ "$avail_kib" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: $((avail_kib / 1024)) MiB free on the disk of $PWD; the set-up needs about 7 GiB" >&2
fi
echo "==> rustup target add wasm32-wasip1"
rustup target add wasm32-wasip1
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "==> cargo install cargo-nextest"
  cargo install --locked cargo-nextest
fi
if ! command -v go >/dev/null 2>&1; then
  # The template conformance test renders with Go's own text/template (Lilypad is Go).
  echo "==> apt-get install golang-go (reference renderer for module templates)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go >/dev/null
fi
if ! command -v clang >/dev/null 2>&1 || [ ! -e /usr/lib/wasm32-wasi/libc.a ] \
   || ! ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; then
  # `detwasm module new --lang c` builds C modules with clang and wasi-libc (tested).
  echo "==> apt-get install clang lld wasi-libc (C modules for wasm32-wasi)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang lld wasi-libc \
    libclang-rt-14-dev-wasm32 >/dev/null
fi
bash scripts/fetch-workloads.sh
echo "==> npm ci (conformance peer: ipfs-unixfs-importer 17, @ipld/car, ipfs-unixfs-exporter)"
npm ci --prefix conformance --no-audit --no-fund
echo "==> npm ci (a real IPFS node for the IPFS tests: Helia, conformance/ipfs-node)"
npm ci --prefix conformance/ipfs-node --no-audit --no-fund
echo "==> pip install maturin pytest ray (the Python package, its tests and its Ray cluster test)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  "maturin==1.16.0" "pytest==9.2.0" "ray==2.60.0"
echo "==> cargo nextest run --workspace --no-run (the test build: binaries and tests)"
# Exactly the build the test command makes (features unified with the dev-dependencies),
# so the tests compile nothing again, and maturin below reuses it too (see the feature
# note in python/Cargo.toml). It also builds target/debug/detwasm.
cargo nextest run --workspace --no-run
echo "==> pip install ./python (maturin, dev profile, the workspace's target/)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  --no-build-isolation ./python
# The aarch64 build of detwasm and qemu-user for tests/cross_arch.rs.
bash scripts/cross-aarch64.sh --prune
# detwasm built against another wasmtime (50.0.2, Rust 1.97) for tests/protocol.rs.
echo "==> scripts/engine-diff.sh (detwasm built against wasmtime 50.0.2)"
bash scripts/engine-diff.sh --prune
echo "set-up done ($(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }') GiB left on the disk of $PWD)"
