#!/usr/bin/env bash
# Builds detwasm against another wasmtime release, for tests/protocol.rs, which runs the
# protocol corpus with it and with this build and requires the same receipts (results
# CID, instructions, exit, trap, job id, fingerprint): what decides a result is detwasm's
# protocol, not the engine's build. Called by scripts/setup.sh, so CI builds it once
# before the tests; rerun it after changing the code (the test names it when the two
# builds disagree).
#
#   bash scripts/engine-diff.sh [WASMTIME_VERSION] [TOOLCHAIN]
#
# Defaults: wasmtime 50.0.2, the newest release whose dependencies the registry here
# holds in full (51.0.0 and 50.0.3 need a wasmtime-internal-wit-bindgen it lacks), built
# with Rust 1.97.0, its rust-version (installed with rustup if missing). The copy of the
# tracked sources (what a fresh clone has) is built in target/engine-diff/<version>,
# with its own lockfile (scripts/engine-diff/Cargo-<version>.lock when there is one, so
# the build is the one measured).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-50.0.2}
toolchain=${2:-1.97.0}
work=target/engine-diff/$version
rm -rf "$work/src"
mkdir -p "$work/src"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$work/src"
sed -i "s/^wasmtime = { version = \"=[^\"]*\"/wasmtime = { version = \"=$version\"/" \
    "$work/src/Cargo.toml"
grep -q "^wasmtime = { version = \"=$version\"" "$work/src/Cargo.toml" || {
    echo "engine-diff: could not pin wasmtime $version in the copy's Cargo.toml" >&2
    exit 2
}
lock=scripts/engine-diff/Cargo-$version.lock
if [ -f "$lock" ]; then
    cp "$lock" "$work/src/Cargo.lock"
else
    rm -f "$work/src/Cargo.lock"
fi
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install "$toolchain" --profile minimal
echo "engine-diff: building detwasm against wasmtime $version with Rust $toolchain in $work" >&2
CARGO_TARGET_DIR="$PWD/$work/target" cargo +"$toolchain" build --quiet --bin detwasm \
    --manifest-path "$work/src/Cargo.toml"
# The self-fuzz test of the same copy: its generated modules, run by this wasmtime, must
# agree with wasmi as they do under the pinned one (tests/protocol.rs runs it).
CARGO_TARGET_DIR="$PWD/$work/target" cargo +"$toolchain" test --quiet --no-run \
    --manifest-path "$work/src/Cargo.toml" -p detwasm-fuzzing --test self_fuzz \
    --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "self_fuzz":
        print(m["executable"])' > "$work/self_fuzz"
test -s "$work/self_fuzz" || { echo "engine-diff: the self-fuzz test was not built" >&2; exit 2; }
echo "engine-diff: $work/target/debug/detwasm and $(cat "$work/self_fuzz") (compared by: cargo nextest run --test protocol)" >&2
