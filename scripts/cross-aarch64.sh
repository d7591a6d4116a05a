#!/usr/bin/env bash
# Builds detwasm for aarch64-unknown-linux-gnu (dev profile, like the tests' host build)
# and checks that it runs under qemu-user. tests/cross_arch.rs runs the same jobs with
# this binary and the host's and compares the receipts (README: "Proven on two
# architectures"). Called by scripts/setup.sh, so CI builds it once before the tests.
#
# Needs (installed here when missing, as root or with sudo): Debian's qemu-user,
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross; rustup's aarch64-unknown-linux-gnu
# target. Cranelift then compiles real aarch64 code, and qemu runs it instruction by
# instruction (NaN bits and SIMD lanes as an aarch64 CPU computes them).
set -euo pipefail
cd "$(dirname "$0")/.."
prune=false
case "${1:-}" in
  "") ;;
  --prune) prune=true ;;
  *) echo "cross-aarch64: unknown argument $1 (usage: bash scripts/cross-aarch64.sh [--prune])" >&2; exit 2 ;;
esac
TARGET=aarch64-unknown-linux-gnu
if ! command -v qemu-aarch64 >/dev/null 2>&1 || ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 \
   || [ ! -e /usr/aarch64-linux-gnu/lib/libc.so.6 ]; then
  echo "==> apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu \
    libc6-dev-arm64-cross >/dev/null
fi
echo "==> rustup target add $TARGET"
rustup target add "$TARGET"
echo "==> cargo build --target $TARGET --bin detwasm (dev profile)"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
cargo build --target "$TARGET" --bin detwasm
bin=target/$TARGET/debug/detwasm
echo "==> qemu-aarch64 $bin --version"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" --version
if $prune; then
  # The binary is a hard link of its copy under deps/: removing that keeps it.
  rm -rf "target/$TARGET/debug/deps" "target/$TARGET/debug/build" \
    "target/$TARGET/debug/incremental" "target/$TARGET/debug/.fingerprint"
fi
