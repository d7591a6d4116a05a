//! Writing out the content of a CAR file (`detwasm unpack`): a results CAR
//! (`run --results`… `detwasm hash --car`), a module folder packed by `module pack`, a
//! snapshot, or what `ipfs dag export` wrote. The CAR is untrusted: every block is
//! checked against its CID ([`Car::parse`]), its tree's size as unpacking would write it
//! ([`Car::expanded`]) must fit the caller's limits before a byte is written, and the
//! tree is written into a staging folder beside the destination and renamed into place
//! only when complete, so a reader never sees half of it and an error leaves nothing.
//! Rejected: writing in place (an error half-way would leave a partial tree at the name
//! the user asked for), and no size check before writing (a CAR of a few KB can describe
//! terabytes: one block linked many times).

use std::path::Path;

use detwasm_hasher::unixfs;
use detwasm_hasher::unpack::Car;
use detwasm_hasher::Cid;

/// What may be read and written: the CAR file's size (its blocks are indexed in memory,
/// about four times its size at worst: many tiny blocks), bytes of file content,
/// entries (files, folders, symlinks) and block visits (the work of writing the tree:
/// every block counted each time the tree reaches it, plus
/// [`detwasm_hasher::unpack::VISIT_CHARGE`] per visit). Each is checked before a byte
/// is written. Found by review: without the visit limit, a 120 KB CAR of an empty file
/// whose chain of blocks is reached 10^9 times passed the byte and entry checks and ran
/// for minutes past every timeout; without the size limit, a 1 GB CAR of unused tiny
/// blocks took 3.8 GB to index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_car_bytes: u64,
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_work: u64,
}

impl Limits {
    /// Limits of `max_bytes` of content and `max_entries` entries: a CAR of at most that
    /// content plus 1/16 and 16 MiB (block headers and links), and twice the content in
    /// block visits plus the visits of the entries.
    pub fn of(max_bytes: u64, max_entries: u64) -> Limits {
        let visit = detwasm_hasher::unpack::VISIT_CHARGE;
        Limits {
            max_car_bytes: max_bytes
                .saturating_add(max_bytes / 16)
                .saturating_add(16 << 20),
            max_bytes,
            max_entries,
            max_work: max_bytes
                .saturating_mul(2)
                .saturating_add(max_entries.saturating_mul(4 * visit)),
        }
    }
}

/// A job file's CAR budgets (`detwasm_jobspec::car::MAX_JOB_CAR_READ`, `_BYTES`,
/// `_ENTRIES`, `_WORK`), for every CAR a job's input comes from.
pub const JOB_CAR: Limits = Limits {
    max_car_bytes: detwasm_jobspec::car::MAX_JOB_CAR_READ,
    max_bytes: detwasm_jobspec::car::MAX_JOB_CAR_BYTES,
    max_entries: detwasm_jobspec::car::MAX_JOB_CAR_ENTRIES,
    max_work: detwasm_jobspec::car::MAX_JOB_CAR_WORK,
};

/// The default limits of `detwasm unpack`: 16 GiB of files, 1,000,000 entries.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// What [`unpack`] wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unpacked {
    /// The CID of the tree written.
    pub cid: String,
    /// `file`, `folder` or `symlink`.
    pub kind: &'static str,
    /// Bytes of file content and entries written.
    pub bytes: u64,
    pub entries: u64,
    /// Block visits the writing cost (see [`Limits`]).
    #[serde(skip)]
    pub work: u64,
    /// Where.
    pub dest: std::path::PathBuf,
}

/// Whether `path` names a CAR file: a regular file whose name ends in `.car` (any case).
pub fn is_car_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("car"))
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Writes the tree of the CAR file `car` (its root, or the block `cid` of it) at `dest`,
/// which must not exist (default: the tree's CID, in the current folder, as `ipfs get`
/// names what it writes).
pub fn unpack(
    car: &Path,
    cid: Option<&str>,
    dest: Option<&Path>,
    limits: Limits,
) -> Result<Unpacked, String> {
    unpack_as(car, cid, dest, limits, None)
}

/// [`unpack`], refused before anything is written unless the tree is a `kind` (`file`,
/// `folder` or `symlink`) when given: a caller that needs a folder does not write a
/// gigabyte file first (found by review).
pub fn unpack_as(
    car: &Path,
    cid: Option<&str>,
    dest: Option<&Path>,
    limits: Limits,
    kind_wanted: Option<&'static str>,
) -> Result<Unpacked, String> {
    let bad = |why: String| format!("{}: {why}", car.display());
    let map = map_within(car, &limits)?;
    let blocks = Car::parse(&map).map_err(|e| bad(e.to_string()))?;
    let root = match cid {
        Some(text) => Cid::parse(text).ok_or_else(|| bad(format!("{text} is not a CID")))?,
        None => blocks.root(),
    };
    write_tree(car, &blocks, root, dest, limits, kind_wanted)
}

/// The CAR file `car` mapped, refused when larger than `limits` allow.
fn map_within(car: &Path, limits: &Limits) -> Result<impl std::ops::Deref<Target = [u8]>, String> {
    let map =
        detwasm_hasher::unpack::map_car_file(car).map_err(|e| format!("{}: {e}", car.display()))?;
    if map.len() as u64 > limits.max_car_bytes {
        return Err(format!(
            "{}: a CAR of {} bytes, more than the {} read here",
            car.display(),
            map.len(),
            limits.max_car_bytes
        ));
    }
    Ok(map)
}

/// Several trees of the CAR file `car`, each `(cid, dest, kind)` of `wanted` that it
/// holds, unpacked as [`unpack_as`] does but with the CAR read and checked once, and
/// with `budget` shared: each tree written is taken off it, so that together they stay
/// within it. `None` for a tree the CAR does not hold (or that does not fit what is
/// left). For a verifier finding a receipt's inputs by CID (found by review: each of a
/// hostile receipt's 256 inputs unpacked its own gigabyte, and re-read the CAR).
pub fn unpack_each(
    car: &Path,
    wanted: &[(&str, &Path, &'static str)],
    budget: &mut Limits,
) -> Result<Vec<Option<Unpacked>>, String> {
    let map = map_within(car, budget)?;
    let blocks = Car::parse(&map).map_err(|e| format!("{}: {e}", car.display()))?;
    let mut out = Vec::new();
    for (cid, dest, kind) in wanted {
        let got = Cid::parse(cid)
            .filter(|root| blocks.contains(root))
            .and_then(|root| write_tree(car, &blocks, root, Some(dest), *budget, Some(kind)).ok());
        if let Some(u) = &got {
            budget.max_bytes = budget.max_bytes.saturating_sub(u.bytes);
            budget.max_entries = budget.max_entries.saturating_sub(u.entries);
            budget.max_work = budget.max_work.saturating_sub(u.work);
        }
        out.push(got);
    }
    Ok(out)
}

/// Writes the tree `root` of `blocks` (read from `car`) at `dest` (see [`unpack_as`]).
fn write_tree(
    car: &Path,
    blocks: &Car<'_>,
    root: Cid,
    dest: Option<&Path>,
    limits: Limits,
    kind_wanted: Option<&'static str>,
) -> Result<Unpacked, String> {
    let bad = |why: String| format!("{}: {why}", car.display());
    if !blocks.contains(&root) {
        return Err(bad(format!("it holds no block {root}")));
    }
    let kind = match blocks.kind(root).map_err(|e| bad(e.to_string()))? {
        unixfs::TYPE_DIRECTORY | unixfs::TYPE_HAMT_SHARD => "folder",
        unixfs::TYPE_SYMLINK => "symlink",
        _ => "file",
    };
    if let Some(want) = kind_wanted.filter(|w| *w != kind) {
        return Err(bad(format!("it holds a {kind} ({root}), not a {want}")));
    }
    let size = blocks.expanded(root).map_err(|e| bad(e.to_string()))?;
    if size.bytes > limits.max_bytes
        || size.entries > limits.max_entries
        || size.work > limits.max_work
    {
        return Err(bad(format!(
            "{root} would unpack to {} bytes in {} entries with {} bytes of block visits, \
             more than the {} bytes, {} entries and {} visits allowed",
            size.bytes,
            size.entries,
            size.work,
            limits.max_bytes,
            limits.max_entries,
            limits.max_work
        )));
    }
    let named = std::path::PathBuf::from(root.to_string());
    let dest = dest.unwrap_or(&named);
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(format!(
            "{}: already there; unpack writes a new file or folder, never over one",
            dest.display()
        ));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Locked: a staging folder a killed unpack left here is removed by the next.
    let staging = crate::scratch::Scratch::new_in(parent, ".detwasm-unpack-", "unpacking")
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let at = staging.path().join("content");
    let done = blocks
        .unpack_cid(root, &at, size.work)
        .map_err(|e| bad(e.to_string()))?;
    // Never over what appeared at `dest` meanwhile (found by review: a file written there
    // during a 3 GiB unpack was replaced).
    detwasm_runtime::deliver::rename_noreplace(&at, dest)
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(Unpacked {
        cid: root.to_string(),
        kind,
        bytes: done.bytes,
        entries: done.entries,
        work: size.work,
        dest: dest.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use detwasm_hasher::{Hasher, Options};

    fn car_of(path: &Path) -> (String, Vec<u8>) {
        let mut car = Vec::new();
        let h = Hasher::new(Options::default().with_hidden(true))
            .car(&mut car)
            .hash_path(path)
            .unwrap();
        (h.root.to_string(), car)
    }

    /// Trees unpacked from one CAR share one budget: the second of two 600 KB folders
    /// does not fit in 1 MB (found by review: each input of a receipt had its own).
    #[test]
    fn trees_unpacked_together_share_one_budget() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        for (i, sub) in ["a", "b"].iter().enumerate() {
            std::fs::create_dir_all(src.join(sub)).unwrap();
            std::fs::write(src.join(sub).join("f"), vec![i as u8; 600_000]).unwrap();
        }
        let (_, car) = car_of(&src);
        let car_file = t.path().join("x.car");
        std::fs::write(&car_file, &car).unwrap();
        let cid = |sub: &str| car_of(&src.join(sub)).0;
        let (a, b) = (cid("a"), cid("b"));
        let (da, db, dc) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        let mut budget = Limits::of(1_000_000, 100);
        let none = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
        let got = unpack_each(
            &car_file,
            &[
                (a.as_str(), da.as_path(), "folder"),
                (b.as_str(), db.as_path(), "folder"),
                (none, dc.as_path(), "folder"),
            ],
            &mut budget,
        )
        .unwrap();
        assert_eq!(got[0].as_ref().unwrap().cid, a);
        assert!(got[1].is_none() && got[2].is_none(), "{got:?}");
        assert!(!db.exists() && !dc.exists());
        assert_eq!(budget.max_bytes, 1_000_000 - 600_000);
        assert_eq!(car_of(&da).0, a);
    }

    #[test]
    fn a_car_unpacks_to_the_tree_it_names_and_nothing_is_written_over() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub/empty")).unwrap();
        std::fs::write(src.join("a.txt"), b"ay").unwrap();
        std::fs::write(src.join("sub/.hidden"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        let (cid, car) = car_of(&src);
        std::fs::write(t.path().join("x.car"), &car).unwrap();
        let out = t.path().join("out");
        let u = unpack(
            &t.path().join("x.car"),
            None,
            Some(&out),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap();
        assert_eq!((u.cid.as_str(), u.kind), (cid.as_str(), "folder"));
        assert_eq!(car_of(&out).0, cid, "the same tree");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("a.txt")
        );
        // Never over what is there; nothing left beside it.
        let e = unpack(
            &t.path().join("x.car"),
            None,
            Some(&out),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap_err();
        assert!(e.contains("already there"), "{e}");
        // One file of it, by CID.
        let a = Hasher::new(Options::default())
            .hash_path(&src.join("a.txt"))
            .unwrap()
            .root
            .to_string();
        let f = t.path().join("a-copy");
        let u = unpack(
            &t.path().join("x.car"),
            Some(&a),
            Some(&f),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap();
        assert_eq!(u.kind, "file");
        assert_eq!(std::fs::read(&f).unwrap(), b"ay");
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".detwasm-unpack-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Found by review: an empty file whose chain of blocks is reached 10^9 times sized
    /// to 0 bytes in 2 entries and ran for minutes; the visits are bounded now.
    #[test]
    fn a_tree_reaching_its_blocks_over_and_over_is_refused_by_its_visits() {
        use detwasm_hasher::cid::{DAG_PB, RAW};
        use detwasm_hasher::dagpb::{self, PbLink};
        use detwasm_hasher::{unixfs, CidVersion};
        let leaf = Vec::new();
        let mut below = Cid::of_block(CidVersion::V1, RAW, &leaf);
        let mut blocks = vec![(below, leaf)];
        for _ in 0..3 {
            let links: Vec<PbLink> = (0..1000)
                .map(|_| PbLink {
                    cid: below,
                    name: String::new(),
                    tsize: 0,
                })
                .collect();
            let node = dagpb::encode_node(&links, &unixfs::file_node(0, &[0; 1000]));
            below = Cid::of_block(CidVersion::V1, DAG_PB, &node);
            blocks.push((below, node));
        }
        let dir = dagpb::encode_node(
            &[PbLink {
                cid: below,
                name: "f".into(),
                tsize: 0,
            }],
            &unixfs::directory(),
        );
        let root = Cid::of_block(CidVersion::V1, DAG_PB, &dir);
        blocks.push((root, dir));
        blocks.reverse();
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("v.car");
        std::fs::write(&p, detwasm_hasher::car::assemble_unchecked(&root, &blocks)).unwrap();
        let e = unpack(
            &p,
            None,
            Some(&t.path().join("out")),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap_err();
        assert!(e.contains("bytes of block visits, more than"), "{e}");
        assert!(!t.path().join("out").exists());
    }

    /// Found by review: a file written at DEST while a large file unpacked was
    /// replaced by it. The rename never replaces.
    #[test]
    fn the_tree_is_never_renamed_over_what_appeared_at_its_destination() {
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        std::fs::write(&from, b"unpacked").unwrap();
        std::fs::write(&to, b"precious").unwrap();
        let e = detwasm_runtime::deliver::rename_noreplace(&from, &to).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&to).unwrap(), b"precious");
        std::fs::remove_file(&to).unwrap();
        detwasm_runtime::deliver::rename_noreplace(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"unpacked");
    }

    #[test]
    fn a_car_over_the_limits_or_corrupt_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("big"), vec![1u8; 1 << 20]).unwrap();
        let (_, mut car) = car_of(&src);
        let p = t.path().join("x.car");
        std::fs::write(&p, &car).unwrap();
        let out = t.path().join("out");
        let small = Limits::of(1000, 10);
        let e = unpack(&p, None, Some(&out), small).unwrap_err();
        assert!(e.contains("would unpack to 1048576 bytes"), "{e}");
        let last = car.len() - 1;
        car[last] ^= 1;
        std::fs::write(&p, &car).unwrap();
        let e = unpack(
            &p,
            None,
            Some(&out),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap_err();
        assert!(e.contains("corrupt CAR"), "{e}");
        let fifo =
            std::ffi::CString::new(t.path().join("f.car").into_os_string().into_encoded_bytes())
                .unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = unpack(
            &t.path().join("f.car"),
            None,
            Some(&out),
            Limits::of(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES),
        )
        .unwrap_err();
        assert!(e.contains("not a regular"), "{e}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
    }
}
