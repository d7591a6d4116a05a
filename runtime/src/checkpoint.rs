//! Snapshots: a job's complete state at a checkpoint, saved as a folder whose UnixFS CID
//! is its state hash, and restored into a fresh instance of the same job to go on from
//! there.
//!
//! A checkpoint ([`crate::meter`], [`crate::passes::unwind`]) leaves the guest unwound:
//! its call stack is in the unwind memory as frames, and what is left is plain data. A
//! snapshot is that data, as files, in one folder per checkpoint:
//!
//! | file | what |
//! | --- | --- |
//! | `state.json` | [`State`]: the job id, the engine and pass that made the frames, the meter, the mutable globals, the memories' sizes, the WASI host (fds, offsets, clocks, the random stream's position, the filesystem's nodes), the CIDs of the snapshots before this one |
//! | `memory/N` | the bytes of the module's memory N |
//! | `frames` | the saved call stack (the unwind memory up to its end pointer) |
//! | `stdout`, `stderr` | what the guest printed so far |
//! | `files/N` | the content of the file in memory at node N (output volumes, changed files of writable folders) |
//!
//! Its CID is the folder's, hashed as results are (the job's profile): large files are
//! chunked, so a memory page range that did not change between two checkpoints is the
//! same blocks in both, and a CAR of consecutive snapshots holds it once. Nothing in it
//! depends on the host: no host path, no time of the host, no CPU-dependent bits (float
//! globals are saved with NaNs canonical, as the NaN pass makes every observable NaN), so
//! the same job gives the same snapshot CIDs on every host and CPU, which is what a
//! spot check compares. The host details needed to resume on the same machine (where
//! the module and inputs are) are in `job.json` beside the snapshots, outside their CIDs.
//!
//! A snapshot is untrusted input. Resuming one ([`restore`]) instantiates the module the
//! job names afresh and only then overwrites the guest's own state: memories (within the
//! job's memory limit, through its limiter), mutable globals (of their declared types),
//! the frames (which the module's own rewind code reads, so a forged frame can only make
//! the guest compute something else, inside its sandbox, or trap) and the host's state,
//! which is checked structurally before use ([`detwasm_wasi::vfs::snapshot`]). Files
//! are read with their sizes checked against the state and the job's limits before
//! their bytes. Rejected: a snapshot format of our own in one file (no dedup between
//! checkpoints, no CID for free); wasmtime's own serialization of an instance (it has
//! none for a running guest); saving host paths in the snapshot (the CID would then
//! depend on where the inputs are).

mod car;
pub use car::{map_snapshot_car, parse_snapshot_car};
pub use detwasm_hasher::unpack::Car;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wasmtime::{AsContextMut, Extern, Instance, Val};

use crate::error::RunError;
use crate::meter::MeterState;
use crate::passes::unwind;
use crate::receipt::JobRecord;
use crate::wasi::host::snapshot::SavedHost;
use crate::wasi::host::WasiHost;
use crate::wasi::vfs::snapshot::SavedKind;

/// The format of a snapshot folder.
pub const FORMAT: &str = "detwasm-snapshot-1";
/// The state file of a snapshot folder.
pub const STATE_FILE: &str = "state.json";
/// The file beside a checkpoints folder's snapshots with the job's host details.
pub const JOB_FILE: &str = "job.json";
const PAGE: u64 = 65_536;

/// The state of a snapshot, `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: String,
    /// The job (its id names the module, inputs, args, env, limits and engine).
    pub job_id: String,
    /// The job as its receipt records it, without host paths (module path, inputs'
    /// host folders): what a resume needs besides the module and the inputs.
    pub job: JobRecord,
    #[serde(with = "crate::results::profile_serde")]
    pub profile: crate::results::Profile,
    pub skip_hidden: bool,
    /// The engine fingerprint and the unwind pass that wrote the frames: a snapshot is
    /// resumed by the same only.
    pub engine: String,
    pub unwind_pass: String,
    /// 1 for the first checkpoint of the run.
    pub index: u64,
    /// Instructions run at the checkpoint.
    pub instructions: u64,
    /// The CIDs of the snapshots before this one, in order: as many as the checkpoints
    /// before it (checked on open), each CID-shaped (checked while parsing).
    #[serde(deserialize_with = "detwasm_job::receipt::trace_cids")]
    pub trace: Vec<String>,
    pub meter: MeterState,
    pub globals: Vec<SavedGlobal>,
    pub memories: Vec<SavedMemory>,
    /// Bytes of `frames`.
    pub frames: u64,
    pub host: SavedHost,
    /// Taken when the wall-clock deadline struck, between two checkpoints of the trace:
    /// not in the trace, and a run resumed from it takes the trace's next checkpoint as
    /// the run never stopped would.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off_trace: bool,
}

/// A mutable global of the module: its index, type and bits (hexadecimal, little end
/// last: `0x` and the value's bits as an unsigned number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGlobal {
    pub index: u32,
    #[serde(rename = "type")]
    pub ty: String,
    pub bits: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMemory {
    pub index: u32,
    pub pages: u64,
}

/// Where a run saves its snapshots, and the CIDs saved so far.
pub struct Sink {
    pub dir: PathBuf,
    pub trace: Vec<String>,
    /// The folder (in `dir`) of the snapshot to resume from, when the deadline stopped
    /// the run.
    pub resume: Option<String>,
    /// The folder of the last snapshot saved.
    pub last: Option<String>,
    /// Keep only the last snapshot ([`crate::run::Checkpointing::only_last`]).
    pub only_last: bool,
}

/// The folder name of the snapshot taken when the deadline struck between two
/// checkpoints of the trace.
pub const TIMEOUT_SNAPSHOT: &str = "timeout";

fn io(what: impl std::fmt::Display, e: std::io::Error) -> RunError {
    RunError::HostFailure(format!("saving a snapshot: {what}: {e}"))
}

fn canonical(v: Val) -> Val {
    match v {
        Val::F32(b) if f32::from_bits(b).is_nan() => Val::F32(0x7fc0_0000),
        Val::F64(b) if f64::from_bits(b).is_nan() => Val::F64(0x7ff8_0000_0000_0000),
        v => v,
    }
}

fn encode(v: &Val) -> Option<(&'static str, String)> {
    Some(match v {
        Val::I32(x) => ("i32", format!("{:#x}", *x as u32)),
        Val::I64(x) => ("i64", format!("{:#x}", *x as u64)),
        Val::F32(b) => ("f32", format!("{b:#x}")),
        Val::F64(b) => ("f64", format!("{b:#x}")),
        Val::V128(b) => ("v128", format!("{:#x}", b.as_u128())),
        _ => return None,
    })
}

fn decode(ty: &str, bits: &str) -> Option<Val> {
    let n = u128::from_str_radix(bits.strip_prefix("0x")?, 16).ok()?;
    Some(match ty {
        "i32" => Val::I32(u32::try_from(n).ok()? as i32),
        "i64" => Val::I64(u64::try_from(n).ok()? as i64),
        "f32" => Val::F32(u32::try_from(n).ok()?),
        "f64" => Val::F64(u64::try_from(n).ok()?),
        "v128" => Val::V128(n.into()),
        _ => return None,
    })
}

/// The index in an export named `prefix` and a number, if it is one.
fn indexed(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The module's exported memories and mutable globals ([`unwind::EXPORT_MEMORY_PREFIX`]),
/// by index.
#[allow(clippy::type_complexity)]
fn exported(
    mut store: impl AsContextMut,
    instance: &Instance,
) -> (Vec<(u32, wasmtime::Memory)>, Vec<(u32, wasmtime::Global)>) {
    let (mut memories, mut globals) = (Vec::new(), Vec::new());
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut store)
        .map(|e| (e.name().to_string(), e.into_extern()))
        .collect();
    for (name, e) in exports {
        match e {
            Extern::Memory(m) => {
                if let Some(i) = indexed(&name, unwind::EXPORT_MEMORY_PREFIX) {
                    memories.push((i, m));
                }
            }
            Extern::Global(g) => {
                if let Some(i) = indexed(&name, unwind::EXPORT_GLOBAL_PREFIX) {
                    globals.push((i, g));
                }
            }
            _ => {}
        }
    }
    memories.sort_by_key(|(i, _)| *i);
    globals.sort_by_key(|(i, _)| *i);
    (memories, globals)
}

fn unwind_parts(
    mut store: impl AsContextMut,
    instance: &Instance,
) -> Option<(wasmtime::Memory, wasmtime::Global, wasmtime::Global)> {
    let memory = instance.get_memory(&mut store, unwind::EXPORT_MEMORY)?;
    let ptr = instance.get_global(&mut store, unwind::EXPORT_PTR)?;
    let state = instance.get_global(&mut store, unwind::EXPORT_STATE)?;
    Some((memory, ptr, state))
}

/// What of the job a snapshot records besides its id.
pub struct JobInfo<'a> {
    pub job_id: &'a str,
    pub record: &'a JobRecord,
    pub results: crate::job::ResultsOptions,
    pub engine: &'a str,
}

/// Saves the state of a guest that has just unwound for a checkpoint (and been set to
/// rewind) as the next snapshot in `sink`, and returns its CID.
pub fn save(
    mut store: impl AsContextMut<Data = crate::wasi::Ctx>,
    instance: &Instance,
    job: &JobInfo<'_>,
    sink: &mut Sink,
) -> Result<String, RunError> {
    if sink.trace.len() as u64 >= detwasm_job::receipt::MAX_TRACE_SNAPSHOTS {
        return Err(RunError::HostFailure(format!(
            "the run reached {} checkpoints, the most a trace may list: take them less \
             often (--checkpoint-every)",
            detwasm_job::receipt::MAX_TRACE_SNAPSHOTS
        )));
    }
    let (memories, globals) = exported(&mut store, instance);
    let (frames_memory, ptr, _) = unwind_parts(&mut store, instance).ok_or_else(|| {
        RunError::HostFailure("saving a snapshot: the module has no unwind memory".into())
    })?;
    let frames_len = ptr.get(&mut store).i32().unwrap_or(0) as u32 as usize;
    let ctx = store.as_context_mut();
    let meter = ctx.data().meter.save();
    let off_trace = ctx.data().meter.off_trace();
    let timed_out = ctx.data().meter.timed_out();
    let index = meter.taken;
    let instructions = ctx.data().meter.checkpoint_at();
    let mut saved_globals = Vec::new();
    for (i, g) in &globals {
        let v = canonical(g.get(&mut store));
        let (ty, bits) = encode(&v).ok_or_else(|| {
            RunError::HostFailure(format!(
                "saving a snapshot: global {i} holds a reference, which a snapshot cannot save"
            ))
        })?;
        saved_globals.push(SavedGlobal {
            index: *i,
            ty: ty.into(),
            bits,
        });
    }
    let name = if off_trace {
        TIMEOUT_SNAPSHOT.to_string()
    } else {
        format!("{index:06}")
    };
    let tmp = sink.dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("memory")).map_err(|e| io(tmp.display(), e))?;
    std::fs::create_dir_all(tmp.join("files")).map_err(|e| io(tmp.display(), e))?;
    let write = |rel: &str, bytes: &[u8]| -> Result<(), RunError> {
        let p = tmp.join(rel);
        std::fs::write(&p, bytes).map_err(|e| io(p.display(), e))
    };
    let mut saved_memories = Vec::new();
    for (i, m) in &memories {
        let data = m.data(&store);
        write(&format!("memory/{i}"), data)?;
        saved_memories.push(SavedMemory {
            index: *i,
            pages: data.len() as u64 / PAGE,
        });
    }
    let frames = frames_memory.data(&store);
    write("frames", frames.get(..frames_len).unwrap_or(frames))?;
    let ctx = store.as_context_mut();
    let (host, bytes) = ctx.data().host.save();
    write("stdout", bytes.stdout)?;
    write("stderr", bytes.stderr)?;
    for (node, content) in &bytes.files {
        write(&format!("files/{node}"), content)?;
    }
    let state = State {
        format: FORMAT.into(),
        job_id: job.job_id.into(),
        job: host_free(job.record),
        profile: job.results.profile,
        skip_hidden: job.results.skip_hidden,
        engine: job.engine.into(),
        unwind_pass: unwind::PASS_VERSION.into(),
        index,
        instructions,
        trace: sink.trace.clone(),
        meter,
        globals: saved_globals,
        memories: saved_memories,
        frames: frames_len as u64,
        host,
        off_trace,
    };
    let text = serde_json::to_vec_pretty(&state)
        .map_err(|e| RunError::HostFailure(format!("saving a snapshot: {e}")))?;
    write(STATE_FILE, &text)?;
    let cid = crate::results::cid_of_dir(&tmp, job.results.profile, true)?;
    let done = sink.dir.join(&name);
    std::fs::rename(&tmp, &done).map_err(|e| io(done.display(), e))?;
    if !off_trace {
        sink.trace.push(cid.clone());
    }
    if timed_out {
        sink.resume = Some(name.clone());
    }
    if sink.only_last {
        if let Some(prev) = sink.last.as_ref().filter(|p| **p != name) {
            let _ = std::fs::remove_dir_all(sink.dir.join(prev));
        }
    }
    sink.last = Some(name);
    Ok(cid)
}

/// The job record without what depends on the host (the module's path, the inputs' host
/// folders).
pub fn host_free(record: &JobRecord) -> JobRecord {
    let mut r = record.clone();
    r.module = None;
    for i in &mut r.inputs {
        i.host.clear();
    }
    r
}

/// A snapshot folder, its state read and checked for what it can be checked alone.
pub struct Snapshot {
    pub dir: PathBuf,
    pub state: State,
    /// The CID its folder was hashed to by whoever opened it ([`Self::hashed_to`]), so
    /// that resuming it does not hash it again (found by review: a spot check hashed
    /// every snapshot twice, the second time without a deadline).
    pub cid: Option<String>,
}

/// Most bytes of a `state.json` read (64 MiB): its size grows with the guest's files and
/// fds (about 300 bytes a node), so this admits about 200,000 of them; a job with more
/// cannot be resumed (refused with the reason). Parsed, a state takes at most about 6
/// times its size (free node slots are 8 bytes each, see [`detwasm_wasi::vfs::snapshot`];
/// 365 MiB measured for 64 MiB of empty directory entries): a review's 250 MB state of
/// 50 million free slots took 6.5 GB under the 256 MiB this was before. Rejected: no bound (a forged state of any size would be parsed).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// A list of indices for an error message: the first 16, and how many in all (a
/// forged state's million memories made a megabyte of message).
fn listed(v: &[u32]) -> String {
    if v.len() <= 16 {
        format!("{v:?}")
    } else {
        format!("{:?} and {} more", &v[..16], v.len() - 16)
    }
}

fn refused(dir: &Path, why: impl std::fmt::Display) -> RunError {
    RunError::Snapshot {
        path: dir.to_path_buf(),
        reason: format!("not a snapshot detwasm can resume: {why}"),
    }
}

/// The most bytes of memories a snapshot may have, whatever its job's memory limit says:
/// 8 GiB (two full 32-bit memories). A snapshot's claims are untrusted until its job is
/// checked against the module, which comes after the snapshot is hashed (a folder) or
/// unpacked (a CAR), so a forged limit must not decide how much a small snapshot costs
/// (found by review: a CAR claiming a large limit filled the disk; a folder's 6 GiB
/// sparse stdout under a claimed 16 GiB quota took 6.3 GB of memory).
pub const MAX_MEMORY: u64 = 8 << 30;

/// The most bytes of files in memory, stdout and stderr a snapshot may have, whatever its
/// job's output quota says: 4 GiB.
pub const MAX_OUTPUT: u64 = 4 << 30;

/// The most memories a snapshot may have.
const MAX_MEMORIES: usize = 1024;

/// The bytes the state says its files hold, each claim checked against the job's
/// limits (and against [`MAX_MEMORY`] and [`MAX_OUTPUT`]), and its number of files in
/// memory.
fn claimed(s: &State) -> Result<(u64, u64), String> {
    let limits = &s.job.limits;
    if s.memories.len() > MAX_MEMORIES {
        return Err(format!("{} memories", s.memories.len()));
    }
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
    let quota = limits.max_output.min(MAX_OUTPUT);
    if written > quota {
        return Err(format!(
            "its files, stdout and stderr have {written} bytes, more than the {quota} they \
             can have"
        ));
    }
    Ok((
        memories.saturating_add(s.frames).saturating_add(written),
        count,
    ))
}

/// Checks that snapshot folder `dir` holds exactly what `state` claims, within
/// [`claimed`]'s caps: `state.json`, `frames`, `stdout`, `stderr`, one `memory/N` per
/// memory and one `files/N` per file in memory, each a regular file (not a link) of the
/// length claimed, and nothing else. The folder is hashed for the trace before its files
/// are read, so what is hashed must be bounded first. Found by review: a 16 GiB sparse
/// file beside the snapshot's own cost `verify --sample` 40 s of hashing with a 3 s job
/// timeout, and changed the CID `resume` put in its trace. Entries are listed no further
/// than the first one not claimed. Rejected: hashing only the claimed files (the CID
/// would then not be the folder's).
fn check_layout(dir: &Path, state: &State) -> Result<(), RunError> {
    use std::collections::BTreeMap;
    let bad = |why: String| refused(dir, why);
    claimed(state).map_err(bad)?;
    let mut want: BTreeMap<String, Option<u64>> = BTreeMap::new();
    want.insert(STATE_FILE.into(), None);
    want.insert("frames".into(), Some(state.frames));
    want.insert("stdout".into(), Some(state.host.stdout_len));
    want.insert("stderr".into(), Some(state.host.stderr_len));
    for m in &state.memories {
        want.insert(format!("memory/{}", m.index), Some(m.pages * PAGE));
    }
    for (node, n) in state.host.vfs.nodes.iter().enumerate() {
        if let Some(SavedKind::MemFile(len)) = n.as_ref().map(|n| &n.kind) {
            want.insert(format!("files/{node}"), Some(*len));
        }
    }
    let mut found = 0usize;
    let mut list = |sub: &str| -> Result<(), RunError> {
        let folder = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        let entries = std::fs::read_dir(&folder).map_err(|e| bad(format!("{sub}: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| bad(format!("{sub}: {e}")))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let rel = if sub.is_empty() {
                name.to_string()
            } else {
                format!("{sub}/{name}")
            };
            // Not followed: a link is neither a file nor a folder here.
            let ty = e.file_type().map_err(|e| bad(format!("{rel}: {e}")))?;
            if sub.is_empty() && (rel == "memory" || rel == "files") && ty.is_dir() {
                continue;
            }
            let Some(len) = want.get(&rel) else {
                return Err(bad(format!("{rel}: no snapshot has it")));
            };
            if !ty.is_file() {
                return Err(bad(format!("{rel}: not a regular file")));
            }
            if let Some(len) = len {
                let m = e.metadata().map_err(|e| bad(format!("{rel}: {e}")))?;
                if m.len() != *len {
                    return Err(bad(format!(
                        "{rel} has {} bytes, not the {len} saved",
                        m.len()
                    )));
                }
            }
            found += 1;
        }
        Ok(())
    };
    list("")?;
    list("memory")?;
    list("files")?;
    if found != want.len() {
        return Err(bad(format!(
            "it has {found} of the {} files its state names",
            want.len()
        )));
    }
    Ok(())
}

/// Opens the regular file `rel` (`name` or `folder/name`) of snapshot folder `dir`, and
/// its length. A snapshot is untrusted: every component below `dir` is opened without
/// following a symlink (`openat` with `O_NOFOLLOW`, relative to the handle of the folder
/// above it), and without blocking (`O_NONBLOCK`: a FIFO cannot hold the open), and the
/// file must be a regular file (checked on the open handle). Found by review: a
/// `files/N` that was a symlink to a host file put that file into the job's output; a
/// `stdout` that was a FIFO hung `resume`. Rejected: checking with `symlink_metadata`
/// before opening by path (the entry can be swapped between the check and the open);
/// `cap_std` (its sandbox lets a link resolve inside the folder, and the same file may
/// then be read for two entries, which is harmless but not what a snapshot is).
fn open_file(dir: &Path, rel: &str) -> Result<(std::fs::File, u64), RunError> {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    let fail = |why: String| refused(dir, format!("{rel}: {why}"));
    let c = |s: &[u8]| CString::new(s).map_err(|_| fail("a name with a NUL".into()));
    let open_at = |at: RawFd, name: &[u8], flags: i32| -> Result<OwnedFd, RunError> {
        let name = c(name)?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call; `at` is an
        // open descriptor (or AT_FDCWD); the result is checked and owned once valid.
        let fd = unsafe { libc::openat(at, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(fail(std::io::Error::last_os_error().to_string()));
        }
        // SAFETY: `fd` was just returned by `openat` and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    use std::os::fd::AsRawFd;
    let mut at = open_at(
        libc::AT_FDCWD,
        dir.as_os_str().as_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY,
    )?;
    let parts: Vec<&str> = rel.split('/').collect();
    let (last, folders) = parts.split_last().expect("a name");
    for folder in folders {
        at = open_at(
            at.as_raw_fd(),
            folder.as_bytes(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
    }
    let fd = open_at(
        at.as_raw_fd(),
        last.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )?;
    let f = std::fs::File::from(fd);
    let m = f.metadata().map_err(|e| fail(e.to_string()))?;
    if !m.is_file() {
        return Err(fail("not a regular file".into()));
    }
    Ok((f, m.len()))
}

/// Reads `rel` of snapshot folder `dir` ([`open_file`]), refusing a file larger than
/// `most` bytes (checked on the open file, before its bytes).
fn read_bounded(dir: &Path, rel: &str, most: u64) -> Result<Vec<u8>, RunError> {
    let (f, len) = open_file(dir, rel)?;
    if len > most {
        return Err(refused(
            dir,
            format!("{rel} has {len} bytes, more than the {most} it can have"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(most)
        .read_to_end(&mut buf)
        .map_err(|e| read_error(dir, rel, e))?;
    Ok(buf)
}

/// A read of a snapshot's file that failed: this machine's (an I/O error), unless the
/// file ended before the length it had when opened (its maker's).
fn read_error(dir: &Path, rel: &str, e: std::io::Error) -> RunError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        refused(dir, format!("{rel}: {e}"))
    } else {
        RunError::io(format!("reading snapshot {}: {rel}", dir.display()), e)
    }
}

/// Reads `rel` into `dst`, which it must fill exactly (its size checked on the open file
/// first): memories and frames go straight into the instance, never through a copy.
fn read_exactly(dir: &Path, rel: &str, dst: &mut [u8]) -> Result<(), RunError> {
    let (mut f, len) = open_file(dir, rel)?;
    if len != dst.len() as u64 {
        return Err(refused(
            dir,
            format!("{rel} has {len} bytes, not the {} saved", dst.len()),
        ));
    }
    f.read_exact(dst).map_err(|e| read_error(dir, rel, e))
}

impl Snapshot {
    /// The snapshot, known to hash to `cid` (its caller hashed its folder): resuming it
    /// takes that CID for the trace.
    pub fn hashed_to(mut self, cid: String) -> Snapshot {
        self.cid = Some(cid);
        self
    }

    /// Opens the snapshot folder `dir`.
    pub fn open(dir: &Path) -> Result<Snapshot, RunError> {
        let text = read_bounded(dir, STATE_FILE, MAX_STATE_BYTES)?;
        let state: State = serde_json::from_slice(&text).map_err(|e| refused(dir, e))?;
        Snapshot::checked(dir, state)
    }

    /// The snapshot folder `dir` whose `state.json` parses to `state`, once the state's
    /// own checks pass (its format, and its index against its trace and meter).
    fn checked(dir: &Path, state: State) -> Result<Snapshot, RunError> {
        if state.format != FORMAT {
            return Err(refused(
                dir,
                format!("its format is {:?}, not {FORMAT:?}", state.format),
            ));
        }
        // Its index is the checkpoints taken (this one counted unless it is the
        // deadline's, off the trace), and the trace names the ones before it.
        let before = if state.off_trace {
            state.index
        } else {
            state.index.saturating_sub(1)
        };
        if state.index != state.meter.taken
            || (!state.off_trace && state.index == 0)
            || state.trace.len() as u64 != before
        {
            return Err(refused(
                dir,
                format!(
                    "it is checkpoint {} of a trace of {} with {} checkpoints taken",
                    state.index,
                    state.trace.len(),
                    state.meter.taken
                ),
            ));
        }
        check_layout(dir, &state)?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            state,
            cid: None,
        })
    }

    /// The job's host details saved beside the snapshot (`../job.json`), if there: read
    /// as the snapshot's own files are ([`open_file`], at most [`MAX_STATE_BYTES`]), so a
    /// FIFO, a link or a huge file there is ignored rather than waited on or loaded.
    pub fn job_record_beside(&self) -> Option<JobRecord> {
        let text = read_bounded(self.dir.parent()?, JOB_FILE, MAX_STATE_BYTES).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Checks that this snapshot belongs to the job `job_id` run by `engine`.
    pub fn check_job(&self, job_id: &str, engine: &str) -> Result<(), RunError> {
        let s = &self.state;
        if s.engine != engine {
            return Err(refused(
                &self.dir,
                format!("it was taken by engine {}, this is {engine}", s.engine),
            ));
        }
        // A verifier has checked that the receipt's trace names this pass's frames
        // (`Trace::unwind`, `ops::verify`) before it opens a snapshot of it, so a
        // snapshot of another version is not one of the trace's: refused as such.
        if s.unwind_pass != unwind::PASS_VERSION {
            return Err(refused(
                &self.dir,
                format!(
                    "its frames are of {}, this detwasm reads {}",
                    s.unwind_pass,
                    unwind::PASS_VERSION
                ),
            ));
        }
        if s.job_id != job_id {
            return Err(refused(
                &self.dir,
                format!("it is of job {}, not of job {job_id}", s.job_id),
            ));
        }
        Ok(())
    }

    /// Puts the saved host state into `host`, a fresh host of the same job.
    pub fn restore_host(&self, host: &mut WasiHost, max_output: u64) -> Result<(), RunError> {
        let h = &self.state.host;
        // Their sum is checked before either is read (each within the quota was not
        // enough: twice the quota read).
        if h.stdout_len.saturating_add(h.stderr_len) > max_output {
            return Err(refused(
                &self.dir,
                format!("stdout and stderr hold more than the output quota of {max_output}"),
            ));
        }
        let stdout = read_bounded(&self.dir, "stdout", h.stdout_len)?;
        let stderr = read_bounded(&self.dir, "stderr", h.stderr_len)?;
        let dir = &self.dir;
        // A file that cannot be read is reported as itself, not inside the host's reason.
        let mut unreadable = None;
        let restored = host.restore(h, stdout, stderr, |node, len| {
            let rel = format!("files/{node}");
            match read_bounded(dir, &rel, len) {
                Ok(b) if b.len() as u64 == len => Ok(b),
                Ok(_) => Err(format!("{rel} is not of the length saved")),
                Err(e) => {
                    unreadable = Some(e);
                    Err(rel)
                }
            }
        });
        match (restored, unreadable) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(why), None) => Err(refused(&self.dir, why)),
        }
    }

    /// Overwrites a fresh instance's memories, mutable globals and unwind memory with the
    /// saved ones and sets it to rewind: calling the entry then goes on from the
    /// checkpoint. Memories grow through the store's limiter (the job's memory limit).
    pub fn restore_instance(
        &self,
        mut store: impl AsContextMut<Data = crate::wasi::Ctx>,
        instance: &Instance,
    ) -> Result<(), RunError> {
        let bad = |why: String| refused(&self.dir, why);
        let s = &self.state;
        let (memories, globals) = exported(&mut store, instance);
        let indices: Vec<u32> = memories.iter().map(|(i, _)| *i).collect();
        let saved: Vec<u32> = s.memories.iter().map(|m| m.index).collect();
        if indices != saved {
            return Err(bad(format!(
                "it saves memories {}, the module has {}",
                listed(&saved),
                listed(&indices)
            )));
        }
        for ((i, m), sm) in memories.iter().zip(&s.memories) {
            let now = m.size(&store);
            if sm.pages < now {
                return Err(bad(format!(
                    "memory {i} has {} pages, fewer than the module starts with",
                    sm.pages
                )));
            }
            // A 32-bit memory has at most 65,536 pages; the limiter bounds it further.
            if sm.pages > 65_536 {
                return Err(bad(format!("memory {i} of {} pages", sm.pages)));
            }
            if m.grow(&mut store, sm.pages - now).is_err() {
                return Err(bad(format!(
                    "memory {i} of {} pages is over the job's memory limit",
                    sm.pages
                )));
            }
            read_exactly(&self.dir, &format!("memory/{i}"), m.data_mut(&mut store))?;
        }
        let indices: Vec<u32> = globals.iter().map(|(i, _)| *i).collect();
        let saved: Vec<u32> = s.globals.iter().map(|g| g.index).collect();
        if indices != saved {
            return Err(bad(format!(
                "it saves globals {}, the module's mutable ones are {}",
                listed(&saved),
                listed(&indices)
            )));
        }
        for ((i, g), sg) in globals.iter().zip(&s.globals) {
            let v = decode(&sg.ty, &sg.bits)
                .ok_or_else(|| bad(format!("global {i}: {} {} is no value", sg.ty, sg.bits)))?;
            g.set(&mut store, v)
                .map_err(|e| bad(format!("global {i}: {e}")))?;
        }
        let (frames_memory, ptr, state) =
            unwind_parts(&mut store, instance).ok_or_else(|| bad("no unwind memory".into()))?;
        let most = unwind::MAX_PAGES * PAGE;
        if s.frames > most || s.frames > u64::from(u32::MAX) {
            return Err(bad(format!("{} bytes of frames", s.frames)));
        }
        let pages = s.frames.div_ceil(PAGE);
        let now = frames_memory.size(&store);
        store.as_context_mut().data_mut().limits.unwinding = true;
        let grown = frames_memory.grow(&mut store, pages.saturating_sub(now));
        store.as_context_mut().data_mut().limits.unwinding = false;
        grown.map_err(|e| bad(format!("frames: {e}")))?;
        let len = s.frames as usize;
        read_exactly(
            &self.dir,
            "frames",
            &mut frames_memory.data_mut(&mut store)[..len],
        )?;
        ptr.set(&mut store, Val::I32(s.frames as u32 as i32))
            .map_err(|e| bad(e.to_string()))?;
        state
            .set(&mut store, Val::I32(unwind::REWINDING))
            .map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: a snapshot's files were opened by path, so a `files/N` that was a
    /// symlink to a host file put that file into the job's output, and a FIFO hung the
    /// resume. Every component is now opened without following links or blocking, and
    /// only a regular file is read.
    #[test]
    fn a_snapshot_file_is_read_only_if_it_is_a_regular_file_in_the_folder() {
        let t = tempfile::tempdir().unwrap();
        let (dir, secret) = (t.path().join("snap"), t.path().join("secret"));
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        std::fs::write(&secret, b"host secret").unwrap();
        std::fs::write(t.path().join("elsewhere/1"), b"host secret").unwrap();
        std::fs::write(dir.join("stdout"), b"printed").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("stderr")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("files/1")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), dir.join("memory")).unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("frames").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(read_bounded(&dir, "stdout", 100).unwrap(), b"printed");
        for rel in ["stderr", "files/1", "memory/1", "frames", "missing"] {
            let e = read_bounded(&dir, rel, 100).unwrap_err().to_string();
            assert!(
                e.contains("not a snapshot detwasm can resume"),
                "{rel}: {e}"
            );
            assert!(!e.contains("host secret"));
        }
        let mut buf = [0u8; 11];
        assert!(read_exactly(&dir, "memory/1", &mut buf).is_err());
        assert!(read_exactly(&dir, "frames", &mut buf).is_err());
    }

    #[test]
    fn values_round_trip_and_nans_are_saved_canonical() {
        for v in [
            Val::I32(-1),
            Val::I64(i64::MIN),
            Val::F32(0x4049_0fdb),
            Val::F64(0x4009_21fb_5444_2d18),
            Val::V128(u128::MAX.into()),
        ] {
            let (ty, bits) = encode(&v).unwrap();
            let back = decode(ty, &bits).unwrap();
            assert_eq!(encode(&back), encode(&v));
        }
        assert_eq!(
            encode(&canonical(Val::F32(0xffc0_0001))),
            encode(&Val::F32(0x7fc0_0000))
        );
        assert_eq!(
            encode(&canonical(Val::F64(0xfff0_0000_0000_0001))),
            encode(&Val::F64(0x7ff8_0000_0000_0000))
        );
        assert!(decode("i32", "0x100000000").is_none());
        assert!(decode("f16", "0x0").is_none());
        assert!(decode("i32", "12").is_none());
    }
}
