#!/usr/bin/env bash
# Builds detwasm against another wasmtime release, for tests/protocol.rs, which runs the
# protocol corpus with it and with this build and requires the same receipts (results
# CID, instructions, exit, trap, job id, fingerprint): what decides a result is detwasm's
# protocol, not the engine's build. Called by scripts/setup.sh, so CI builds it once
# before the tests; rerun it after changing the code (the test names it when the two
# builds disagree).
#
#   bash scripts/engine-diff.sh [--prune] [WASMTIME_VERSION] [TOOLCHAIN]
#   bash scripts/engine-diff.sh --stamp     (prints the stamp of the tracked files)
#
# The tests use two files of the build, copied to target/engine-diff/<version>/bin:
# detwasm and the self-fuzz test binary. --prune (scripts/setup.sh passes it) then
# removes the build's own target folder, about 2 GiB that only a rebuild reads (CI
# once ran out of disk here); without it, a rerun after an edit rebuilds only what
# changed.
#
# Defaults: wasmtime 50.0.2, the newest release whose dependencies the registry here
# holds in full (51.0.0 and 50.0.3 need a wasmtime-internal-wit-bindgen it lacks), built
# with Rust 1.97.0, its rust-version (installed with rustup if missing). A copy of the
# tracked files as they are in the working tree (in a fresh clone, what was committed;
# in a developer's tree, with their edits) is built in target/engine-diff/<version>,
# with its own lockfile (scripts/engine-diff/Cargo-<version>.lock when there is one,
# used --locked, so the build is the one measured). The copy's stamp (a hash of the
# tracked files' names and contents) is written beside the build: tests/protocol.rs
# refuses a build whose stamp is not the tree's (fingerprints name only the protocol,
# so a stale build of the same protocol cannot be told apart by its receipts).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp() { git ls-files -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1; }
if [[ ${1:-} == --stamp ]]; then
    stamp
    exit 0
fi
prune=false
if [[ ${1:-} == --prune ]]; then
    prune=true
    shift
fi
version=${1:-50.0.2}
toolchain=${2:-1.97.0}
semver='^[0-9]+\.[0-9]+\.[0-9]+$'
[[ $version =~ $semver ]] || { echo "engine-diff: $version is not a wasmtime version (N.N.N)" >&2; exit 2; }
[[ $toolchain =~ $semver ]] || { echo "engine-diff: $toolchain is not a Rust version (N.N.N)" >&2; exit 2; }
work=target/engine-diff/$version
rm -rf "$work/src" "$work/stamp" "$work/bin" "$work/self_fuzz"
mkdir -p "$work/src"
# One tar of every tracked file (xargs could split a long list into several archives,
# of which the reading tar takes the first), extracted with the time of extraction (-m):
# with their own times, a file edited before the last build of the copy looked older
# than that build's artifacts, and cargo reused them (found: a stale build of a crate).
git ls-files -z | tar --null -T - -cf - | tar -xmf - -C "$work/src"
copied=$(stamp)
sed -i "s/^wasmtime = { version = \"=[^\"]*\"/wasmtime = { version = \"=$version\"/" \
    "$work/src/Cargo.toml"
grep -q "^wasmtime = { version = \"=$version\"" "$work/src/Cargo.toml" || {
    echo "engine-diff: could not pin wasmtime $version in the copy's Cargo.toml" >&2
    exit 2
}
lock=scripts/engine-diff/Cargo-$version.lock
locked=()
if [ -f "$lock" ]; then
    cp "$lock" "$work/src/Cargo.lock"
    locked=(--locked)
else
    rm -f "$work/src/Cargo.lock"
fi
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install "$toolchain" --profile minimal
echo "engine-diff: building detwasm against wasmtime $version with Rust $toolchain in $work" >&2
CARGO_TARGET_DIR="$PWD/$work/target" cargo +"$toolchain" build --quiet "${locked[@]}" --bin detwasm \
    --manifest-path "$work/src/Cargo.toml"
# The self-fuzz test of the same copy: its generated modules, run by this wasmtime, must
# agree with wasmi as they do under the pinned one (tests/protocol.rs runs it).
CARGO_TARGET_DIR="$PWD/$work/target" cargo +"$toolchain" test --quiet "${locked[@]}" --no-run \
    --manifest-path "$work/src/Cargo.toml" -p detwasm-fuzzing --test self_fuzz \
    --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "self_fuzz":
        print(m["executable"])' > "$work/self_fuzz.path"
self_fuzz=$(cat "$work/self_fuzz.path")
rm -f "$work/self_fuzz.path"
test -n "$self_fuzz" -a -f "$self_fuzz" || { echo "engine-diff: the self-fuzz test was not built" >&2; exit 2; }
mkdir -p "$work/bin"
cp "$work/target/debug/detwasm" "$work/bin/detwasm"
cp "$self_fuzz" "$work/bin/self_fuzz"
if $prune; then
    rm -rf "$work/target"
fi
echo "$copied" > "$work/stamp"
echo "engine-diff: $work/bin/detwasm and $work/bin/self_fuzz (compared by: cargo nextest run --test protocol)" >&2
