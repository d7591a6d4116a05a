#!/usr/bin/env bash
# One-time set-up on a fresh machine: everything the tests and example modules need.
set -euo pipefail
cd "$(dirname "$0")/.."
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
echo "==> npm ci (conformance peer: ipfs-unixfs-importer 17, @ipld/car, ipfs-unixfs-exporter)"
npm ci --prefix conformance --no-audit --no-fund
echo "==> cargo build (dev profile, shared with the tests)"
cargo build --workspace
echo "set-up done"
