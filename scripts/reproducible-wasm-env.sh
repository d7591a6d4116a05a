# Sourced by the scripts that build wasm32-wasip1 modules (scripts/build-modules.sh,
# fixtures/probes/build-probe.sh): the one place that makes their bytes independent of
# the checkout folder and the machine's cargo set-up.
# - RUSTFLAGS are set here and only here (anything from the environment is dropped), with
#   every host path that can reach the binary remapped: this checkout ($root, set by the
#   caller), $CARGO_HOME (registry sources and git checkouts) and the toolchain's sysroot;
# - SOURCE_DATE_EPOCH fixed, incremental compilation off.
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
sysroot=$(rustc --print sysroot)
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER
unset CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS
export SOURCE_DATE_EPOCH=0
export CARGO_INCREMENTAL=0
reproducible_flags=(
  "--remap-path-prefix=$root=/detwasm"
  "--remap-path-prefix=$cargo_home=/cargo"
  "--remap-path-prefix=$sysroot=/rustc-sysroot"
  "-Cdebuginfo=0"
  "-Cstrip=symbols"
)
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${reproducible_flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
