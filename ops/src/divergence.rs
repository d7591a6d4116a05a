//! Where two runs of a job first parted: the segment between two checkpoints, and what
//! differs in the guest's state at its end.
//!
//! What it is for: `detwasm fuzz --checkpoint-every N`. A campaign that finds two runs
//! disagreeing on the results names the files that differ; that says what came out
//! wrong, not when. With checkpoints, every run leaves its snapshots, and the first
//! checkpoint whose state differs bounds the moment to one segment of N instructions,
//! with the memory ranges, globals, files and host state (random stream, clocks, fds)
//! that differ there: an author looks at the code that ran in that segment and at what
//! it wrote, instead of at the whole run.
//!
//! Two snapshots of the same job are compared by CID first (equal CIDs, equal states);
//! snapshots of two jobs (a campaign that varies the seed, the env, …) always differ in
//! the job they record, so they are compared part by part with the job left out. Memory
//! files are compared as streams, 64 KiB at a time, so a run of gigabytes of memory
//! costs reads, not RAM. The snapshots compared are the campaign's own, made moments
//! before in its own folder, not untrusted input: they are still opened through
//! [`Snapshot::open`], which checks them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use detwasm_job::error::RunError;
use detwasm_job::receipt::Receipt;
use detwasm_runtime::checkpoint::{Snapshot, State};

/// Ranges of differing bytes listed per memory or file; the rest are counted.
const MAX_RANGES: usize = 8;
/// Differing bytes closer than this are one range.
const MERGE_GAP: u64 = 64;

/// Where a run first differs from the reference run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The segment, 1 for the one from the start to the first checkpoint; one more than
    /// the checkpoints both runs took for the one that ends with the run.
    pub segment: u64,
    /// The reference run's instruction count at the segment's start (0 for the first).
    pub from_instruction: u64,
    /// The reference run's instruction count at the checkpoint that ends the segment;
    /// `None` when it ends with the run (the results' files are then what differs).
    pub to_instruction: Option<u64>,
    /// What differs in the state at that checkpoint.
    pub state: Vec<StateDifference>,
}

/// One part of a snapshot's state that differs between two runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateDifference {
    /// `memory 0`, `global 3`, `call stack`, `stdout`, `file /outputs/a.txt`,
    /// `random stream`, `clocks`, `stdin`, `open files`, `filesystem`, `meter`,
    /// `checkpoint`.
    pub part: String,
    /// What differs, in words: byte ranges, values, sizes.
    pub detail: String,
}

/// The snapshots of one run: its checkpoints folder and the trace of its receipt.
pub struct Snapshots<'a> {
    pub dir: &'a Path,
    pub receipt: &'a Receipt,
}

impl Snapshots<'_> {
    fn cids(&self) -> &[String] {
        self.receipt
            .trace
            .as_ref()
            .map(|t| t.snapshots.as_slice())
            .unwrap_or_default()
    }

    fn open(&self, index: usize) -> Result<Snapshot, RunError> {
        Snapshot::open(&self.dir.join(format!("{index:06}")))
    }
}

/// The first segment where run `b` differs from the reference run `a`, or `None` when
/// their snapshots and results agree.
pub fn locate(a: &Snapshots, b: &Snapshots) -> Result<Option<Divergence>, RunError> {
    let (ca, cb) = (a.cids(), b.cids());
    let same_job = a.receipt.job_id == b.receipt.job_id;
    let both = ca.len().min(cb.len());
    let mut start = 0u64;
    for k in 1..=both {
        let end = a.open(k)?;
        if !(same_job && ca[k - 1] == cb[k - 1]) {
            let other = b.open(k)?;
            let state = compare(&end, &other)?;
            if !state.is_empty() {
                return Ok(Some(Divergence {
                    segment: k as u64,
                    from_instruction: start,
                    to_instruction: Some(end.state.instructions),
                    state,
                }));
            }
        }
        start = end.state.instructions;
    }
    let segment = both as u64 + 1;
    if ca.len() != cb.len() {
        let (longer, n) = if ca.len() > cb.len() {
            ("the reference run", ca.len())
        } else {
            ("this run", cb.len())
        };
        return Ok(Some(Divergence {
            segment,
            from_instruction: start,
            to_instruction: None,
            state: vec![StateDifference {
                part: "checkpoint".into(),
                detail: format!(
                    "{longer} went on to take {n} checkpoints, the other ended after {both}"
                ),
            }],
        }));
    }
    let ra = a.receipt;
    let rb = b.receipt;
    let ended_alike = ra.cid == rb.cid
        && ra.instructions == rb.instructions
        && ra.exit_code == rb.exit_code
        && ra.outcome == rb.outcome;
    Ok((!ended_alike).then_some(Divergence {
        segment,
        from_instruction: start,
        to_instruction: None,
        state: Vec::new(),
    }))
}

/// What differs between two snapshots taken at the same checkpoint, the job they
/// record and the trace before them left out.
pub fn compare(a: &Snapshot, b: &Snapshot) -> Result<Vec<StateDifference>, RunError> {
    let (sa, sb) = (&a.state, &b.state);
    let mut out = Vec::new();
    let mut differ = |part: String, detail: String| out.push(StateDifference { part, detail });
    if sa.instructions != sb.instructions {
        differ(
            "checkpoint".into(),
            format!(
                "taken at instruction {} here, {} there",
                sa.instructions, sb.instructions
            ),
        );
    }
    for ga in &sa.globals {
        match sb.globals.iter().find(|g| g.index == ga.index) {
            Some(gb) if gb == ga => {}
            Some(gb) => differ(
                format!("global {}", ga.index),
                format!("{} {} here, {} {} there", ga.ty, ga.bits, gb.ty, gb.bits),
            ),
            None => differ(format!("global {}", ga.index), "only here".into()),
        }
    }
    for ma in &sa.memories {
        let part = format!("memory {}", ma.index);
        let pages_b = sb
            .memories
            .iter()
            .find(|m| m.index == ma.index)
            .map(|m| m.pages);
        if pages_b != Some(ma.pages) {
            let there = pages_b.map_or("none".to_string(), |p| format!("{p} pages"));
            differ(
                part.clone(),
                format!("{} pages here, {there} there", ma.pages),
            );
        }
        let rel = format!("memory/{}", ma.index);
        if let Some(d) = differing_bytes(&a.dir.join(&rel), &b.dir.join(&rel))? {
            differ(part, d);
        }
    }
    if let Some(d) = differing_bytes(&a.dir.join("frames"), &b.dir.join("frames"))? {
        differ("call stack".into(), format!("saved frames: {d}"));
    }
    for stream in ["stdout", "stderr"] {
        if let Some(d) = differing_bytes(&a.dir.join(stream), &b.dir.join(stream))? {
            differ(stream.into(), d);
        }
    }
    let (ha, hb) = (&sa.host, &sb.host);
    if ha.random_words != hb.random_words {
        differ(
            "random stream".into(),
            format!(
                "{} words of random_get's stream read here, {} there",
                ha.random_words, hb.random_words
            ),
        );
    }
    if (ha.clock_wall, ha.clock_mono) != (hb.clock_wall, hb.clock_mono) {
        differ(
            "clocks".into(),
            format!(
                "wall {} ns, monotonic {} ns here; {} ns, {} ns there",
                ha.clock_wall, ha.clock_mono, hb.clock_wall, hb.clock_mono
            ),
        );
    }
    if ha.stdin_pos != hb.stdin_pos {
        differ(
            "stdin".into(),
            format!("read to byte {} here, {} there", ha.stdin_pos, hb.stdin_pos),
        );
    }
    if ha.fds != hb.fds {
        differ(
            "open files".into(),
            "the fd table (which files are open, their offsets or rights)".into(),
        );
    }
    // File contents by path (node numbers are the filesystem's own and can differ while
    // the files are the same).
    let (fa, fb) = (files_by_path(sa), files_by_path(sb));
    for (path, node) in &fa {
        let rel_a = a.dir.join(format!("files/{node}"));
        match fb.get(path) {
            Some(nb) => {
                if let Some(d) = differing_bytes(&rel_a, &b.dir.join(format!("files/{nb}")))? {
                    differ(format!("file {path}"), d);
                }
            }
            None => differ(format!("file {path}"), "written here only".into()),
        }
    }
    for path in fb.keys() {
        if !fa.contains_key(path) {
            differ(format!("file {path}"), "written there only".into());
        }
    }
    if ha.vfs != hb.vfs && !out.iter().any(|d| d.part.starts_with("file ")) {
        out.push(StateDifference {
            part: "filesystem".into(),
            detail: "names, sizes or times of files and folders".into(),
        });
    }
    if out.is_empty() && sa.meter != sb.meter {
        out.push(StateDifference {
            part: "meter".into(),
            detail: "the instruction meter's state".into(),
        });
    }
    Ok(out)
}

/// The files in memory of a snapshot (`files/N`): their node by their path from the
/// filesystem's root.
fn files_by_path(s: &State) -> BTreeMap<String, usize> {
    use detwasm_runtime::wasi::vfs::snapshot::SavedKind;
    let nodes = &s.host.vfs.nodes;
    let mut name: Vec<Option<(usize, String)>> = vec![None; nodes.len()];
    for (id, n) in nodes.iter().enumerate() {
        if let Some(SavedKind::Dir(entries)) = n.as_ref().map(|n| &n.kind) {
            for (k, child) in entries {
                if let Some(slot) = name.get_mut(*child) {
                    *slot = Some((id, String::from_utf8_lossy(k).into_owned()));
                }
            }
        }
    }
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.as_ref().map(|n| &n.kind), Some(SavedKind::MemFile(_))))
        .map(|(id, _)| {
            let mut parts = Vec::new();
            let mut at = id;
            // At most one step per node: a cycle (none in a real state) cannot loop.
            for _ in 0..nodes.len() {
                match &name[at] {
                    Some((parent, n)) => {
                        parts.push(n.clone());
                        at = *parent;
                    }
                    None => break,
                }
            }
            parts.reverse();
            (format!("/{}", parts.join("/")), id)
        })
        .collect()
}

/// The byte ranges where two files differ (`None` when equal; a missing file reads as
/// empty), read as streams.
fn differing_bytes(a: &Path, b: &Path) -> Result<Option<String>, RunError> {
    let open = |p: &Path| -> Result<Box<dyn Read>, RunError> {
        match std::fs::File::open(p) {
            Ok(f) => Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::io::empty())),
            Err(e) => Err(RunError::io(format!("reading {}", p.display()), e)),
        }
    };
    let (mut ra, mut rb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let (mut len_a, mut len_b) = (0u64, 0u64);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut more = 0u64;
    let mut differing = 0u64;
    let mut note = |at: u64, ranges: &mut Vec<(u64, u64)>| {
        differing += 1;
        let n = ranges.len();
        match ranges.last_mut() {
            Some(r) if at <= r.1 + MERGE_GAP => r.1 = at + 1,
            _ if n < MAX_RANGES => ranges.push((at, at + 1)),
            _ => more += 1,
        }
    };
    loop {
        let na = fill(&mut ra, &mut ba, a)?;
        let nb = fill(&mut rb, &mut bb, b)?;
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            for i in 0..n {
                if ba[i] != bb[i] {
                    note(len_a + i as u64, &mut ranges);
                }
            }
        }
        len_a += na as u64;
        len_b += nb as u64;
        if na != nb || na == 0 {
            // One ended: the rest of the other is counted by the lengths.
            std::io::copy(&mut ra, &mut std::io::sink())
                .map(|k| len_a += k)
                .map_err(|e| RunError::io(format!("reading {}", a.display()), e))?;
            std::io::copy(&mut rb, &mut std::io::sink())
                .map(|k| len_b += k)
                .map_err(|e| RunError::io(format!("reading {}", b.display()), e))?;
            break;
        }
    }
    if ranges.is_empty() && len_a == len_b {
        return Ok(None);
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .map(|(s, e)| format!("bytes {s:#x}..{e:#x}"))
        .collect();
    if more > 0 {
        parts.push("more further on".into());
    }
    let mut text = if parts.is_empty() {
        String::new()
    } else {
        format!("{} ({differing} bytes differ)", parts.join(", "))
    };
    if len_a != len_b {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!("{len_a} bytes here, {len_b} there"));
    }
    Ok(Some(text))
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn fill(r: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize, RunError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RunError::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_differ(a: &[u8], b: &[u8]) -> Option<String> {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), a).unwrap();
        std::fs::write(t.path().join("b"), b).unwrap();
        differing_bytes(&t.path().join("a"), &t.path().join("b")).unwrap()
    }

    /// Equal files are equal; nearby differences are one range, far ones two; a longer
    /// file says so; ranges past the eighth are summed up.
    #[test]
    fn differing_bytes_are_named_as_ranges() {
        let a = vec![0u8; 200_000];
        assert_eq!(bytes_differ(&a, &a), None);
        let mut b = a.clone();
        b[100] = 1;
        b[150] = 1;
        b[150_000] = 1;
        assert_eq!(
            bytes_differ(&a, &b).unwrap(),
            "bytes 0x64..0x97, bytes 0x249f0..0x249f1 (3 bytes differ)"
        );
        let mut c = a.clone();
        c.push(7);
        assert_eq!(
            bytes_differ(&a, &c).unwrap(),
            "200000 bytes here, 200001 there"
        );
        let mut d = a.clone();
        for i in 0..10 {
            d[i * 1000] = 9;
        }
        let text = bytes_differ(&a, &d).unwrap();
        assert!(
            text.ends_with("more further on (10 bytes differ)"),
            "{text}"
        );
        assert_eq!(text.matches("bytes 0x").count(), MAX_RANGES);
        assert_eq!(bytes_differ(b"", b"x").unwrap(), "0 bytes here, 1 there");
    }
}
