//! Writes a module after each pass on its own and after all of them, for timing the
//! passes' code under another runtime (`benches/passes-on-wasmtime.py`):
//! `OUT-fuel.wasm` (fuel metering alone), `OUT-nan.wasm` (NaN canonicalization alone),
//! `OUT-stack.wasm` (stack metering alone) and `OUT-all.wasm` (fuel, relaxed SIMD lowering, NaN canonicalization and stack metering,
//! as a job's module). The fueled ones import `detwasm.refuel` (`(i64) -> i64`).
//!
//! ```text
//! cargo run -p detwasm-runtime --example pass_variants -- MODULE.wasm OUT
//! ```

use detwasm_passes as passes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(module), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: pass_variants MODULE.wasm OUT".into());
    };
    let original = std::fs::read(&module)?;
    let fueled = passes::fuel::meter(&original)?;
    let all = passes::stack::meter(&passes::nan::canonicalize(&passes::relaxed::lower(
        &fueled,
    )?)?)?;
    let nan = passes::nan::canonicalize(&passes::relaxed::lower(&original)?)?;
    let stack = passes::stack::meter(&original)?;
    for (name, bytes) in [
        ("fuel", &fueled),
        ("nan", &nan),
        ("stack", &stack),
        ("all", &all),
    ] {
        std::fs::write(format!("{out}-{name}.wasm"), bytes)?;
    }
    Ok(())
}
