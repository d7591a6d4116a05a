//! Importing one file: chunk, make leaves, hash them on all cores, lay them out.
//!
//! While one window of chunks is hashed in parallel (rayon, order-preserving), the next
//! window is read: two windows are in memory at most. Leaves are fed to the balanced
//! builder in file order, so the result does not depend on thread timing.

use crate::balanced::{Balanced, Subtree};
use crate::car::BlockSink;
use crate::chunker::{self, Windows};
use crate::cid::DAG_PB;
use crate::cid::{Cid, RAW, SHA2_256_LEN};
use crate::options::Options;
use crate::unixfs;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// Windows smaller than this are hashed on the calling thread (not worth a fork).
const PARALLEL_MIN_BYTES: usize = 512 * 1024;

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

/// Why a file import failed.
#[derive(Debug)]
pub enum FileError {
    /// Reading the input failed.
    Read(io::Error),
    /// Storing a block (the CAR spool) failed.
    Sink(io::Error),
}

/// Import the bytes of `reader` as a UnixFS file. `size_hint` (the expected length, if
/// known) only sizes buffers. `progress` is called with the number of bytes consumed
/// after each window.
pub fn import_file(
    reader: impl Read + Send,
    size_hint: Option<u64>,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    progress: &(dyn Fn(u64) + Sync),
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
        progress(len as u64);
        cur_len = read.map_err(FileError::Read)?;
        std::mem::swap(&mut cur, &mut next);
    }
    layout.finish().map_err(FileError::Sink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Profile;

    fn cid_of(data: &[u8], profile: Profile) -> String {
        import_file(data, None, &Options::profile(profile), None, &|_| {})
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
        let a = import_file(&data[..], Some(3_000_000), &opts, None, &|_| {}).unwrap();
        let b = import_file(Trickle(&data), None, &opts, None, &|_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.filesize, 3_000_000);
    }
}
