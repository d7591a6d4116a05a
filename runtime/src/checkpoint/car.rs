//! A snapshot read out of a CAR file: what `detwasm hash --car` writes of a snapshot
//! folder, or of a whole checkpoints folder (consecutive snapshots share most of their
//! blocks, so one CAR of all of them is a fraction of their sum), moved to another
//! machine as one file.
//!
//! A CAR is untrusted, and a few kilobytes of it can describe terabytes (a block of
//! zeros linked over and over is a legitimate file of zeros), so nothing is written
//! before its size is known and bounded by what the snapshot claims:
//!
//! 1. Every block is checked against its CID while the CAR is parsed (the hasher's
//!    [`Car::parse`]); the CAR file is mapped, not read into memory.
//! 2. `state.json` is read first, from its expanded size at most [`MAX_STATE_BYTES`].
//! 3. The state's claims bound the rest: its memories (within the job's memory limit,
//!    and at most [`MAX_MEMORY`] whatever the job claims), its frames (within the unwind
//!    memory's most), stdout, stderr and the files in memory (within the job's output
//!    quota). The snapshot's whole tree, counted as unpacking would write it
//!    ([`Car::expanded`], every linked block each time it is reached), must fit in their
//!    sum plus the state before anything else is written; a larger tree is refused with
//!    both figures.
//! 4. The folder is then unpacked and opened as any snapshot folder ([`Snapshot::open`]),
//!    whose checks (exact sizes against the state, every limit of the job) all apply.
//!
//! Rejected: unpacking with a fixed budget (either too small for a real job or a disk
//! filled by a small CAR); reading the snapshot's parts straight from the CAR into the
//! instance (restoring would then have a second reader of every part to keep in step
//! with the folder's).

use std::path::Path;

use detwasm_hasher::dagpb;
use detwasm_hasher::unpack::Car;
use detwasm_hasher::Cid;

use super::{Snapshot, State, JOB_FILE, MAX_STATE_BYTES, PAGE, STATE_FILE};
use crate::error::RunError;
use crate::passes::unwind;
use crate::wasi::vfs::snapshot::SavedKind;

/// The most bytes of memories a snapshot unpacked from a CAR may write, whatever its
/// job's memory limit says: 8 GiB (two full 32-bit memories). The claim is untrusted
/// until the snapshot is opened and its job checked, so a forged limit must not decide
/// how much disk a small CAR fills.
pub const MAX_MEMORY: u64 = 8 << 30;

fn refused(car: &Path, why: impl std::fmt::Display) -> RunError {
    RunError::Input {
        path: car.to_path_buf(),
        reason: format!("not a snapshot CAR detwasm can resume: {why}"),
    }
}

impl Snapshot {
    /// Unpacks the snapshot `want` (its CID; the CAR's root when `None`) of the CAR file
    /// `car` into the folder `into` (which must not exist) and opens it. When `want` is
    /// a folder of the root (a CAR of a whole checkpoints folder), the root's
    /// `job.json`, if any, is unpacked beside it, as a checkpoints folder has it.
    pub fn from_car(car: &Path, want: Option<&str>, into: &Path) -> Result<Snapshot, RunError> {
        let bad = |why: String| refused(car, why);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(car)
                .map_err(|e| bad(e.to_string()))?
        };
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() || meta.len() == 0 {
            return Err(bad("not a regular, non-empty file".into()));
        }
        // SAFETY: the mapping is read-only and private; the file is not modified by
        // this process. Another process truncating it while mapped raises SIGBUS, as
        // for any reader that maps (the hasher maps large files the same way).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        let blocks = Car::parse(&map).map_err(|e| bad(e.to_string()))?;
        let root = match want {
            Some(text) => Cid::parse(text).ok_or_else(|| bad(format!("{text} is not a CID")))?,
            None => blocks.root(),
        };
        if !blocks.contains(&root) {
            return Err(bad(format!("it holds no block {}", show(root))));
        }
        let state_cid = entry(&blocks, root, STATE_FILE)
            .map_err(&bad)?
            .ok_or_else(|| bad(format!("{} has no {STATE_FILE}", show(root))))?;
        let size = blocks.expanded(state_cid).map_err(|e| bad(e.to_string()))?;
        if size.bytes > MAX_STATE_BYTES {
            return Err(bad(format!(
                "its {STATE_FILE} has {} bytes, more than the {MAX_STATE_BYTES} it can have",
                size.bytes
            )));
        }
        let mut text = Vec::new();
        blocks
            .write_file(state_cid, &mut text, size.work)
            .map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
        let state: State =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
        let (claimed, files) = claimed(&state).map_err(&bad)?;
        let most = claimed.saturating_add(text.len() as u64);
        // The root, state.json, frames, stdout, stderr, memory/ and files/, and one
        // entry per memory and per file in memory.
        let most_entries = 7 + state.memories.len() as u64 + files;
        let tree = blocks.expanded(root).map_err(|e| bad(e.to_string()))?;
        if tree.bytes > most || tree.entries > most_entries {
            return Err(bad(format!(
                "it unpacks to {} bytes in {} entries, more than the {most} bytes in {most_entries} \
                 its state accounts for",
                tree.bytes, tree.entries
            )));
        }
        std::fs::create_dir(into).map_err(|e| bad(format!("{}: {e}", into.display())))?;
        let snapshot = into.join("snapshot");
        blocks
            .unpack_cid(root, &snapshot, tree.work)
            .map_err(|e| bad(e.to_string()))?;
        if want.is_some() && root != blocks.root() {
            if let Ok(Some(job)) = entry(&blocks, blocks.root(), JOB_FILE) {
                let fits = blocks
                    .expanded(job)
                    .is_ok_and(|s| s.bytes <= MAX_STATE_BYTES && s.entries == 1);
                if fits {
                    let mut out = std::fs::File::create(into.join(JOB_FILE))
                        .map_err(|e| bad(format!("{}: {e}", into.display())))?;
                    // A job.json that is not a file is ignored, as beside a folder.
                    let _ = blocks.write_file(job, &mut out, 2 * MAX_STATE_BYTES);
                }
            }
        }
        Snapshot::open(&snapshot)
    }
}

/// The bytes the state says its files hold, each claim checked against the job's
/// limits (and memories against [`MAX_MEMORY`]), and its number of files in memory.
fn claimed(s: &State) -> Result<(u64, u64), String> {
    let limits = &s.job.limits;
    let memories = s.memories.iter().fold(0u64, |sum, m| {
        sum.saturating_add(m.pages.saturating_mul(PAGE))
    });
    if memories > limits.memory.min(MAX_MEMORY) {
        return Err(format!(
            "its memories have {memories} bytes, more than the {} it can have",
            limits.memory.min(MAX_MEMORY)
        ));
    }
    if s.frames > unwind::MAX_PAGES * PAGE {
        return Err(format!("{} bytes of frames", s.frames));
    }
    let (mut files, mut count) = (0u64, 0u64);
    for n in s.host.vfs.nodes.iter().flatten() {
        if let SavedKind::MemFile(len) = n.kind {
            files = files.saturating_add(len);
            count += 1;
        }
    }
    let printed = s.host.stdout_len.saturating_add(s.host.stderr_len);
    let written = files.saturating_add(printed);
    if written > limits.max_output {
        return Err(format!(
            "its files, stdout and stderr have {written} bytes, more than the job's output \
             quota of {}",
            limits.max_output
        ));
    }
    Ok((
        memories.saturating_add(s.frames).saturating_add(written),
        count,
    ))
}

/// The CID of the entry `name` of the folder `dir` (a plain UnixFS folder: a snapshot's
/// or a checkpoints folder's few entries are never sharded), `None` when it has none.
fn entry(blocks: &Car<'_>, dir: Cid, name: &str) -> Result<Option<Cid>, String> {
    let block = blocks.block(&dir).map_err(|e| e.to_string())?;
    let node = dagpb::decode_node(block).map_err(|e| format!("{}: {e}", show(dir)))?;
    for link in node.links {
        if link.name == name.as_bytes() {
            return Cid::from_bytes(link.hash)
                .map(Some)
                .ok_or_else(|| format!("{}: the link {name} is not a CID read here", show(dir)));
        }
    }
    Ok(None)
}

fn show(c: Cid) -> String {
    c.to_cid().to_string()
}
