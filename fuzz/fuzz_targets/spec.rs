#![no_main]
//! Rendered spec parsing and input confinement: see
//! `detwasm_jobspec::fuzz::fuzz_spec`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detwasm_jobspec::fuzz::fuzz_spec(data);
});
