//! Wasm-to-wasm passes: pure functions from module bytes to module bytes.
//!
//! What they are for: rules of the determinism contract that the engine cannot be told
//! to follow, enforced by rewriting the module before it is compiled, so that they hold
//! the same way whatever CPU Cranelift compiles for. Each pass is applied in one place,
//! [`crate::engine::compile`], and is named with its version in
//! [`crate::engine::ENGINE_SETTINGS`] (so a change of a pass changes every job id). What
//! they are not: optimisations, or anything that changes what a module computes when it
//! stays within the limits.

pub mod fuel;
pub mod nan;
pub mod shape;
pub mod stack;
