//! detwasm-runtime: the one place that runs guests.
//!
//! What it is for: running a `wasm32-wasip1` module so that the same [`Job`] gives the
//! same results directory (and so the same results CID) and the same instruction count
//! on any host, at any time, under any load. It owns the engine configuration
//! ([`engine`]), compiling with a deadline ([`compile`], [`compile_worker`]), the module
//! cache ([`cache`]), the passes that make a module deterministic ([`passes`]),
//! the meter and the memory limiter, the deterministic preview1 host ([`wasi`]), what a
//! job may reach ([`capabilities`], the only place anything is granted), the run itself
//! ([`run`]), its snapshots at checkpoints and resuming from them ([`checkpoint`]) and
//! the delivery of its results ([`deliver`]); and the fuzz target of the preview1 host
//! ([`wasi_fuzz`]).
//!
//! What it is not: a general WASI runtime — there are no real clocks, no entropy, no
//! network and no host filesystem here, by design. It does not read job files
//! (`detwasm-jobspec`) and knows nothing of batches, verification or campaigns
//! (`detwasm-ops`); the job model is `detwasm-job`'s, re-exported here.
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

// The job model lives in its own crate; its modules are re-exported under their old
// names so that `detwasm_runtime::job::Job` and the runtime's own paths still read.
pub use detwasm_job::{error, job, receipt, results};

pub mod cache;
pub mod capabilities;
pub mod checkpoint;
pub mod compile;
pub mod compile_worker;
pub mod deliver;
pub mod engine;
pub mod limiter;
pub mod meter;
// The passes are detwasm-passes (bytes to bytes, no engine); the runtime applies them.
pub use detwasm_passes as passes;
pub mod run;
pub mod wasi;
pub mod wasi_fuzz;

pub use engine::EngineOptions;
pub use error::{JobError, RunError};
pub use job::{Epoch, Input, Job, Limits, Output, ResultsOptions};
pub use receipt::{Outcome, Receipt};
pub use results::Profile;
pub use run::{Destination, Runtime};
