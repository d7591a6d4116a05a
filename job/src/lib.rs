//! detwasm-job: what a job is and what it gave, without running anything.
//!
//! What it owns: the [`Job`] (module, entry point, args, env, stdin, input trees,
//! writable folders, seed, clock epoch, limits, results options), its identity (the
//! pinned encoding hashed into the job id), the [`Receipt`] and its [`Outcome`], how a
//! results folder is hashed into its CID ([`results`], by `detwasm-hasher`), and the
//! errors that say why a job could not be run ([`JobError`], [`RunError`]), and the
//! locked scratch folders every layer stages a job's content in ([`scratch`]), so that
//! what a killed run left is removed by the next.
//!
//! What it does not: run a guest (that is `detwasm-runtime`), read job files (that is
//! `detwasm-jobspec`), or depend on an engine. Job formats, the runtime and the tools
//! above them all speak in these types, so they can agree on a job without agreeing on
//! anything else.

pub mod error;
pub mod job;
pub mod receipt;
pub mod results;
pub mod scratch;

pub use error::{JobError, RunError};
pub use job::{Epoch, Input, Job, Limits, Output, ResultsOptions};
pub use receipt::{Outcome, Receipt};
pub use results::Profile;
