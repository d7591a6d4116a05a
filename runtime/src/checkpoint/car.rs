//! A snapshot read out of a CAR file: what `detwasm hash --car` writes of a snapshot
//! folder, or of a whole checkpoints folder (consecutive snapshots share most of their
//! blocks, so one CAR of all of them is a fraction of their sum), moved to another
//! machine as one file.
//!
//! A CAR is untrusted, and a few kilobytes of it can describe terabytes (a block of
//! zeros linked over and over is a legitimate file of zeros) or billions of block
//! visits (an empty block linked over and over), so nothing is written before the
//! snapshot's shape and size are known and bounded:
//!
//! 1. Every block is checked against its CID while the CAR is parsed (the hasher's
//!    [`Car::parse`]); the CAR file is mapped, not read into memory.
//! 2. The root must be laid out as a snapshot folder: a plain folder of `state.json`,
//!    `frames`, `stdout`, `stderr` (files) and `memory/` and `files/` (plain folders of
//!    files named by numbers), nothing else; so the tree has three folders at most.
//! 3. `state.json` is read first, its size and block visits within [`MAX_STATE_BYTES`]
//!    (twice that for visits).
//! 4. The state's claims bound the rest: its memories (within the job's memory limit,
//!    and at most [`super::MAX_MEMORY`]), its frames (within the unwind memory's most), stdout,
//!    stderr and the files in memory (within the job's output quota, and at most
//!    [`super::MAX_OUTPUT`]); `memory/` and `files/` hold at most one entry per memory and per
//!    file in memory it claims, and those at most [`MAX_FILES`]. The claims are untrusted (a snapshot's job is checked
//!    against the module only after it is unpacked), so the caps, not the job, bound a
//!    hostile CAR: at most 8 + 1 + 4 GiB and 64 MiB written, whatever it claims. The
//!    whole tree, counted as unpacking would write it ([`Car::expanded`], every linked
//!    block each time it is reached), must fit the claims in bytes and entries, and its
//!    block visits in twice its bytes (plus a visit's charge per entry), before anything
//!    else is written.
//! 5. The folder is unpacked; its `state.json` must be the bytes checked in 3 (parsed
//!    once), and the state's own checks ([`Snapshot::open`]'s) and those of restoring
//!    (exact sizes against the state, every limit of the job) all apply.
//!
//! Found by review: the output quota was taken from the state uncapped (a 10 KB CAR
//! claiming a 1 PiB stdout wrote gigabytes); the entries allowed were not tied to the
//! layout (a 55 KB CAR made 524,294 empty folders, 2.1 GB of disk, in 6.5 minutes);
//! block visits were not bounded (a 5 KB chain of empty blocks described 2^40 visits);
//! a sharded root let the `state.json` checked differ from the one unpacked. A CAR's
//! `job.json` is never used: its host paths would be the sender's choice of files on
//! this machine to read and hash.
//!
//! Rejected: unpacking with a fixed budget (either too small for a real job or a disk
//! filled by a small CAR); reading the snapshot's parts straight from the CAR into the
//! instance (restoring would then have a second reader of every part to keep in step
//! with the folder's); sharded `files/` folders (a snapshot of thousands of files in
//! memory is resumed from its folder, not from a CAR).

use std::path::Path;

use detwasm_hasher::unpack::{Car, VISIT_CHARGE};
use detwasm_hasher::{unixfs, Cid};

use super::{Snapshot, State, MAX_STATE_BYTES, STATE_FILE};
use crate::error::RunError;

/// The most files in memory a snapshot unpacked from a CAR may have: 65,536. Each is a
/// file unpacked (an inode, and time), and a state of 64 MiB can claim over a million
/// empty ones (found by review: 1.4 million made in 78 s before the snapshot's own node
/// check refused it). A job with more is resumed from its snapshot folder, as one whose
/// `files/` folder is sharded is.
pub const MAX_FILES: u64 = 65_536;

/// The most blocks a snapshot CAR (or a CAR of a checkpoints folder, several snapshots
/// sharing blocks) may hold: 1,000,000, parsed into an index of about 200 MB at most.
/// A snapshot at its caps (8 GiB of memories, 1 GiB of frames, 4 GiB of files) in
/// 256 KiB chunks is about 54,000 blocks, and its files at most 65,536 more; the rest is
/// room for many snapshots in one CAR. Found by review: a 205 MB CAR of 5 million tiny
/// blocks took 954 MB to parse before it was refused. (The CAR itself is mapped, not
/// read: its pages count in the resident size while its blocks are hashed, and are the
/// page cache's to drop.)
pub const MAX_BLOCKS: usize = 1_000_000;

fn refused(car: &Path, why: impl std::fmt::Display) -> RunError {
    RunError::Snapshot {
        path: car.to_path_buf(),
        reason: format!("not a snapshot CAR detwasm can resume: {why}"),
    }
}

impl Snapshot {
    /// Unpacks the snapshot `want` (its CID; the CAR's root when `None`; a folder of a
    /// CAR of a whole checkpoints folder) of the CAR file `car` into the folder `into`
    /// (which must not exist) and opens it.
    /// `admit` is asked about the parsed state before anything is unpacked (a verifier's
    /// caps on the job's limits, which bound what the rest may claim).
    pub fn from_car(
        car: &Path,
        want: Option<&str>,
        into: &Path,
        admit: &dyn Fn(&State) -> Result<(), String>,
    ) -> Result<Snapshot, RunError> {
        let map = map_snapshot_car(car)?;
        let blocks = parse_snapshot_car(car, &map)?;
        Snapshot::from_parsed_car(car, &blocks, want, into, admit)
    }

    /// [`Self::from_car`] from a CAR already parsed ([`parse_snapshot_car`]): several
    /// snapshots of one CAR (a spot check's segments) unpacked from one parse. Found by
    /// review: each segment mapped the CAR and checked every block of it again, so a
    /// large CAR cost the verifier its size times the segments.
    pub fn from_parsed_car(
        car: &Path,
        blocks: &Car<'_>,
        want: Option<&str>,
        into: &Path,
        admit: &dyn Fn(&State) -> Result<(), String>,
    ) -> Result<Snapshot, RunError> {
        let bad = |why: String| refused(car, why);
        let root = match want {
            Some(text) => Cid::parse(text).ok_or_else(|| bad(format!("{text} is not a CID")))?,
            None => blocks.root(),
        };
        if !blocks.contains(&root) {
            return Err(bad(format!("it holds no block {}", show(root))));
        }
        let layout = Layout::of(blocks, root).map_err(&bad)?;
        let size = blocks
            .expanded(layout.state)
            .map_err(|e| bad(e.to_string()))?;
        if size.bytes > MAX_STATE_BYTES || size.work > 2 * MAX_STATE_BYTES {
            return Err(bad(format!(
                "its {STATE_FILE} has {} bytes in {} of block visits, more than it can \
                 have ({MAX_STATE_BYTES} bytes, twice that in visits)",
                size.bytes, size.work
            )));
        }
        let mut text = Vec::new();
        blocks
            .write_file(layout.state, &mut text, size.work)
            .map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
        let state: State =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
        admit(&state).map_err(&bad)?;
        let (claimed, files) = super::claimed(&state).map_err(&bad)?;
        if files > MAX_FILES {
            return Err(bad(format!(
                "{files} files in memory, more than the {MAX_FILES} a snapshot CAR can have \
                 (resume the snapshot folder)"
            )));
        }
        if layout.memories > state.memories.len() as u64 || layout.files > files {
            return Err(bad(format!(
                "it holds {} memories and {} files in memory, its state {} and {files}",
                layout.memories,
                layout.files,
                state.memories.len()
            )));
        }
        let most = claimed.saturating_add(text.len() as u64);
        // The root, its two folders, its four files, and one entry per memory and per
        // file in memory.
        let most_entries = 7 + layout.memories + layout.files;
        let most_work = most
            .saturating_mul(2)
            .saturating_add(most_entries.saturating_mul(2 * VISIT_CHARGE));
        let tree = blocks.expanded(root).map_err(|e| bad(e.to_string()))?;
        if tree.bytes > most || tree.entries > most_entries || tree.work > most_work {
            return Err(bad(format!(
                "it unpacks to {} bytes in {} entries ({} of block visits), more than the \
                 {most} bytes in {most_entries} entries ({most_work}) its state accounts for",
                tree.bytes, tree.entries, tree.work
            )));
        }
        // Writing is this machine's (its disk, its file size limit), not evidence about
        // the CAR (found by review: a verifier under `ulimit -f` called an honest
        // provider's CAR forged).
        std::fs::create_dir(into).map_err(|e| {
            RunError::io(format!("unpacking a snapshot into {}", into.display()), e)
        })?;
        let dir = into.join("snapshot");
        blocks
            .unpack_cid(root, &dir, tree.work)
            .map_err(|e| match e {
                detwasm_hasher::unpack::UnpackError::Write { path, cause } => RunError::io(
                    format!("unpacking a snapshot into {}", path.display()),
                    cause,
                ),
                e => bad(e.to_string()),
            })?;
        // The state checked above is the one resumed: the file unpacked must be its
        // bytes (then it need not be parsed again).
        let unpacked = super::read_bounded(&dir, STATE_FILE, MAX_STATE_BYTES)?;
        if unpacked != text {
            return Err(bad(format!(
                "its unpacked {STATE_FILE} is not the one checked"
            )));
        }
        Snapshot::checked(&dir, state)
    }
}

/// The CAR file `car`, mapped (not read) for [`parse_snapshot_car`].
/// A file that is empty or not a regular file is no snapshot CAR (its maker's); any
/// other error is this machine's reading of it (not there, unreadable), not evidence.
pub fn map_snapshot_car(car: &Path) -> Result<detwasm_hasher::unpack::Mmap, RunError> {
    detwasm_hasher::unpack::map_car_file(car).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            refused(car, e)
        } else {
            RunError::io(format!("snapshot CAR {}", car.display()), e)
        }
    })
}

/// The blocks of a mapped snapshot CAR, each checked against its CID, at most
/// [`MAX_BLOCKS`] of them.
pub fn parse_snapshot_car<'a>(car: &Path, map: &'a [u8]) -> Result<Car<'a>, RunError> {
    Car::parse_within(map, MAX_BLOCKS).map_err(|e| refused(car, e))
}

/// The entries of a snapshot's root, checked before anything is unpacked: a plain
/// folder of exactly the names a snapshot has, `memory/` and `files/` plain folders of
/// files named by numbers.
struct Layout {
    state: Cid,
    memories: u64,
    files: u64,
}

impl Layout {
    fn of(blocks: &Car<'_>, root: Cid) -> Result<Layout, String> {
        let mut state = None;
        let (mut memories, mut files) = (0, 0);
        for (name, c) in folder(blocks, root)? {
            let shown = String::from_utf8_lossy(&name).into_owned();
            match name.as_slice() {
                b"state.json" | b"frames" | b"stdout" | b"stderr" => {
                    is_file(blocks, c, &shown)?;
                    if name == STATE_FILE.as_bytes() {
                        state = Some(c);
                    }
                }
                b"memory" | b"files" => {
                    let inner = folder(blocks, c)?;
                    for (n, f) in &inner {
                        let numbered =
                            !n.is_empty() && n.len() <= 20 && n.iter().all(u8::is_ascii_digit);
                        if !numbered {
                            return Err(format!(
                                "{shown}/{} is not named by a number",
                                String::from_utf8_lossy(n)
                            ));
                        }
                        is_file(blocks, *f, &shown)?;
                    }
                    if name == b"memory" {
                        memories = inner.len() as u64;
                    } else {
                        files = inner.len() as u64;
                    }
                }
                _ => return Err(format!("an entry {shown:?}, which no snapshot has")),
            }
        }
        let state = state.ok_or_else(|| format!("{} has no {STATE_FILE}", show(root)))?;
        Ok(Layout {
            state,
            memories,
            files,
        })
    }
}

/// The entries of the plain folder `dir` (a sharded one is refused).
fn folder(blocks: &Car<'_>, dir: Cid) -> Result<Vec<(Vec<u8>, Cid)>, String> {
    let entries = blocks.entries(dir).map_err(|e| {
        format!("{e} (a sharded folder is resumed from its snapshot folder, not a CAR)")
    })?;
    Ok(entries.into_iter().map(|(n, c)| (n.to_vec(), c)).collect())
}

fn is_file(blocks: &Car<'_>, c: Cid, name: &str) -> Result<(), String> {
    match blocks.kind(c).map_err(|e| e.to_string())? {
        unixfs::TYPE_FILE | unixfs::TYPE_RAW => Ok(()),
        _ => Err(format!("{name} is not a file")),
    }
}

fn show(c: Cid) -> String {
    c.to_cid().to_string()
}
