//! detwasm-wasi: the state and the calls of detwasm's `wasi_snapshot_preview1`, as plain
//! Rust over guest memory given as bytes.
//!
//! What it owns: the preview1 ABI (errnos, layouts, checked reads and writes of guest
//! memory: [`abi`]), every preview1 call over a state that is a function of the job
//! alone ([`host::WasiHost`]: virtual clocks, a seeded ChaCha20 stream, captured stdio
//! with a byte quota), and the virtual filesystem ([`vfs`]: input trees read through
//! `cap_std` handles, copy-on-write writable folders, output volumes in memory, quota
//! accounting). Every determinism decision of the host is recorded here, beside the code
//! that makes it.
//!
//! What it does not: depend on an engine, or decide what a job may reach. Linking these
//! calls into wasmtime, charging their work as fuel and building a host from a job (the
//! one place capabilities are granted) are `detwasm-runtime`'s; this crate has no notion
//! of a job, so it can be tested, fuzzed and audited alone.

pub mod abi;
pub mod host;
pub mod vfs;
