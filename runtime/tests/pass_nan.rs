//! The NaN pass (`detwasm_passes::nan`) with the runtime's engine: its refusals as the
//! engine reports them, after the passes that run before it. This test was in
//! `passes/src/nan.rs`; it lives here so that detwasm-passes depends on no engine, not
//! even for its tests (its pure rewriting checks stay there).

use detwasm_passes::nan::canonicalize;

/// A function at WebAssembly's limit of locals cannot get a scratch local: refused
/// with a message that says why (found by an adversarial review).
#[test]
fn a_function_at_the_locals_limit_is_refused_with_the_reason() {
    let observed = "(f32.store (i32.const 0) (f32.add (local.get 0) (local.get 0)))";
    let module = |declared: usize| {
        let locals = " i32".repeat(declared);
        wat::parse_str(format!(
            "(module (memory 1) (func (param f32) (local{locals}) {observed}))"
        ))
        .unwrap()
    };
    canonicalize(&module(49_998)).unwrap();
    let e = canonicalize(&module(49_999)).unwrap_err();
    assert!(e.contains("limit of 50000"), "{e}");
    let engine = detwasm_runtime::engine::new_engine(&detwasm_runtime::engine::EngineOptions {
        cache_dir: None,
        parallel_compilation: false,
    })
    .unwrap();
    let e = detwasm_runtime::engine::compile(&engine, &module(49_999))
        .unwrap_err()
        .to_string();
    // The fuel pass, which runs first, needs two locals more and says so.
    assert!(
        e.contains("fuel metering") && e.contains("limit of 50000"),
        "{e}"
    );
}
