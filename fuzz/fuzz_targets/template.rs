#![no_main]
//! Module template rendering: see `detwasm_jobspec::fuzz::fuzz_template`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detwasm_jobspec::fuzz::fuzz_template(data);
});
