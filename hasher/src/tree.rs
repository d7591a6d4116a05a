//! The inputs: a tree on disk, or a tree held in memory ([`Node`]), both flattened into
//! one arena in which the children of every directory are consecutive items, sorted by
//! name bytes, after their parent (so children always have larger indices).
//!
//! Walking happens before hashing, so the total size is known for progress reporting
//! and all files can be hashed in parallel.
//!
//! The arena is what an import holds for every entry until the root is built, and a
//! job's results can be one folder of half a million entries (a guest filling its output
//! quota with empty files under 255-byte names). So an item holds only its parent's
//! index, its name (a range of one buffer of all names) and its kind, 56 bytes plus the
//! name's bytes; a path (to open a file, to name an entry in an error or in the list of
//! entries) is rebuilt from the parents when it is needed. Rejected: an item holding its
//! relative path, its path for errors and its disk path, and its parent a copy of its
//! name (four copies of the name: about 1.2 KB per entry of such a folder, heaptrack
//! says, of the 1.8 KB the whole import held).

use crate::error::{HashError, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A function that opens a fresh reader over a file's bytes (called once per hash).
pub type OpenFn = dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync;

/// Where an in-memory tree's file gets its bytes.
#[derive(Clone)]
pub enum FileContent {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// A file on disk, streamed (its target is read even if it is a symlink).
    Path(PathBuf),
    /// A reader opened on demand, streamed.
    Open(Arc<OpenFn>),
}

impl fmt::Debug for FileContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileContent::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            FileContent::Path(p) => write!(f, "Path({p:?})"),
            FileContent::Open(_) => f.write_str("Open(..)"),
        }
    }
}

/// A tree held in memory, e.g. a job's results directory.
#[derive(Clone, Debug)]
pub enum Node {
    /// A regular file.
    File(FileContent),
    /// A directory: names (without `/`, not `.` or `..`) to entries. `BTreeMap<String, _>`
    /// iterates in byte order, the order of dag-pb links.
    Dir(BTreeMap<String, Node>),
    /// A symbolic link, stored as a UnixFS symlink node with this target.
    Symlink(String),
    /// A file, directory or symlink on disk, taken as [`crate::Hasher::hash_path`] takes
    /// it (walked, symlinks stored, hidden names per the options), e.g. an output folder
    /// inside a results tree that is otherwise in memory.
    Disk(PathBuf),
}

impl Node {
    /// A file node holding `bytes`.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Node {
        Node::File(FileContent::Bytes(bytes.into()))
    }

    /// A file node streamed from a file on disk.
    pub fn path(path: impl Into<PathBuf>) -> Node {
        Node::File(FileContent::Path(path.into()))
    }

    /// An empty directory.
    pub fn dir() -> Node {
        Node::Dir(BTreeMap::new())
    }

    /// A directory from `(name, node)` pairs.
    pub fn dir_from<N: Into<String>>(entries: impl IntoIterator<Item = (N, Node)>) -> Node {
        Node::Dir(entries.into_iter().map(|(n, e)| (n.into(), e)).collect())
    }
}

/// Where a flattened file's bytes come from.
pub(crate) enum Source<'a> {
    /// Found by walking a folder on disk: its path is [`Arena::path`].
    Walked,
    /// A memory tree's file on disk ([`FileContent::Path`]).
    Path(&'a Path),
    Bytes(&'a [u8]),
    Open(&'a OpenFn),
}

pub(crate) enum Kind<'a> {
    File {
        source: Source<'a>,
        size: u64,
    },
    /// Children: these items, sorted by name bytes.
    Dir {
        children: Range<usize>,
    },
    /// The target: these bytes of [`Arena::targets`].
    Symlink {
        target: Range<usize>,
    },
}

/// One flattened entry.
pub(crate) struct Item<'a> {
    /// The parent directory's index; the root (item 0) is its own parent.
    pub parent: usize,
    /// The name: these bytes of [`Arena::names`] (empty for the root).
    name: Range<usize>,
    pub kind: Kind<'a>,
}

/// The flattened tree: item 0 is the root; every directory comes before its children,
/// which are consecutive.
pub(crate) struct Arena<'a> {
    pub items: Vec<Item<'a>>,
    /// Every name, one after another.
    names: String,
    /// Every symlink target, one after another.
    targets: Vec<u8>,
    /// The items that are paths on disk (the root of [`Arena::from_disk`], every
    /// [`Node::Disk`]), in increasing index order; the items walked below one have no
    /// path of their own (see [`Arena::path`]).
    disk_roots: Vec<(usize, &'a Path)>,
    /// The most items the walk may add, the root included (see
    /// [`crate::Hasher::max_entries`]).
    max_entries: usize,
}

/// A folder whose entries are still to be added (the walk keeps a stack of them instead
/// of recursing, so the depth of a tree costs heap, not native stack).
enum Pending<'a> {
    /// A folder on disk: its entries are read then.
    Disk(usize),
    /// A folder in memory.
    Memory(usize, &'a BTreeMap<String, Node>),
}

/// [`HashError::Deadline`] once `deadline` has passed.
fn past(deadline: Option<Instant>) -> Result<()> {
    if deadline.is_some_and(|at| Instant::now() >= at) {
        Err(HashError::Deadline)
    } else {
        Ok(())
    }
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

impl<'a> Arena<'a> {
    fn new() -> Arena<'a> {
        Arena {
            items: Vec::new(),
            names: String::new(),
            targets: Vec::new(),
            disk_roots: Vec::new(),
            max_entries: usize::MAX,
        }
    }

    /// [`HashError::TooManyEntries`] when `more` entries of folder `dir` would take the
    /// walk past [`Arena::max_entries`].
    fn room_for(&self, dir: usize, more: usize) -> Result<()> {
        if self.items.len().saturating_add(more) > self.max_entries {
            return Err(HashError::TooManyEntries {
                path: self.path(dir),
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// Walk a path on disk. Symlinks are stored, never followed; hidden names are
    /// skipped unless `hidden` (the root itself is always taken). Fails with
    /// [`HashError::Deadline`] at the first folder or entry reached at or after
    /// `deadline`, and with [`HashError::TooManyEntries`] at the entry that would make
    /// more than `max_entries` items (the root included), counted as each folder is
    /// listed: a folder of ten million entries is listed only up to the cap. The walk
    /// keeps its own stack of folders (no recursion), so no depth the host can name
    /// exhausts the thread's stack.
    pub fn from_disk(
        root: &'a Path,
        hidden: bool,
        deadline: Option<Instant>,
        max_entries: usize,
    ) -> Result<Arena<'a>> {
        past(deadline)?;
        let mut arena = Arena::new();
        arena.max_entries = max_entries;
        let mut pending = Vec::new();
        arena.disk_roots.push((0, root));
        arena.push_disk(0, 0..0, root, &mut pending)?;
        arena.drain(pending, hidden, deadline)?;
        Ok(arena)
    }

    /// Flatten an in-memory tree. Hidden names are skipped unless `hidden`; fails at
    /// `deadline` and `max_entries` as [`Arena::from_disk`] does.
    pub fn from_node(
        root: &'a Node,
        hidden: bool,
        deadline: Option<Instant>,
        max_entries: usize,
    ) -> Result<Arena<'a>> {
        past(deadline)?;
        let mut arena = Arena::new();
        arena.max_entries = max_entries;
        let mut pending = Vec::new();
        arena.push_node(0, 0..0, root, &mut pending)?;
        arena.drain(pending, hidden, deadline)?;
        Ok(arena)
    }

    /// Add the entries of every pending folder, and of the folders found meanwhile.
    /// Folders are taken depth-first in name order, so the first problem reported is the
    /// first in name order at the shallowest level that has one.
    fn drain(
        &mut self,
        mut pending: Vec<Pending<'a>>,
        hidden: bool,
        deadline: Option<Instant>,
    ) -> Result<()> {
        while let Some(p) = pending.pop() {
            past(deadline)?;
            let mark = pending.len();
            match p {
                Pending::Disk(dir) => self.read_disk_dir(dir, hidden, deadline, &mut pending)?,
                Pending::Memory(dir, entries) => {
                    self.add_memory_dir(dir, entries, hidden, &mut pending)?
                }
            }
            // Pushed in name order; popped (read) in name order.
            pending[mark..].reverse();
        }
        Ok(())
    }

    /// Add the item at disk path `path`, named `name`, in folder `parent`.
    fn push_disk(
        &mut self,
        parent: usize,
        name: Range<usize>,
        path: &Path,
        pending: &mut Vec<Pending<'a>>,
    ) -> Result<()> {
        let read_err = |cause| HashError::Read {
            path: path.to_path_buf(),
            cause,
        };
        let meta = fs::symlink_metadata(path).map_err(read_err)?;
        let ft = meta.file_type();
        let idx = self.items.len();
        let kind = if ft.is_file() {
            Kind::File {
                source: Source::Walked,
                size: meta.len(),
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err)?;
            let start = self.targets.len();
            self.targets
                .extend_from_slice(target.as_os_str().as_bytes());
            Kind::Symlink {
                target: start..self.targets.len(),
            }
        } else if ft.is_dir() {
            pending.push(Pending::Disk(idx));
            Kind::Dir { children: 0..0 }
        } else {
            let kind = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "special file"
            };
            return Err(HashError::Unsupported {
                path: path.to_path_buf(),
                kind,
            });
        };
        self.items.push(Item { parent, name, kind });
        Ok(())
    }

    /// Add the entries of folder `dir` on disk, sorted by name bytes.
    fn read_disk_dir(
        &mut self,
        dir: usize,
        hidden: bool,
        deadline: Option<Instant>,
        pending: &mut Vec<Pending<'a>>,
    ) -> Result<()> {
        let path = self.path(dir);
        let read_err = |cause| HashError::Read {
            path: path.clone(),
            cause,
        };
        // The names go straight into the arena's buffer, in the order read; only their
        // ranges are sorted (16 bytes each). Rejected: a `Vec<String>` of the folder's
        // names, sorted, then copied (a second copy of every name of the folder, with an
        // allocation each, at once).
        let mut names: Vec<Range<usize>> = Vec::new();
        for entry in fs::read_dir(&path).map_err(read_err)? {
            // A folder of a million entries is listed past a deadline otherwise.
            past(deadline)?;
            let entry = entry.map_err(read_err)?;
            let os_name = entry.file_name();
            let name = os_name
                .to_str()
                .ok_or_else(|| HashError::NonUtf8Name { path: entry.path() })?;
            if hidden || !is_hidden(name) {
                // Counted as listed, before the name is kept.
                self.room_for(dir, names.len() + 1)?;
                let start = self.names.len();
                self.names.push_str(name);
                names.push(start..self.names.len());
            }
        }
        names.sort_unstable_by(|a, b| self.names[a.clone()].cmp(&self.names[b.clone()]));
        let first = self.items.len();
        for name in names {
            let child = path.join(&self.names[name.clone()]);
            self.push_disk(dir, name, &child, pending)?;
        }
        self.items[dir].kind = Kind::Dir {
            children: first..self.items.len(),
        };
        Ok(())
    }

    /// Add `node`, named `name`, in folder `parent`.
    fn push_node(
        &mut self,
        parent: usize,
        name: Range<usize>,
        node: &'a Node,
        pending: &mut Vec<Pending<'a>>,
    ) -> Result<()> {
        let idx = self.items.len();
        let kind = match node {
            Node::File(content) => {
                let (source, size) = match content {
                    FileContent::Bytes(b) => (Source::Bytes(b), b.len() as u64),
                    FileContent::Path(p) => {
                        let meta = fs::metadata(p).map_err(|cause| HashError::Read {
                            path: p.clone(),
                            cause,
                        })?;
                        (Source::Path(p), meta.len())
                    }
                    FileContent::Open(f) => (Source::Open(&**f), 0),
                };
                Kind::File { source, size }
            }
            Node::Symlink(target) => {
                let start = self.targets.len();
                self.targets.extend_from_slice(target.as_bytes());
                Kind::Symlink {
                    target: start..self.targets.len(),
                }
            }
            Node::Dir(entries) => {
                pending.push(Pending::Memory(idx, entries));
                Kind::Dir { children: 0..0 }
            }
            Node::Disk(path) => {
                self.disk_roots.push((idx, path));
                return self.push_disk(parent, name, path, pending);
            }
        };
        self.items.push(Item { parent, name, kind });
        Ok(())
    }

    /// Add the entries of memory folder `dir` (a `BTreeMap` iterates in name-byte order).
    fn add_memory_dir(
        &mut self,
        dir: usize,
        entries: &'a BTreeMap<String, Node>,
        hidden: bool,
        pending: &mut Vec<Pending<'a>>,
    ) -> Result<()> {
        let first = self.items.len();
        for (name, child) in entries {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(HashError::InvalidName {
                    dir: self.path(dir),
                    name: name.clone(),
                });
            }
            if !hidden && is_hidden(name) {
                continue;
            }
            self.room_for(dir, 1)?;
            let start = self.names.len();
            self.names.push_str(name);
            self.push_node(dir, start..self.names.len(), child, pending)?;
        }
        self.items[dir].kind = Kind::Dir {
            children: first..self.items.len(),
        };
        Ok(())
    }

    /// Item `i`'s name (empty for the root).
    pub fn name(&self, i: usize) -> &str {
        &self.names[self.items[i].name.clone()]
    }

    /// Symlink `i`'s target.
    pub fn target(&self, i: usize) -> &[u8] {
        match &self.items[i].kind {
            Kind::Symlink { target } => &self.targets[target.clone()],
            _ => &[],
        }
    }

    /// The items from the root (excluded) down to `i` (included).
    fn chain(&self, mut i: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        while i != 0 {
            chain.push(i);
            i = self.items[i].parent;
        }
        chain.reverse();
        chain
    }

    /// Item `i`'s path relative to the root, `/`-separated; empty for the root.
    pub fn rel(&self, i: usize) -> String {
        let chain = self.chain(i);
        let mut rel = String::new();
        for (n, &c) in chain.iter().enumerate() {
            if n > 0 {
                rel.push('/');
            }
            rel.push_str(self.name(c));
        }
        rel
    }

    /// Item `i`'s path: on disk (the nearest disk root at or above it, joined with the
    /// names below that) if it was walked or is a [`Node::Disk`], else its path relative
    /// to a memory root (`.` for the root itself), as errors show it. A file with
    /// [`Source::Walked`] is opened at this path.
    pub fn path(&self, i: usize) -> PathBuf {
        let chain = self.chain(i);
        // The deepest disk root among the root (n = 0) and `chain[n - 1]`; the names
        // below it are `chain[n..]`.
        let found = (0..=chain.len()).rev().find_map(|n| {
            let c = if n == 0 { 0 } else { chain[n - 1] };
            self.disk_roots
                .binary_search_by_key(&c, |r| r.0)
                .ok()
                .map(|k| (n, self.disk_roots[k].1))
        });
        match found {
            Some((n, base)) => {
                let mut p = base.to_path_buf();
                for &c in &chain[n..] {
                    p.push(self.name(c));
                }
                p
            }
            None if chain.is_empty() => PathBuf::from("."),
            None => PathBuf::from(self.rel(i)),
        }
    }

    /// Sum of the sizes of all files known in advance (readers count as 0).
    pub fn total_bytes(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match i.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_trees_sort_by_bytes_and_skip_hidden() {
        let tree = Node::dir_from([
            ("b", Node::bytes("1")),
            ("B", Node::bytes("2")),
            ("é", Node::bytes("3")),
            ("10", Node::bytes("4")),
            ("9", Node::bytes("5")),
            (".h", Node::bytes("6")),
        ]);
        let arena = Arena::from_node(&tree, false, None, usize::MAX).unwrap();
        let Kind::Dir { children } = &arena.items[0].kind else {
            panic!("root is a dir")
        };
        let names: Vec<&str> = children.clone().map(|c| arena.name(c)).collect();
        assert_eq!(names, ["10", "9", "B", "b", "é"]);
        assert_eq!(
            Arena::from_node(&tree, true, None, usize::MAX)
                .unwrap()
                .items
                .len(),
            7
        );
        assert_eq!(arena.total_bytes(), 5);
    }

    #[test]
    fn bad_names_are_refused() {
        let tree = Node::dir_from([("a/b", Node::bytes(""))]);
        let err = Arena::from_node(&tree, false, None, usize::MAX)
            .err()
            .unwrap();
        assert!(err.to_string().contains("a/b"), "{err}");
    }

    /// Paths are rebuilt from the parents: relative paths from the root, disk paths from
    /// the nearest disk root, memory paths for errors; children are consecutive, sorted,
    /// after their parent, at every depth.
    #[test]
    fn paths_are_rebuilt_from_the_parents() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("x/y")).unwrap();
        fs::write(d.join("x/y/f"), b"abc").unwrap();
        fs::write(d.join("x/g"), b"").unwrap();
        std::os::unix::fs::symlink("y/f", d.join("x/l")).unwrap();
        let tree = Node::dir_from([
            ("m", Node::dir_from([("disk", Node::Disk(d.join("x")))])),
            ("a", Node::bytes("1")),
            ("s", Node::Symlink("m/disk".into())),
        ]);
        let arena = Arena::from_node(&tree, false, None, usize::MAX).unwrap();
        let by_rel = |rel: &str| {
            (0..arena.items.len())
                .find(|&i| arena.rel(i) == rel)
                .unwrap_or_else(|| panic!("{rel}"))
        };
        assert_eq!(arena.rel(0), "");
        assert_eq!(arena.path(0), Path::new("."));
        assert_eq!(arena.path(by_rel("m")), Path::new("m"));
        assert_eq!(arena.path(by_rel("m/disk")), d.join("x"));
        assert_eq!(arena.path(by_rel("m/disk/y/f")), d.join("x/y/f"));
        assert_eq!(arena.target(by_rel("m/disk/l")), b"y/f");
        assert_eq!(arena.target(by_rel("s")), b"m/disk");
        assert_eq!(arena.total_bytes(), 4);
        for (i, item) in arena.items.iter().enumerate() {
            if let Kind::Dir { children } = &item.kind {
                assert!(children.start > i);
                assert!(children.clone().all(|c| arena.items[c].parent == i));
                let names: Vec<&str> = children.clone().map(|c| arena.name(c)).collect();
                assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
            }
        }
        let mut rels: Vec<String> = (0..arena.items.len()).map(|i| arena.rel(i)).collect();
        rels.sort();
        assert_eq!(
            rels,
            [
                "",
                "a",
                "m",
                "m/disk",
                "m/disk/g",
                "m/disk/l",
                "m/disk/y",
                "m/disk/y/f",
                "s"
            ]
        );
        // Walked from disk: the root is the path given.
        let arena = Arena::from_disk(d, false, None, usize::MAX).unwrap();
        assert_eq!(arena.path(0), d);
        let f = (0..arena.items.len())
            .find(|&i| arena.rel(i) == "x/y/f")
            .unwrap();
        assert_eq!(arena.path(f), d.join("x/y/f"));
        assert!(matches!(
            arena.items[f].kind,
            Kind::File {
                source: Source::Walked,
                size: 3
            }
        ));
    }

    /// SECURITY.md's delivery term counts 56 bytes per item.
    #[test]
    fn an_item_is_56_bytes_plus_its_name() {
        assert!(std::mem::size_of::<Item<'_>>() <= 56);
    }

    /// Trees deeper than a native stack would take are walked (the walk keeps its own
    /// stack).
    #[test]
    fn deep_memory_trees_are_walked_without_recursion() {
        let mut node = Node::bytes("leaf");
        for _ in 0..100_000 {
            node = Node::dir_from([("d", node)]);
        }
        let arena = Arena::from_node(&node, false, None, usize::MAX).unwrap();
        assert_eq!(arena.items.len(), 100_001);
        assert_eq!(arena.total_bytes(), 4);
        // Dropping a deep `Node` recurses: leak it rather than overflow the test's stack.
        std::mem::forget(arena);
        std::mem::forget(node);
    }
}
