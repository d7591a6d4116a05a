//! The one place where a job's capabilities are granted.
//!
//! Everything a guest can reach is built here from the [`Job`] alone: argv (argv[0]
//! fixed by the job, never the module's host path), the environment (the job's, nothing
//! of the host's), stdin bytes, the input mounts (read-only, or writable copy-on-write
//! copies for `--dir`) then the output volumes (read-write, empty) as preopened
//! directories in job order (fd 3, 4, …), the clocks
//! starting at the job's epoch and 0, the random stream keyed by the job's seed, and the
//! output quota. There is no other constructor of [`WasiHost`].

use crate::error::RunError;
use crate::job::Job;
use crate::wasi::host::WasiHost;
use crate::wasi::vfs::Vfs;

/// Builds the guest's world for `job`. Input trees are scanned here (names, sizes,
/// symlink targets); their times, inodes and link counts are the runtime's, not the
/// host's.
pub fn grant(job: &Job) -> Result<WasiHost, RunError> {
    let argv: Vec<Vec<u8>> = std::iter::once(job.argv0.as_bytes().to_vec())
        .chain(job.args.iter().map(|a| a.as_bytes().to_vec()))
        .collect();
    let env: Vec<Vec<u8>> = job
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    let epoch = job.epoch.unix_nanos;
    let mut vfs = Vfs::new();
    for input in &job.inputs {
        let mounted = if input.writable {
            vfs.mount_writable(&input.host, &input.guest, epoch)
        } else {
            vfs.mount_input(&input.host, &input.guest, epoch)
        };
        mounted.map_err(|reason| RunError::Input {
            path: input.host.clone(),
            reason,
        })?;
    }
    for output in &job.outputs {
        vfs.mount_output(&output.guest, epoch);
    }
    Ok(WasiHost::new(
        argv,
        env,
        job.stdin.clone(),
        vfs,
        epoch,
        job.seed,
        job.limits.max_output,
    ))
}
