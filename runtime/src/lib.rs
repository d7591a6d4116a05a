//! detwasm-runtime: the deterministic WASI host, jobs, results and module specs.

pub mod spec;
