#![no_main]
//! Runtime self-fuzzing: the fuzzer's bytes become a module (wasm-smith, with the generator
//! of `runtime/tests/self_fuzz.rs`, included below so both make the same module of the
//! same bytes), which `detwasm_fuzzing::check_module` runs under every engine
//! setup that must agree. A disagreement is a panic that names the export and both values.
//! See docs/self-fuzzing.md.

#[path = "../../runtime/tests/self_fuzz.rs"]
mod self_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(binary) = self_fuzz::generate(data) else {
        return;
    };
    if let Err(d) = detwasm_fuzzing::check_module(&binary) {
        panic!("{d}");
    }
});
