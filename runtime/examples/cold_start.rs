//! Where a cold start goes: the passes one by one, and Cranelift's compile of the module
//! before and after them, in one process on this machine (issue 22's "report where the
//! 13 s go"). Not a test: figures go in `benches/RESULTS-run.md`.
//!
//! ```text
//! cargo run -p detwasm-runtime --example cold_start -- target/workloads/python-3.12.0.wasm
//! ```
//!
//! The dev profile optimises the passes and Cranelift as a release build does (see the
//! workspace's `Cargo.toml`). Each compile is wasmtime's `Module::new` with detwasm's
//! engine configuration (`deterministic_config`); the passes are `detwasm_passes`' entry
//! points in a job's order. A job's own path (`engine::compile` in a compile worker) also
//! sends the module to the worker and the compiled code back, and writes the cache.

use std::time::Instant;

use detwasm_passes as passes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: cold_start MODULE.wasm")?;
    let original = std::fs::read(&path)?;
    let timed = |name: &str, f: &dyn Fn() -> Result<Vec<u8>, String>| {
        let start = Instant::now();
        let out = f();
        println!("{name:<28} {:>8.3} s", start.elapsed().as_secs_f64());
        out
    };
    timed("shape scan", &|| {
        passes::shape::check(&original, &passes::shape::LIMITS)
            .map(|_| Vec::new())
            .map_err(|e| e.to_string())
    })?;
    let fueled = timed("fuel pass", &|| passes::fuel::meter(&original))?;
    let lowered = timed("relaxed SIMD lowering", &|| passes::relaxed::lower(&fueled))?;
    let canonical = timed("NaN pass", &|| passes::nan::canonicalize(&lowered))?;
    let metered = timed("stack pass", &|| passes::stack::meter(&canonical))?;

    let engine = wasmtime::Engine::new(&detwasm_runtime::engine::deterministic_config(true))?;
    for (name, bytes) in [
        ("the module as sent", &original),
        ("after the fuel pass", &fueled),
        ("after all the passes", &metered),
    ] {
        let start = Instant::now();
        let module = wasmtime::Module::new(&engine, bytes)?;
        let took = start.elapsed().as_secs_f64();
        let code = module.serialize()?.len();
        println!(
            "compile {name:<20} {took:>8.3} s  ({} bytes of wasm, {code} bytes compiled)",
            bytes.len()
        );
    }
    Ok(())
}
