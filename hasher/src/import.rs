//! The importer: flatten the input, hash every file in parallel, then build symlinks and
//! directories bottom-up, and optionally write a CAR.

use crate::car::{BlockSink, CarBuilder};
use crate::cid::Cid;
use crate::dagpb::LinkRef;
use crate::dir;
use crate::error::{HashError, Result};
use crate::file::{import_bytes, import_disk_file, import_file, FileError, Stopped};
use crate::options::{Options, Profile};
use crate::tree::{Arena, Kind, Node, Source};
use rayon::prelude::*;

/// Trees of at most this many files and bytes are hashed without rayon (see
/// the import's step 1).
const SMALL_TREE_FILES: usize = 16;
const SMALL_TREE_BYTES: u64 = 1 << 20;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What kind of entry an [`Entry`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A plain (not sharded) directory.
    Directory,
    /// A HAMT-sharded directory.
    HamtDirectory,
    /// A symbolic link.
    Symlink,
}

impl EntryKind {
    /// Lower-case name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::HamtDirectory => "hamt-directory",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// The CID of one entry of the imported tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// How deep it is: 0 for the root, 1 for its entries, and so on.
    pub depth: u32,
    /// Its name in its folder; `""` for the root. Its path is rebuilt from the names of
    /// the entries before it ([`EntryPaths`]). Rejected: a full path per entry (found by
    /// review: the entries of a provider's results folder of 200,000 files at a depth of
    /// 4,000 bytes took 915 MB, and its cap of 2 million entries would have taken 9 GB;
    /// names are at most 255 bytes each).
    pub name: String,
    /// The entry's CID.
    pub cid: Cid,
    /// What it is.
    pub kind: EntryKind,
    /// Content bytes: the file's length, or the sum over a directory's files.
    pub size: u64,
}

/// Rebuilds the paths of [`Entry`]s from their depths and names, fed in the pre-order
/// [`Hashed::entries`] has them: one path buffer, whatever the number of entries.
#[derive(Debug, Default)]
pub struct EntryPaths {
    path: String,
    /// The end of the path at each depth from 1 down to the last entry's.
    ends: Vec<usize>,
}

impl EntryPaths {
    /// The path of `e`, relative to the root and `/`-separated (`""` for the root), when
    /// `e` follows the entries fed before it in pre-order.
    pub fn next(&mut self, e: &Entry) -> &str {
        let depth = e.depth as usize;
        self.ends.truncate(depth.saturating_sub(1));
        self.path.truncate(self.ends.last().copied().unwrap_or(0));
        if depth > 0 {
            if depth > 1 {
                self.path.push('/');
            }
            self.path.push_str(&e.name);
            self.ends.push(self.path.len());
        }
        &self.path
    }

    /// The path of the entry last fed to [`EntryPaths::next`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every entry of `entries` (in pre-order) with its path.
    pub fn of(entries: &[Entry]) -> impl Iterator<Item = (String, &Entry)> {
        let mut paths = EntryPaths::default();
        entries.iter().map(move |e| (paths.next(e).to_string(), e))
    }
}

/// An entry once built: what its parent links and [`Entry`] reports. One per entry of
/// the tree, held until the root is built.
#[derive(Clone, Copy)]
struct Built {
    cid: Cid,
    tsize: u64,
    /// Content bytes (see [`Entry::size`]).
    size: u64,
    kind: EntryKind,
}

/// The result of an import.
#[derive(Clone, Debug)]
pub struct Hashed {
    /// The root CID, what `ipfs add -Q` prints.
    pub root: Cid,
    /// Bytes of file content in the tree.
    pub size: u64,
    /// The profile the options came from.
    pub profile: Profile,
    /// Every entry (pre-order, children by name bytes) when asked for, else empty.
    pub entries: Vec<Entry>,
}

/// Progress of an import, reported after every window of file bytes.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// File bytes hashed so far.
    pub done: u64,
    /// File bytes in the tree (readers of unknown length count as 0).
    pub total: u64,
}

/// Hashes trees. Build one with [`Hasher::new`], adjust it, then call
/// [`Hasher::hash_path`] or [`Hasher::hash_tree`].
pub struct Hasher<'a> {
    opts: Options,
    entries: bool,
    car: Option<&'a mut (dyn Write + Send)>,
    progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    deadline: Option<Instant>,
    max_entries: usize,
}

impl<'a> Hasher<'a> {
    /// A hasher with these options.
    pub fn new(opts: Options) -> Self {
        Hasher {
            opts,
            entries: false,
            car: None,
            progress: None,
            deadline: None,
            max_entries: usize::MAX,
        }
    }

    /// Also report the CID of every entry.
    pub fn entries(mut self, yes: bool) -> Self {
        self.entries = yes;
        self
    }

    /// Also write a CARv1 of the whole DAG to `out`.
    pub fn car(mut self, out: &'a mut (dyn Write + Send)) -> Self {
        self.car = Some(out);
        self
    }

    /// Call `f` as file bytes are hashed.
    pub fn progress(mut self, f: &'a (dyn Fn(Progress) + Sync)) -> Self {
        self.progress = Some(f);
        self
    }

    /// Give up at `at`: the import fails with [`HashError::Deadline`] once it is past.
    /// The clock is read at every folder and entry of the walk, before every file, after
    /// every window of a file's bytes (see [`crate::file::import_file`]) and at every
    /// directory built, so the import ends within one window's hashing of `at`, whatever
    /// the tree or one file's size. Rejected: checking only before each file (one sparse
    /// file of a terabyte would be hashed whole past the deadline), and a cancel flag set
    /// by another thread (a thread per import to set it; the clock read is tens of
    /// nanoseconds per window or entry).
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Walk at most `n` entries (the root included): a tree with more fails with
    /// [`HashError::TooManyEntries`], counted as each folder is listed, so the walk stops
    /// at the entry over the cap without listing the rest of its folder or holding more
    /// than `n` entries (at most 400 bytes each, see [`crate::tree`]). For a tree from
    /// someone else (a provider's results folder a verifier compares): without it, the
    /// import holds whatever the tree has, and its time and memory are the tree's.
    /// Rejected: counting after the walk (the whole listing would be held first).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Hash a file, directory or symlink on disk (symlinks are stored, not followed).
    pub fn hash_path(self, path: &Path) -> Result<Hashed> {
        self.opts.validate()?;
        let arena = Arena::from_disk(path, self.opts.hidden, self.deadline, self.max_entries)?;
        self.run(arena)
    }

    /// Hash a tree held in memory.
    pub fn hash_tree(self, root: &Node) -> Result<Hashed> {
        self.opts.validate()?;
        let arena = Arena::from_node(root, self.opts.hidden, self.deadline, self.max_entries)?;
        self.run(arena)
    }

    fn run(self, arena: Arena<'_>) -> Result<Hashed> {
        let Hasher {
            opts,
            entries: want_entries,
            car,
            progress,
            deadline,
            max_entries: _,
        } = self;
        let past = || deadline.is_some_and(|at| Instant::now() >= at);
        let builder = match car {
            Some(_) => Some(CarBuilder::new().map_err(HashError::Car)?),
            None => None,
        };
        let sink: Option<&dyn BlockSink> = builder.as_ref().map(|b| b as &dyn BlockSink);
        let total = arena.total_bytes();
        let done = AtomicU64::new(0);
        let report = |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(p) = progress {
                p(Progress { done: d, total });
            }
            if past() {
                Err(Stopped)
            } else {
                Ok(())
            }
        };

        // 1. Every file (in parallel unless the tree is small), its result written straight
        // into its item's slot of `built`. Rejected: collecting `(index, result)` pairs
        // and copying them into the table (both held at once, per file).
        let n = arena.items.len();
        let mut built: Vec<Option<Built>> = vec![None; n];
        let hash_one = |i: usize, slot: &mut Option<Built>| -> Result<()> {
            let Kind::File { source, size } = &arena.items[i].kind else {
                return Ok(());
            };
            if past() {
                return Err(HashError::Deadline);
            }
            let read_err = |cause| HashError::Read {
                path: arena.path(i),
                cause,
            };
            // Opened without blocking and checked on the handle to be a regular file: a
            // file swapped for a FIFO after the walk listed it would otherwise block the
            // open for good, past every deadline (found by review: `run`, `verify` and
            // `verify --results` hung on an input file replaced by `mkfifo`). A walked
            // entry is opened without following a link (one swapped in after the walk
            // would be hashed as the file it names). Rejected: checking the type by path
            // before opening (the swap can fall between the check and the open).
            let disk = |path: &Path, follow: bool| {
                use std::os::unix::fs::OpenOptionsExt;
                let flags = libc::O_NONBLOCK | if follow { 0 } else { libc::O_NOFOLLOW };
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(flags)
                    .open(path)
                    .map_err(read_err)?;
                if !f.metadata().map_err(read_err)?.is_file() {
                    return Err(read_err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file (it was replaced while it was being hashed)",
                    )));
                }
                // The size seen by the walk: a file that changed since then fails
                // (import_disk_file checks it ends exactly there).
                Ok(if *size > 0 {
                    import_disk_file(&f, *size, &opts, sink, &report)
                } else {
                    // Empty, or a file that does not report its size (procfs).
                    import_file(f, None, &opts, sink, &report)
                })
            };
            let sub = match source {
                Source::Walked => disk(&arena.path(i), false)?,
                Source::Path(p) => disk(p, true)?,
                Source::Bytes(b) => import_bytes(b, &opts, sink, &report),
                Source::Open(open) => {
                    let r = open().map_err(read_err)?;
                    import_file(r, None, &opts, sink, &report)
                }
            }
            .map_err(|e| match e {
                FileError::Read(e) | FileError::Map(e) => read_err(e),
                FileError::Sink(e) => HashError::Car(e),
                FileError::Stopped => HashError::Deadline,
            })?;
            *slot = Some(Built {
                cid: sub.cid,
                tsize: sub.tsize,
                size: sub.filesize,
                kind: EntryKind::File,
            });
            Ok(())
        };
        // A small tree is hashed on this thread: starting rayon's pool (a thread per core,
        // which spin before they sleep) costs a small job more than it could save.
        // Rejected: always in parallel (measured on a one-file job: 4 threads started and
        // 139 `sched_yield` calls for a few hundred bytes).
        let files = arena
            .items
            .iter()
            .filter(|i| matches!(i.kind, Kind::File { .. }))
            .count();
        if files <= SMALL_TREE_FILES && total <= SMALL_TREE_BYTES {
            built
                .iter_mut()
                .enumerate()
                .try_for_each(|(i, slot)| hash_one(i, slot))?;
        } else {
            built
                .par_iter_mut()
                .enumerate()
                .try_for_each(|(i, slot)| hash_one(i, slot))?;
        }

        // 2. Symlinks and directories, children before parents (reverse index order: a
        // directory's children come after it).
        for i in (0..n).rev() {
            match &arena.items[i].kind {
                Kind::File { .. } => {}
                Kind::Symlink { .. } => {
                    let (cid, tsize) = dir::symlink(arena.target(i), opts.cid_version, sink)?;
                    built[i] = Some(Built {
                        cid,
                        tsize,
                        size: 0,
                        kind: EntryKind::Symlink,
                    });
                }
                Kind::Dir { children } => {
                    if past() {
                        return Err(HashError::Deadline);
                    }
                    let child = |c: usize| built[c].expect("children are built before parents");
                    let link = |k: usize| {
                        let c = children.start + k;
                        let b = child(c);
                        LinkRef {
                            cid: b.cid,
                            name: arena.name(c),
                            tsize: b.tsize,
                        }
                    };
                    let size = children.clone().map(|c| child(c).size).sum();
                    let node = dir::build(children.len(), &link, &opts, sink, &arena.path(i))?;
                    built[i] = Some(Built {
                        cid: node.cid,
                        tsize: node.tsize,
                        size,
                        kind: if node.sharded {
                            EntryKind::HamtDirectory
                        } else {
                            EntryKind::Directory
                        },
                    });
                }
            }
        }
        let root = built[0].expect("the root is built");
        // 3. The entries in pre-order, children by name bytes.
        let mut entries = Vec::new();
        if want_entries {
            let mut stack = vec![(0, 0)];
            while let Some((i, depth)) = stack.pop() {
                let b = built[i].expect("every entry is built");
                entries.push(Entry {
                    depth,
                    name: if i == 0 {
                        String::new()
                    } else {
                        arena.name(i).to_string()
                    },
                    cid: b.cid,
                    kind: b.kind,
                    size: b.size,
                });
                if let Kind::Dir { children } = &arena.items[i].kind {
                    stack.extend(children.clone().rev().map(|c| (c, depth + 1)));
                }
            }
        }
        let (root, size) = (root.cid, root.size);
        if let (Some(builder), Some(out)) = (builder, car) {
            builder.finish(&root, out).map_err(HashError::Car)?;
        }
        Ok(Hashed {
            root,
            size,
            profile: opts.profile,
            entries,
        })
    }
}

/// Hash a file or directory on disk with `opts`: the root CID and content size.
pub fn hash_path(path: &Path, opts: &Options) -> Result<Hashed> {
    Hasher::new(opts.clone()).hash_path(path)
}

/// Hash an in-memory tree with `opts`.
pub fn hash_tree(root: &Node, opts: &Options) -> Result<Hashed> {
    Hasher::new(opts.clone()).hash_tree(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SECURITY.md's delivery term counts 72 bytes per entry for this table.
    #[test]
    fn a_built_entry_is_72_bytes() {
        assert!(std::mem::size_of::<Option<Built>>() <= 72);
    }
    use std::time::Duration;

    /// Found by review: a file swapped for a FIFO after the walk listed it blocked the
    /// hash's open for good, past every deadline (`run`, `verify`, `verify --results`).
    #[test]
    fn a_file_swapped_for_a_fifo_after_the_walk_is_an_error_not_a_hang() {
        let t = tempfile::tempdir().unwrap();
        for f in ["a", "b"] {
            std::fs::write(t.path().join(f), f).unwrap();
        }
        let swapped = std::sync::atomic::AtomicBool::new(false);
        let swap = |_: Progress| {
            if !swapped.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // The file being hashed is open already; the other becomes a FIFO.
                for f in ["a", "b"] {
                    let p = t.path().join(f);
                    std::fs::remove_file(&p).unwrap();
                    let c =
                        std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
            }
        };
        let e = Hasher::new(Options::default())
            .progress(&swap)
            .hash_path(t.path())
            .unwrap_err();
        assert!(swapped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    fn folder() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"f").unwrap();
        std::fs::write(t.path().join("g"), vec![1u8; 3 << 20]).unwrap();
        t
    }

    #[test]
    fn a_deadline_to_come_changes_nothing_and_a_past_one_stops_the_walk() {
        let t = folder();
        let opts = Options::default();
        let plain = hash_path(t.path(), &opts).unwrap();
        let later = Instant::now() + Duration::from_secs(3600);
        let bounded = Hasher::new(opts.clone())
            .deadline(later)
            .hash_path(t.path())
            .unwrap();
        assert_eq!(plain.root, bounded.root);
        let tree = Node::dir_from([("d", Node::Disk(t.path().join("d")))]);
        let err = Hasher::new(opts.clone())
            .deadline(Instant::now())
            .hash_tree(&tree)
            .unwrap_err();
        assert!(matches!(err, HashError::Deadline), "{err}");
        // Past before anything is read: not even the root is looked at.
        let err = Hasher::new(opts)
            .deadline(Instant::now())
            .hash_path(&t.path().join("missing"))
            .unwrap_err();
        assert!(matches!(err, HashError::Deadline), "{err}");
    }

    /// `max_entries` counts the root and every entry walked: a tree at the cap hashes
    /// as without it; one more entry, on disk (a folder listed only up to the cap) or in
    /// memory, fails naming the folder and the cap.
    #[test]
    fn an_entry_cap_refuses_a_larger_tree_and_changes_nothing_within_it() {
        let t = folder(); // the root, d, d/f, g: 4 entries
        let opts = Options::default();
        let plain = hash_path(t.path(), &opts).unwrap();
        let at = Hasher::new(opts.clone())
            .max_entries(4)
            .hash_path(t.path())
            .unwrap();
        assert_eq!(plain.root, at.root);
        for i in 0..100 {
            std::fs::write(t.path().join("d").join(format!("x{i}")), b"").unwrap();
        }
        let err = Hasher::new(opts.clone())
            .max_entries(4)
            .hash_path(t.path())
            .unwrap_err();
        assert!(
            matches!(&err, HashError::TooManyEntries { path, limit: 4 } if path.ends_with("d")),
            "{err:?}"
        );
        assert!(err.to_string().contains("more than 4 entries"), "{err}");
        let tree = Node::dir_from([("a", Node::bytes("1")), ("b", Node::bytes("2"))]);
        let err = Hasher::new(opts.clone())
            .max_entries(2)
            .hash_tree(&tree)
            .unwrap_err();
        assert!(
            matches!(err, HashError::TooManyEntries { limit: 2, .. }),
            "{err}"
        );
        Hasher::new(opts).max_entries(3).hash_tree(&tree).unwrap();
    }

    #[test]
    fn a_deadline_stops_one_huge_file_within_a_window() {
        // 64 GiB of holes: hashing it whole takes about a minute on one core.
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let start = Instant::now();
        let seen = AtomicU64::new(0);
        let progress = |p: Progress| {
            seen.store(p.done, Ordering::Relaxed);
        };
        let err = Hasher::new(Options::default())
            .progress(&progress)
            .deadline(start + Duration::from_millis(200))
            .hash_path(t.path())
            .unwrap_err();
        assert!(matches!(err, HashError::Deadline), "{err}");
        let took = start.elapsed();
        let done = seen.load(Ordering::Relaxed);
        assert!(done > 0 && done < 64 << 30, "{done} bytes hashed");
        assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    }
}
