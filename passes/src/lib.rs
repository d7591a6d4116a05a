//! detwasm-passes: wasm-to-wasm passes, pure functions from module bytes to module bytes.
//!
//! What they are for: rules of the determinism contract that the engine cannot be told
//! to follow, enforced by rewriting the module before it is compiled, so that they hold
//! the same way whatever CPU Cranelift compiles for: instructions counted in the module
//! ([`fuel`]), NaNs canonical wherever their bits can be observed ([`nan`]), stack depth
//! metered in the module ([`stack`]); and, before any of them, the scan that refuses
//! modules whose shape predicts unbounded compile work ([`shape`]).
//!
//! What they are not: optimisations, or anything that changes what a module computes
//! when it stays within the limits. This crate depends on wasmparser and wasm-encoder
//! only, never on an engine, so another engine or a fuzzer can use it. The passes are
//! applied in one place, `detwasm_runtime::engine::compile`, and each is named with its
//! version in `detwasm_runtime::engine::ENGINE_SETTINGS` (so a change of a pass changes
//! every job id). Their tests run the rewritten modules on that engine (wasmtime and the
//! runtime are dev-dependencies only).

pub mod fuel;
pub mod nan;
pub mod shape;
pub mod stack;
