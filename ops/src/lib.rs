//! detwasm-ops: the tools built on the runtime, one module each.
//!
//! What it owns: turning a user's request (the options of `detwasm run`, a line of a
//! jobs file, a Python call) into a job ([`request`]); many jobs in one process
//! ([`batch`]) and on other machines ([`remote`]); checking a provider's result by
//! re-running its job ([`verify`]); the perturbation campaign that tells an author what a
//! module's output depends on ([`campaign`], `detwasm fuzz`) and where two runs first
//! parted ([`divergence`]); starting and packing a module folder ([`scaffold`]) and
//! checking one before it is published ([`check`]); CAR files read as content, sized
//! before they are written out ([`unpack`]). [`scratch`] is `detwasm-job`'s (scratch
//! folders a killed run does not leave behind), re-exported here where most are made.
//!
//! What it does not: grant a guest anything or run one itself — every run goes through
//! `detwasm-runtime`'s `Runtime`, and every job file is read by `detwasm-jobspec`.
//!
//! Arrows point down only: the CLI and the Python package call this crate; it calls
//! `detwasm-runtime`, `detwasm-jobspec`, `detwasm-job` and `detwasm-hasher`, none of
//! which know it exists.

pub mod batch;
pub mod campaign;
pub mod check;
pub mod divergence;
pub mod ipfs;
pub mod remote;
pub mod request;
pub mod scaffold;
pub mod text;
pub use detwasm_job::scratch;
pub mod unpack;
pub mod verify;

pub use request::JobRequest;
