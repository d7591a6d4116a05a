#![no_main]
//! The WASI host under arbitrary call sequences: see
//! `detwasm_runtime::wasi_fuzz::fuzz_wasi_calls`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detwasm_runtime::wasi_fuzz::fuzz_wasi_calls(data);
});
