#!/usr/bin/env bash
# Rebuilds the example modules (modules/*) for wasm32-wasip1, reproducibly: the same
# bytes in any checkout folder, on any machine with the same toolchain.
#
#   scripts/build-modules.sh [--target-dir DIR] [--out DIR]
#
# Defaults: target dir modules/target, output fixtures/modules. When the output is the
# default (the committed fixtures), the script also writes fixtures/modules/CIDS (each
# module's CID as `ipfs add` prints it, by `detwasm hash`; set DETWASM to a built CLI to
# skip building it) and puts each CID into its module's lilypad_module.json.tmpl.
#
# What makes it reproducible:
# - `--locked` against the committed modules/Cargo.lock;
# - the release profile in modules/Cargo.toml (opt-level s, lto, codegen-units 1,
#   panic abort, no debug info, stripped);
# - the flags and environment of scripts/reproducible-wasm-env.sh (host paths remapped,
#   RUSTFLAGS from the environment dropped, SOURCE_DATE_EPOCH fixed);
# - the target dir outside the crate sources.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd -P)
target_dir="$root/modules/target"
out_dir="$root/fixtures/modules"
while [ $# -gt 0 ]; do
  case "$1" in
    --target-dir) target_dir=$2; shift 2 ;;
    --out) out_dir=$2; shift 2 ;;
    *) echo "usage: $0 [--target-dir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
done

modules=(cowsay artgen wordstats digits)
# shellcheck source=scripts/reproducible-wasm-env.sh
. "$root/scripts/reproducible-wasm-env.sh"

packages=()
for m in "${modules[@]}"; do packages+=(-p "$m"); done
cargo build --manifest-path "$root/modules/Cargo.toml" --release --locked \
  --target wasm32-wasip1 --target-dir "$target_dir" "${packages[@]}"

mkdir -p "$out_dir"
for m in "${modules[@]}"; do
  cp "$target_dir/wasm32-wasip1/release/$m.wasm" "$out_dir/$m.wasm"
done
echo "built ${modules[*]} into $out_dir"

if [ "$out_dir" = "$root/fixtures/modules" ]; then
  if [ -n "${DETWASM:-}" ]; then
    hash_cmd=("$DETWASM" hash)
  else
    unset CARGO_ENCODED_RUSTFLAGS SOURCE_DATE_EPOCH
    hash_cmd=(cargo run --quiet --manifest-path "$root/Cargo.toml" --bin detwasm -- hash)
  fi
  cids="$out_dir/CIDS"
  : > "$cids.tmp"
  for m in "${modules[@]}"; do
    cid=$("${hash_cmd[@]}" "$out_dir/$m.wasm")
    printf '%s  %s.wasm\n' "$cid" "$m" >> "$cids.tmp"
    sed -i -E "s/(\"EntryModule\": \{[^}]*\"CID\": \")[^\"]*/\1$cid/" "$root/modules/$m/lilypad_module.json.tmpl"
  done
  mv "$cids.tmp" "$cids"
  cat "$cids"
fi
