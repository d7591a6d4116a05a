//! detwasm-passes: wasm-to-wasm passes, pure functions from module bytes to module bytes.
//!
//! What they are for: rules of the determinism contract that the engine cannot be told
//! to follow, enforced by rewriting the module before it is compiled, so that they hold
//! the same way whatever CPU Cranelift compiles for: instructions counted in the module
//! ([`fuel`]), relaxed SIMD giving the deterministic profile's results ([`relaxed`]),
//! NaNs canonical wherever their bits can be observed ([`nan`]), stack depth metered in
//! the module ([`stack`]); and, before any of them, the scan that refuses
//! modules whose shape predicts unbounded compile work ([`shape`]).
//!
//! What they are not: optimisations, or anything that changes what a module computes
//! when it stays within the limits. This crate depends on wasmparser and wasm-encoder
//! (and rayon, to work on function bodies in parallel), never on an engine, so another
//! engine or a fuzzer can use it. The passes are
//! applied in one place, `detwasm_runtime::engine::compile`, and each is named with its
//! version in `detwasm_runtime::engine::ENGINE_SETTINGS` (so a change of a pass changes
//! every job id). The unit tests here check the rewriting alone; the tests that run the
//! rewritten modules on that engine are integration tests of the crates above it
//! (`runtime/tests/pass_*.rs`, `fuzzing/tests/pass_nan_eager.rs`), so that not even a
//! dev-dependency of this crate is an engine.

/// The code the passes emit where it changes and nothing a module computes does (its
/// counts, results, traps and the depth at which its stack is exhausted): it names
/// compiled modules in the module cache (`detwasm_runtime::cache`), so that no module
/// compiled from the older code is used, and is not in the engine fingerprint, so job ids
/// do not change with it (as they do not with wasmtime's version). `tests/protocol.rs`
/// pins the receipts such a change must leave as they are. `-1`: the stack pass keeps
/// the counter's value on entry in a local and restores it on return ([`stack`]). `-2`:
/// the unwind pass gives loops plain copies ("Loops run plain" in [`unwind`]; its frames
/// are the same, so snapshots taken before resume).
/// Rejected: a new pass version for such a change (every job id would change, and
/// receipts made before could no longer be verified, for no change of any result).
pub const CODEGEN: &str = "detwasm-codegen-2";

pub mod fuel;
pub mod nan;
pub mod relaxed;
pub mod shape;
pub mod stack;
pub mod unwind;

/// `f` applied to each item on the current rayon pool (the compile's own, see
/// `detwasm_runtime::compile`), the results in the items' order, so the output is the
/// same as one thread's. Why: a pass's work is nearly all per function body (validation,
/// analysis, rewriting), and a cold start waits for the passes before Cranelift can
/// start: on two cores, CPython's passes took 1.47 s on one thread, about 1.0 s this way
/// (`cargo run -p detwasm-runtime --example cold_start`). Rejected: threads of the
/// pass's own (outside the compile's pool, so outside the bound on a compile's threads).
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    items.into_par_iter().map(f).collect()
}

/// A function body the module's validator handed out, not yet validated.
pub(crate) type ToValidate<'a> = (
    wasmparser::FuncToValidate<wasmparser::ValidatorResources>,
    wasmparser::FunctionBody<'a>,
);

/// `f` applied to each body with a validator of its own ([`par_map`]'s way, each thread
/// reusing its validator's allocations), the results in the bodies' order.
pub(crate) fn par_validate<R: Send>(
    bodies: Vec<ToValidate>,
    f: impl Fn(
            &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
            &wasmparser::FunctionBody,
        ) -> R
        + Sync
        + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    bodies
        .into_par_iter()
        .map_init(
            wasmparser::FuncValidatorAllocations::default,
            |allocs, (to_validate, body)| {
                let mut v = to_validate.into_validator(std::mem::take(allocs));
                let r = f(&mut v, &body);
                *allocs = v.into_allocations();
                r
            },
        )
        .collect()
}

/// Where a payload's section goes in a module (sections the passes add are written
/// before the first payload that comes after them).
pub(crate) fn section_order(p: &wasmparser::Payload) -> u32 {
    match p {
        wasmparser::Payload::Version { .. } => 0,
        wasmparser::Payload::TypeSection(_) => 1,
        wasmparser::Payload::ImportSection(_) => 2,
        wasmparser::Payload::FunctionSection(_) => 3,
        wasmparser::Payload::TableSection(_) => 4,
        wasmparser::Payload::MemorySection(_) => 5,
        wasmparser::Payload::TagSection(_) => 5,
        wasmparser::Payload::GlobalSection(_) => 6,
        wasmparser::Payload::ExportSection(_) => 7,
        wasmparser::Payload::StartSection { .. } => 8,
        wasmparser::Payload::ElementSection(_) => 9,
        wasmparser::Payload::DataCountSection { .. } => 10,
        wasmparser::Payload::CodeSectionStart { .. } | wasmparser::Payload::CodeSectionEntry(_) => {
            11
        }
        wasmparser::Payload::DataSection(_) => 12,
        wasmparser::Payload::End(_) => 13,
        _ => 0,
    }
}

/// Appends the functions a constant expression names with `ref.func` to `out`.
pub(crate) fn ref_funcs_in_expr(
    e: &wasmparser::ConstExpr,
    out: &mut Vec<u32>,
) -> Result<(), wasmparser::BinaryReaderError> {
    let mut r = e.get_operators_reader();
    while !r.eof() {
        if let wasmparser::Operator::RefFunc { function_index } = r.read()? {
            out.push(function_index);
        }
    }
    Ok(())
}

/// Appends the functions an element section names (as indices or in expressions) to
/// `out`.
pub(crate) fn ref_funcs_in_elements(
    r: wasmparser::ElementSectionReader,
    out: &mut Vec<u32>,
) -> Result<(), wasmparser::BinaryReaderError> {
    for e in r {
        match e?.items {
            wasmparser::ElementItems::Functions(fs) => {
                for f in fs {
                    out.push(f?);
                }
            }
            wasmparser::ElementItems::Expressions(_, es) => {
                for e in es {
                    ref_funcs_in_expr(&e?, out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A module of `n` functions that loop, call each other, store floats and recurse:
    /// work for every pass in every body.
    fn many_functions(n: usize) -> Vec<u8> {
        let mut wat = String::from("(module (memory 1) (global $g (mut f64) (f64.const 0))");
        for i in 0..n {
            let callee = (i * 7 + 3) % n;
            wat.push_str(&format!(
                "(func $f{i} (param i32 f64) (result f64) (local f64)
                   (loop $l
                     (local.set 2 (f64.add (local.get 2) (f64.mul (local.get 1) (f64.const {i}))))
                     (f64.store (i32.const 8) (local.get 2))
                     (br_if $l (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 3))))
                   (if (i32.lt_u (local.get 0) (i32.const 2))
                     (then (local.set 2 (call $f{callee} (local.get 0) (f64.sqrt (local.get 2))))))
                   (global.set $g (local.get 2))
                   (local.get 2))"
            ));
        }
        wat.push_str("(export \"f0\" (func $f0)))");
        wat::parse_str(&wat).expect("valid text")
    }

    /// The passes work on bodies in parallel ([`super::par_map`]); what they write must
    /// not depend on how many threads did it, or on which finished first.
    #[test]
    fn the_passes_write_the_same_bytes_on_one_thread_and_on_many() {
        let module = many_functions(300);
        let all = |m: &[u8]| {
            let fueled = super::fuel::meter(m).unwrap();
            let lowered = super::relaxed::lower(&fueled).unwrap();
            let canonical = super::nan::canonicalize(&lowered).unwrap();
            (
                fueled.clone(),
                canonical.clone(),
                super::stack::meter(&canonical).unwrap(),
            )
        };
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| all(&module))
        };
        let one = on(1);
        assert_ne!(one.1, one.0, "the NaN pass had something to canonicalize");
        for threads in [2, 4, 7] {
            assert!(
                on(threads) == one,
                "{threads} threads wrote other bytes than one"
            );
        }
    }
}
