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

/// What may be written: bytes of file content and entries (files, folders, symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// The default limits: 16 GiB of files, 1,000,000 entries.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_bytes: 16 << 30,
    max_entries: 1_000_000,
};

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
    /// Where.
    pub dest: std::path::PathBuf,
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
    let bad = |why: String| format!("{}: {why}", car.display());
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        // Without blocking: a FIFO is refused, not waited on.
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
    // SAFETY: a read-only private mapping of a file this process does not modify;
    // another process truncating it meanwhile raises SIGBUS, as for any reader that maps
    // (the hasher maps large files the same way).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
    let blocks = Car::parse(&map).map_err(|e| bad(e.to_string()))?;
    let root = match cid {
        Some(text) => Cid::parse(text).ok_or_else(|| bad(format!("{text} is not a CID")))?,
        None => blocks.root(),
    };
    if !blocks.contains(&root) {
        return Err(bad(format!("it holds no block {root}")));
    }
    let kind = match blocks.kind(root).map_err(|e| bad(e.to_string()))? {
        unixfs::TYPE_DIRECTORY | unixfs::TYPE_HAMT_SHARD => "folder",
        unixfs::TYPE_SYMLINK => "symlink",
        _ => "file",
    };
    let size = blocks.expanded(root).map_err(|e| bad(e.to_string()))?;
    if size.bytes > limits.max_bytes || size.entries > limits.max_entries {
        return Err(bad(format!(
            "{root} would unpack to {} bytes in {} entries, more than the {} bytes and {} \
             entries allowed (--max-size, --max-entries)",
            size.bytes, size.entries, limits.max_bytes, limits.max_entries
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
    // A hard link does not replace what appeared at `dest` meanwhile, nor does a
    // rename of a file; a folder's rename fails unless `dest` is an empty folder, which
    // the check above saw missing (a race then leaves the other's folder as it was).
    std::fs::rename(&at, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(Unpacked {
        cid: root.to_string(),
        kind,
        bytes: done.bytes,
        entries: done.entries,
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
        let u = unpack(&t.path().join("x.car"), None, Some(&out), DEFAULT_LIMITS).unwrap();
        assert_eq!((u.cid.as_str(), u.kind), (cid.as_str(), "folder"));
        assert_eq!(car_of(&out).0, cid, "the same tree");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("a.txt")
        );
        // Never over what is there; nothing left beside it.
        let e = unpack(&t.path().join("x.car"), None, Some(&out), DEFAULT_LIMITS).unwrap_err();
        assert!(e.contains("already there"), "{e}");
        // One file of it, by CID.
        let a = Hasher::new(Options::default())
            .hash_path(&src.join("a.txt"))
            .unwrap()
            .root
            .to_string();
        let f = t.path().join("a-copy");
        let u = unpack(&t.path().join("x.car"), Some(&a), Some(&f), DEFAULT_LIMITS).unwrap();
        assert_eq!(u.kind, "file");
        assert_eq!(std::fs::read(&f).unwrap(), b"ay");
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".detwasm-unpack-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
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
        let small = Limits {
            max_bytes: 1000,
            max_entries: 10,
        };
        let e = unpack(&p, None, Some(&out), small).unwrap_err();
        assert!(e.contains("would unpack to 1048576 bytes"), "{e}");
        let last = car.len() - 1;
        car[last] ^= 1;
        std::fs::write(&p, &car).unwrap();
        let e = unpack(&p, None, Some(&out), DEFAULT_LIMITS).unwrap_err();
        assert!(e.contains("corrupt CAR"), "{e}");
        let fifo =
            std::ffi::CString::new(t.path().join("f.car").into_os_string().into_encoded_bytes())
                .unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = unpack(&t.path().join("f.car"), None, Some(&out), DEFAULT_LIMITS).unwrap_err();
        assert!(e.contains("not a regular"), "{e}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
    }
}
