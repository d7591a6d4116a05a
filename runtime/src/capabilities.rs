//! The one place where a job's capabilities are granted.
//!
//! Everything a guest can reach is built here from the [`Job`] alone: argv (argv[0]
//! fixed by the job, never the module's host path), the environment (the job's, nothing
//! of the host's), stdin bytes, the input mounts (read-only, or writable copy-on-write
//! copies for `--dir`) then the output volumes (read-write, empty) as preopened
//! directories in job order (fd 3, 4, …), the clocks
//! starting at the job's epoch and 0, the random stream keyed by the job's seed, and the
//! output quota. There is no other constructor of [`WasiHost`].

use crate::engine::Deadline;
use crate::error::RunError;
use crate::job::Job;
use crate::wasi::host::WasiHost;
use crate::wasi::vfs::Vfs;

/// Builds the guest's world for `job`. Input trees are scanned here (names, sizes,
/// symlink targets); their times, inodes and link counts are the runtime's, not the
/// host's. All of a job's input mounts share one scan budget (at most
/// [`MAX_INPUT_ENTRIES`](crate::wasi::vfs::MAX_INPUT_ENTRIES) entries and
/// [`MAX_INPUT_BYTES`](crate::wasi::vfs::MAX_INPUT_BYTES) of names, paths and link
/// targets, a folder counted once per mount): the scan that passes it stops there, and
/// the job is refused with [`RunError::Input`] naming that input and the limit. Rejected:
/// a budget per mount (multiplied by the 256 inputs a job may have).
pub fn grant(job: &Job) -> Result<WasiHost, RunError> {
    grant_by(job, None)
}

/// [`grant`], the input scans given up at `deadline` (the job's wall-clock deadline,
/// which starts before them): a scan still running then is
/// [`RunError::InputTimeout`], never a partial tree. Rejected: leaving scans outside
/// the deadline (bounded by the scan budget alone, a scan at the entry cap takes
/// seconds).
pub fn grant_by(job: &Job, deadline: Option<Deadline>) -> Result<WasiHost, RunError> {
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
    vfs.scan_until(deadline.map(|d| d.at));
    for input in &job.inputs {
        let mounted = if input.writable {
            vfs.mount_writable(&input.host, &input.guest, epoch)
        } else {
            vfs.mount_input(&input.host, &input.guest, epoch)
        };
        mounted.map_err(|reason| match deadline {
            Some(d) if vfs.scan_timed_out() => RunError::InputTimeout {
                what: format!(
                    "scanning input {} (mounted at {})",
                    input.host.display(),
                    input.guest
                ),
                secs: d.timeout.as_secs_f64(),
            },
            _ => RunError::Input {
                path: input.host.clone(),
                reason,
            },
        })?;
    }
    // A writable folder is delivered with the results, its unchanged files copied from
    // the host: their bytes must fit the output quota, as what the guest writes must.
    // Found by review: a 32 KB job folder whose writable folder held an 8 GiB sparse file
    // delivered 8.1 GB of results under a 256 MiB quota. The files are not charged to the
    // quota the guest writes against (a guest that rewrites its folder would pay twice,
    // and every count and outcome of jobs within the quota would change); so the results
    // of a job hold at most twice its quota. Rejected: charging the copy at delivery
    // (after the run, its outcome already decided).
    let mut seeded = 0u64;
    for (input, bytes) in job.inputs.iter().zip(vfs.host_file_bytes()) {
        if !input.writable {
            continue;
        }
        seeded = seeded.saturating_add(bytes);
        if seeded > job.limits.max_output {
            return Err(RunError::Input {
                path: input.host.clone(),
                reason: format!(
                    "its files (with the writable folders' before it) hold {seeded} bytes, \
                     more than the job's output quota of {} bytes: a writable folder is \
                     delivered with the results",
                    job.limits.max_output
                ),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writable_folders_larger_than_the_output_quota_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Sparse: its size, not its blocks, is what delivery would copy.
        std::fs::File::create(a.join("big"))
            .unwrap()
            .set_len(600)
            .unwrap();
        std::fs::write(b.join("small"), [1u8; 500]).unwrap();
        let job = |quota: u64| {
            let mut job = Job::new(Vec::new()).push_input(&a, "/a").push_dir(&b, "/b");
            job.limits.max_output = quota;
            job
        };
        // A read-only input is not delivered: only the writable folder's 500 bytes count.
        assert!(grant(&job(500)).is_ok());
        let err = grant(&job(499)).err().expect("over the quota");
        assert!(
            matches!(&err, RunError::Input { path, .. } if path == &b)
                && err
                    .to_string()
                    .contains("hold 500 bytes, more than the job's output quota of 499"),
            "{err}"
        );
    }

    #[test]
    fn input_scans_stop_at_the_jobs_deadline_naming_the_input() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"f").unwrap();
        let job = Job::new(Vec::new()).push_input(t.path(), "/in");
        let later = Deadline::after(Duration::from_secs(3600));
        assert!(grant_by(&job, later).is_ok());
        let now = Deadline::after(Duration::ZERO);
        let err = grant_by(&job, now).err().expect("past its deadline");
        assert!(matches!(err, RunError::InputTimeout { .. }), "{err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "scanning input {} (mounted at /in) did not finish within the job's \
                 wall-clock timeout of 0 s",
                t.path().display()
            )),
            "{shown}"
        );
    }
}
