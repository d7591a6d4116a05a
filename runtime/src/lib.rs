//! detwasm-runtime: the deterministic WASI host, jobs, results and module specs.
//!
//! What it is for: running a `wasm32-wasip1` module so that the same [`Job`] gives the
//! same results directory (and so the same results CID) and the same instruction count
//! on any host, at any time, under any load. What it is not: a general WASI runtime —
//! there are no real clocks, no entropy, no network and no host filesystem here, by
//! design.
//!
//! ```no_run
//! use detwasm_runtime::{Destination, EngineOptions, Job, Runtime};
//! let rt = Runtime::new(EngineOptions::default())?;
//! let job = Job::new(std::fs::read("module.wasm").unwrap())
//!     .push_input("data", "/inputs")
//!     .push_arg("--verbose");
//! let receipt = rt.run(&job, &Destination::At("results".into()))?;
//! println!("{} exit {} after {} instructions", receipt.cid, receipt.exit_code, receipt.instructions);
//! # Ok::<(), detwasm_runtime::RunError>(())
//! ```
//!
//! Where each determinism decision is recorded: the engine configuration in
//! [`engine`]; the preview1 host as a whole in [`wasi`]; clocks and randomness in
//! [`wasi::host`]; the filesystem in [`wasi::vfs`]; what a job may reach in
//! [`capabilities`]; limits in [`job::Limits`].

pub mod batch;
pub mod campaign;
pub mod capabilities;
pub mod deliver;
pub mod engine;
pub mod error;
pub mod job;
pub mod limiter;
pub mod meter;
pub mod passes;
pub mod receipt;
pub mod remote;
pub mod request;
pub mod results;
pub mod run;
pub mod scaffold;
pub mod selffuzz;
pub mod spec;
pub mod verify;
pub mod wasi;

pub use engine::EngineOptions;
pub use error::{JobError, RunError};
pub use job::{Epoch, Input, Job, Limits, Output, ResultsOptions};
pub use receipt::{Outcome, Receipt};
pub use request::JobRequest;
pub use results::Profile;
pub use run::{Destination, Runtime};
