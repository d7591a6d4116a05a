//! Importing one file: chunk, make leaves, hash them on all cores, lay them out.
//!
//! Three sources, one result (the chunks are the same whatever the source):
//! - a file on disk of known size ([`import_disk_file`]): a large file is memory-mapped
//!   one window at a time and its chunks hashed straight from the page cache (no copy:
//!   copying out of the page cache cost as much CPU as SHA-NI hashing itself); a small
//!   file, or one that cannot be mapped, is read with one `pread` per cache-sized piece
//!   per chunk task. Either way memory is bounded by a window, never the file;
//! - bytes in memory ([`import_bytes`]): chunks are hashed in place;
//! - any reader ([`import_file`]): read a window at a time; while one window is hashed
//!   the next is read, so two windows are in memory at most.
//!
//! Chunks are hashed in parallel batches (rayon, order-preserving) and the leaves are fed
//! to the balanced builder in file order, so the result does not depend on timing.

use crate::balanced::{Balanced, Subtree};
use crate::car::BlockSink;
use crate::chunker::{self, Windows};
use crate::cid::DAG_PB;
use crate::cid::{Cid, RAW, SHA2_256_LEN};
use crate::options::Options;
use crate::unixfs;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Windows smaller than this are hashed on the calling thread (not worth a fork).
const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// Bytes per `pread` when hashing a chunk of a file on disk: small enough to stay in a
/// core's L2 cache between being copied and being hashed.
const PIECE_BYTES: usize = 128 * 1024;

/// Chunks hashed per parallel batch from disk or memory (bounds the leaves held before
/// layout; the bytes themselves are not held).
const BATCH_CHUNKS: usize = 64;

/// Files at least this large are memory-mapped (below it, `mmap` + `munmap` cost more
/// than the copy they save).
const MAP_MIN_BYTES: u64 = 1024 * 1024;

/// Bytes mapped at a time (whole chunks, at least one); two windows are mapped at most
/// (the one being hashed and the next), which bounds the resident set.
const MAP_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

thread_local! {
    /// Each hashing thread's piece buffer, reused across chunks and files.
    static PIECE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hash one leaf block for `chunk`, store it in `sink`, and describe it.
fn leaf(chunk: &[u8], opts: &Options, sink: Option<&dyn BlockSink>) -> io::Result<Subtree> {
    if opts.raw_leaves {
        let digest: [u8; SHA2_256_LEN] = Sha256::digest(chunk).into();
        let cid = Cid::from_digest(opts.cid_version, RAW, digest);
        if let Some(sink) = sink {
            sink.put(&cid, &[chunk])?;
        }
        return Ok(Subtree {
            cid,
            tsize: chunk.len() as u64,
            filesize: chunk.len() as u64,
        });
    }
    let (prefix, suffix) = unixfs::file_leaf_parts(chunk.len());
    let mut h = Sha256::new();
    h.update(&prefix);
    h.update(chunk);
    h.update(&suffix);
    let cid = Cid::from_digest(opts.cid_version, DAG_PB, h.finalize().into());
    if let Some(sink) = sink {
        sink.put(&cid, &[&prefix, chunk, &suffix])?;
    }
    Ok(Subtree {
        cid,
        tsize: (prefix.len() + chunk.len() + suffix.len()) as u64,
        filesize: chunk.len() as u64,
    })
}

fn hash_window(
    window: &[u8],
    opts: &Options,
    sink: Option<&dyn BlockSink>,
) -> io::Result<Vec<Subtree>> {
    if window.len() < PARALLEL_MIN_BYTES {
        chunker::chunks(window, opts.chunk_size)
            .map(|c| leaf(c, opts, sink))
            .collect()
    } else {
        window
            .par_chunks(opts.chunk_size)
            .map(|c| leaf(c, opts, sink))
            .collect()
    }
}

/// What a progress callback returns to end an import where it is (e.g. a deadline has
/// passed): the import then fails with [`FileError::Stopped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

/// Why a file import failed.
#[derive(Debug)]
pub enum FileError {
    /// Reading the input failed.
    Read(io::Error),
    /// Storing a block (the CAR spool) failed.
    Sink(io::Error),
    /// The file could not be memory-mapped (it is then read instead).
    Map(io::Error),
    /// The progress callback said [`Stopped`].
    Stopped,
}

impl From<Stopped> for FileError {
    fn from(_: Stopped) -> Self {
        FileError::Stopped
    }
}

/// Import the bytes of `reader` as a UnixFS file. `size_hint` (the expected length, if
/// known) only sizes buffers. `progress` is called with the number of bytes consumed
/// after each window (16 MiB mapped, 4 MiB read, 64 chunks otherwise: at most 128 MiB
/// at the largest chunk size) and may stop the import there: a caller bounded by a
/// deadline stops within one window of it, whatever the file's size. Rejected: a deadline of this module's own (the caller's callback
/// already runs at each window, and the policy stays with the caller).
pub fn import_file(
    reader: impl Read + Send,
    size_hint: Option<u64>,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) -> Result<(), Stopped> + Sync),
) -> Result<Subtree, FileError> {
    let mut windows = Windows::with_size_hint(reader, opts.chunk_size, size_hint);
    let mut layout = Balanced::new(opts.max_links, opts.cid_version, sink);
    let mut cur = Vec::new();
    let mut next = Vec::new();
    let mut cur_len = windows.next_window(&mut cur).map_err(FileError::Read)?;
    while let Some(len) = cur_len {
        let window = &cur[..len];
        let (leaves, read) = if len < PARALLEL_MIN_BYTES {
            (
                hash_window(window, opts, sink),
                windows.next_window(&mut next),
            )
        } else {
            rayon::join(
                || hash_window(window, opts, sink),
                || windows.next_window(&mut next),
            )
        };
        for l in leaves.map_err(FileError::Sink)? {
            layout.push_leaf(l).map_err(FileError::Sink)?;
        }
        progress(len as u64)?;
        cur_len = read.map_err(FileError::Read)?;
        std::mem::swap(&mut cur, &mut next);
    }
    layout.finish().map_err(FileError::Sink)
}

/// The leaf of the chunk `[offset, offset + len)` of `file`, read in pieces.
fn disk_leaf(
    file: &File,
    offset: u64,
    len: usize,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
) -> Result<Subtree, FileError> {
    if sink.is_some() {
        // A CAR needs the block's bytes: read the whole chunk.
        let mut chunk = vec![0u8; len];
        file.read_exact_at(&mut chunk, offset).map_err(changed)?;
        return leaf(&chunk, opts, sink).map_err(FileError::Sink);
    }
    PIECE.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < PIECE_BYTES {
            buf.resize(PIECE_BYTES, 0);
        }
        let (prefix, suffix) = if opts.raw_leaves {
            (Vec::new(), Vec::new())
        } else {
            unixfs::file_leaf_parts(len)
        };
        let mut h = Sha256::new();
        h.update(&prefix);
        let mut done = 0;
        while done < len {
            let n = PIECE_BYTES.min(len - done);
            file.read_exact_at(&mut buf[..n], offset + done as u64)
                .map_err(changed)?;
            h.update(&buf[..n]);
            done += n;
        }
        h.update(&suffix);
        let digest: [u8; SHA2_256_LEN] = h.finalize().into();
        let (codec, tsize) = if opts.raw_leaves {
            (RAW, len)
        } else {
            (DAG_PB, prefix.len() + len + suffix.len())
        };
        Ok(Subtree {
            cid: Cid::from_digest(opts.cid_version, codec, digest),
            tsize: tsize as u64,
            filesize: len as u64,
        })
    })
}

/// A read error; a file that ended early has changed since its size was taken.
fn changed(e: io::Error) -> FileError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FileError::Read(io::Error::other("the file shrank while it was hashed"))
    } else {
        FileError::Read(e)
    }
}

/// Hash the chunks of a `size`-byte input in parallel batches, in order, with
/// `leaf_at(offset, len)`, and lay them out.
fn import_chunks(
    size: u64,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) -> Result<(), Stopped> + Sync),
    leaf_at: impl Fn(u64, usize) -> Result<Subtree, FileError> + Sync,
) -> Result<Subtree, FileError> {
    let chunk = opts.chunk_size as u64;
    let chunks = size.div_ceil(chunk).max(1);
    let mut layout = Balanced::new(opts.max_links, opts.cid_version, sink);
    let mut first = 0u64;
    while first < chunks {
        let last = (first + BATCH_CHUNKS as u64).min(chunks);
        let span = |i: u64| (i * chunk, (size - i * chunk).min(chunk) as usize);
        let leaves: Vec<Subtree> = if last - first == 1 {
            let (off, len) = span(first);
            vec![leaf_at(off, len)?]
        } else {
            (first..last)
                .into_par_iter()
                .map(|i| {
                    let (off, len) = span(i);
                    leaf_at(off, len)
                })
                .collect::<Result<_, _>>()?
        };
        for l in leaves {
            layout.push_leaf(l).map_err(FileError::Sink)?;
        }
        progress((last * chunk).min(size) - (first * chunk).min(size))?;
        first = last;
    }
    layout.finish().map_err(FileError::Sink)
}

/// Import a file on disk whose size is `size` (non-zero: files that report size 0, as
/// in /proc, go through [`import_file`]). Fails if the file changes size meanwhile.
///
/// Large files are memory-mapped a window at a time. As with any reader that maps
/// files, a file truncated by another process while it is mapped raises SIGBUS; inputs
/// being hashed must not be modified meanwhile (the CID would be meaningless anyway).
pub fn import_disk_file(
    file: &File,
    size: u64,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) -> Result<(), Stopped> + Sync),
) -> Result<Subtree, FileError> {
    let root = if size >= MAP_MIN_BYTES {
        match import_mapped(file, size, opts, sink, progress) {
            Err(FileError::Map(_)) => None,
            other => Some(other?),
        }
    } else {
        None
    };
    let root = match root {
        Some(root) => root,
        None => import_chunks(size, opts, sink, progress, |off, len| {
            disk_leaf(file, off, len, opts, sink)
        })?,
    };
    let mut probe = [0u8; 1];
    if file.read_at(&mut probe, size).map_err(FileError::Read)? != 0 {
        return Err(FileError::Read(io::Error::other(
            "the file grew while it was hashed",
        )));
    }
    Ok(root)
}

/// The mapped path of [`import_disk_file`]: `FileError::Map` when the file cannot be
/// mapped (the caller then reads it instead).
fn import_mapped(
    file: &File,
    size: u64,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) -> Result<(), Stopped> + Sync),
) -> Result<Subtree, FileError> {
    // Never map past the end of the file (touching such pages raises SIGBUS).
    if file.metadata().map_err(FileError::Read)?.len() != size {
        return Err(changed(io::ErrorKind::UnexpectedEof.into()));
    }
    let chunk = opts.chunk_size as u64;
    let window = (MAP_WINDOW_BYTES / chunk).max(1) * chunk;
    let map_at = |offset: u64| -> Result<Option<memmap2::Mmap>, FileError> {
        if offset >= size {
            return Ok(None);
        }
        let len = window.min(size - offset);
        // SAFETY: the mapping is read-only and private to this function; the file must
        // not be truncated while mapped (see `import_disk_file`).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .populate()
                .map(file)
        };
        match map {
            Ok(map) if map.len() as u64 == len => Ok(Some(map)),
            Ok(_) => Err(changed(io::ErrorKind::UnexpectedEof.into())),
            Err(e) if offset == 0 => Err(FileError::Map(e)),
            Err(e) => Err(FileError::Read(e)),
        }
    };
    let mut layout = Balanced::new(opts.max_links, opts.cid_version, sink);
    let mut offset = 0u64;
    let mut current = map_at(0)?;
    while let Some(map) = current {
        let len = map.len() as u64;
        // Map (and fault in) the next window while this one is hashed.
        let (leaves, next) = rayon::join(
            || {
                map.par_chunks(opts.chunk_size)
                    .map(|c| leaf(c, opts, sink))
                    .collect::<io::Result<Vec<Subtree>>>()
            },
            || map_at(offset + len),
        );
        drop(map);
        for l in leaves.map_err(FileError::Sink)? {
            layout.push_leaf(l).map_err(FileError::Sink)?;
        }
        progress(len)?;
        offset += len;
        current = next?;
    }
    // The size may have changed between the caller's fstat and the mapping.
    if file.metadata().map_err(FileError::Read)?.len() != size {
        return Err(changed(io::ErrorKind::UnexpectedEof.into()));
    }
    layout.finish().map_err(FileError::Sink)
}

/// Import bytes held in memory (hashed in place, never copied).
pub fn import_bytes(
    data: &[u8],
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) -> Result<(), Stopped> + Sync),
) -> Result<Subtree, FileError> {
    import_chunks(data.len() as u64, opts, sink, progress, |off, len| {
        let off = off as usize;
        leaf(&data[off..off + len], opts, sink).map_err(FileError::Sink)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Profile;

    fn cid_of(data: &[u8], profile: Profile) -> String {
        import_file(data, None, &Options::profile(profile), None, &|_| Ok(()))
            .unwrap()
            .cid
            .to_string()
    }

    #[test]
    fn well_known_files() {
        assert_eq!(
            cid_of(b"hello\n", Profile::UnixfsV0_2015),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
        assert_eq!(
            cid_of(b"", Profile::UnixfsV0_2015),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        assert_eq!(
            cid_of(b"", Profile::UnixfsV1_2025),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn disk_memory_and_reader_sources_agree() {
        let dir = tempfile::tempdir().unwrap();
        for (profile, len) in [
            (Profile::UnixfsV0_2015, 1usize),
            (Profile::UnixfsV0_2015, 262_144),
            (Profile::UnixfsV0_2015, 4 * 1_048_576),
            (Profile::UnixfsV0_2015, 262_145 + 64 * 262_144),
            (Profile::UnixfsV1_2025, 3 * 1_048_576 + 5),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let opts = Options::profile(profile);
            let f = File::open(&path).unwrap();
            let disk = import_disk_file(&f, len as u64, &opts, None, &|_| Ok(())).unwrap();
            let mem = import_bytes(&data, &opts, None, &|_| Ok(())).unwrap();
            let stream = import_file(&data[..], None, &opts, None, &|_| Ok(())).unwrap();
            assert_eq!(disk, mem, "{profile} {len}");
            assert_eq!(disk, stream, "{profile} {len}");
            // A size that no longer matches the file is an error, not a wrong CID.
            assert!(import_disk_file(&f, len as u64 - 1, &opts, None, &|_| Ok(())).is_err());
            assert!(import_disk_file(&f, len as u64 + 1, &opts, None, &|_| Ok(())).is_err());
        }
    }

    #[test]
    fn a_progress_callback_stops_an_import_at_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default();
        // Three windows whichever way the bytes come: mapped (16 MiB), read (4 MiB), or
        // in memory and from a small file (64 chunks of 256 KiB).
        for len in [40usize << 20, 12 << 20] {
            let data = vec![5u8; len];
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let f = File::open(&path).unwrap();
            let calls = std::sync::atomic::AtomicU32::new(0);
            let stop_at_first = |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Stopped)
            };
            let results = [
                import_disk_file(&f, len as u64, &opts, None, &stop_at_first),
                import_bytes(&data, &opts, None, &stop_at_first),
                import_file(&data[..], None, &opts, None, &stop_at_first),
            ];
            for r in results {
                assert!(matches!(r, Err(FileError::Stopped)), "{len}: {r:?}");
            }
            assert_eq!(calls.into_inner(), 3, "one window each, then stopped");
        }
    }

    #[test]
    fn the_same_bytes_give_the_same_root_whatever_the_reads() {
        // A reader that returns at most 1000 bytes per read must not change chunking.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(1000).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let opts = Options::default();
        let a = import_file(&data[..], Some(3_000_000), &opts, None, &|_| Ok(())).unwrap();
        let b = import_file(Trickle(&data), None, &opts, None, &|_| Ok(())).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.filesize, 3_000_000);
    }
}
