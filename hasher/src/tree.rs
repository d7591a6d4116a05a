//! The inputs: a tree on disk, or a tree held in memory ([`Node`]), both flattened into
//! one arena in depth-first pre-order with children sorted by name bytes.
//!
//! Walking happens before hashing, so the total size is known for progress reporting
//! and all files can be hashed in parallel.

use crate::error::{HashError, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
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
    Disk(PathBuf),
    Bytes(&'a [u8]),
    Open(&'a OpenFn),
}

pub(crate) enum Kind<'a> {
    File {
        source: Source<'a>,
        size: u64,
    },
    /// Children: (name, arena index), sorted by name bytes.
    Dir {
        children: Vec<(String, usize)>,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One flattened entry.
pub(crate) struct Item<'a> {
    /// Path relative to the root, `/`-separated; empty for the root.
    pub rel: String,
    /// The path shown in errors: the disk path, or the relative path of a memory tree.
    pub shown: PathBuf,
    pub kind: Kind<'a>,
}

/// The flattened tree: item 0 is the root; every directory comes before its children.
pub(crate) struct Arena<'a> {
    pub items: Vec<Item<'a>>,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

impl<'a> Arena<'a> {
    /// Walk a path on disk. Symlinks are stored, never followed; hidden names are
    /// skipped unless `hidden` (the root itself is always taken). Fails with
    /// [`HashError::Deadline`] at the first entry reached at or after `deadline`.
    ///
    /// The walk recurses one frame per level; the host bounds its depth, since every
    /// level adds at least two bytes to the path each call here passes whole, and the
    /// kernel refuses one over `PATH_MAX` (4,096 bytes): about 2,048 levels at most
    /// (`tests::the_deepest_tree_the_host_can_name_is_walked_on_a_small_stack`).
    pub fn from_disk(root: &Path, hidden: bool, deadline: Option<Instant>) -> Result<Arena<'a>> {
        let mut arena = Arena { items: Vec::new() };
        arena.walk_disk(root, String::new(), hidden, deadline)?;
        Ok(arena)
    }

    fn walk_disk(
        &mut self,
        path: &Path,
        rel: String,
        hidden: bool,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Err(HashError::Deadline);
        }
        let read_err = |cause| HashError::Read {
            path: path.to_path_buf(),
            cause,
        };
        let meta = fs::symlink_metadata(path).map_err(read_err)?;
        let ft = meta.file_type();
        let idx = self.items.len();
        let kind = if ft.is_file() {
            Kind::File {
                source: Source::Disk(path.to_path_buf()),
                size: meta.len(),
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err)?;
            Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_dir() {
            Kind::Dir {
                children: Vec::new(),
            }
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
        let is_dir = matches!(kind, Kind::Dir { .. });
        self.items.push(Item {
            rel: rel.clone(),
            shown: path.to_path_buf(),
            kind,
        });
        if is_dir {
            let mut names = Vec::new();
            for entry in fs::read_dir(path).map_err(read_err)? {
                let entry = entry.map_err(read_err)?;
                let os_name = entry.file_name();
                let name = os_name
                    .to_str()
                    .ok_or_else(|| HashError::NonUtf8Name { path: entry.path() })?
                    .to_string();
                if hidden || !is_hidden(&name) {
                    names.push(name);
                }
            }
            names.sort_unstable();
            let mut children = Vec::with_capacity(names.len());
            for name in names {
                let child_rel = join(&rel, &name);
                let child = self.walk_disk(&path.join(&name), child_rel, hidden, deadline)?;
                children.push((name, child));
            }
            self.items[idx].kind = Kind::Dir { children };
        }
        Ok(idx)
    }

    /// Flatten an in-memory tree. Hidden names are skipped unless `hidden`; the walk of
    /// its [`Node::Disk`] parts stops at `deadline` as [`Arena::from_disk`]'s does.
    pub fn from_node(root: &'a Node, hidden: bool, deadline: Option<Instant>) -> Result<Arena<'a>> {
        let mut arena = Arena { items: Vec::new() };
        arena.walk_node(root, String::new(), hidden, deadline)?;
        Ok(arena)
    }

    fn walk_node(
        &mut self,
        node: &'a Node,
        rel: String,
        hidden: bool,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        let idx = self.items.len();
        let shown = PathBuf::from(if rel.is_empty() { "." } else { rel.as_str() });
        let kind = match node {
            Node::File(content) => {
                let (source, size) = match content {
                    FileContent::Bytes(b) => (Source::Bytes(b), b.len() as u64),
                    FileContent::Path(p) => {
                        let meta = fs::metadata(p).map_err(|cause| HashError::Read {
                            path: p.clone(),
                            cause,
                        })?;
                        (Source::Disk(p.clone()), meta.len())
                    }
                    FileContent::Open(f) => (Source::Open(&**f), 0),
                };
                Kind::File { source, size }
            }
            Node::Symlink(target) => Kind::Symlink {
                target: target.as_bytes().to_vec(),
            },
            Node::Dir(_) => Kind::Dir {
                children: Vec::new(),
            },
            Node::Disk(path) => return self.walk_disk(path, rel, hidden, deadline),
        };
        self.items.push(Item {
            rel: rel.clone(),
            shown: shown.clone(),
            kind,
        });
        if let Node::Dir(entries) = node {
            let mut children = Vec::with_capacity(entries.len());
            for (name, child) in entries {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(HashError::InvalidName {
                        dir: shown,
                        name: name.clone(),
                    });
                }
                if !hidden && is_hidden(name) {
                    continue;
                }
                let c = self.walk_node(child, join(&rel, name), hidden, deadline)?;
                children.push((name.clone(), c));
            }
            self.items[idx].kind = Kind::Dir { children };
        }
        Ok(idx)
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
        let arena = Arena::from_node(&tree, false, None).unwrap();
        let Kind::Dir { children } = &arena.items[0].kind else {
            panic!("root is a dir")
        };
        let names: Vec<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["10", "9", "B", "b", "é"]);
        assert_eq!(Arena::from_node(&tree, true, None).unwrap().items.len(), 7);
        assert_eq!(arena.total_bytes(), 5);
    }

    #[test]
    fn the_deepest_tree_the_host_can_name_is_walked_on_a_small_stack() {
        let t = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(t.path()).unwrap();
        let levels = (4095 - base.as_os_str().len() - 2) / 2;
        let deepest = base.join("d/".repeat(levels));
        fs::create_dir_all(&deepest).unwrap();
        fs::write(deepest.join("f"), b"deep").unwrap();
        // On a thread of Rust's default 2 MiB stack, as a batch worker's.
        let items =
            std::thread::spawn(move || Arena::from_disk(&base, true, None).map(|a| a.items.len()))
                .join()
                .unwrap();
        assert_eq!(
            items.unwrap(),
            levels + 2,
            "every level, the file and the root"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let tree = Node::dir_from([("a/b", Node::bytes(""))]);
        let err = Arena::from_node(&tree, false, None).err().unwrap();
        assert!(err.to_string().contains("a/b"), "{err}");
    }
}
