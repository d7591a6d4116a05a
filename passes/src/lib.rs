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
//! only, never on an engine, so another engine or a fuzzer can use it. The passes are
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
