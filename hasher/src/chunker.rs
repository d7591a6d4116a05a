//! Fixed-size chunking (`size-N`, kubo's default chunker) over a bounded read window.
//!
//! A file is read a window at a time (a whole number of chunks); each window is cut
//! into chunks of exactly `chunk_size` bytes except the file's last, which may be
//! shorter. An empty file is one empty chunk. Memory is bounded by the window, never
//! the file.

use std::io::{self, Read};

/// Bytes read per window (rounded to whole chunks, at least one chunk): enough chunks to
/// keep both cores busy hashing, small enough that two windows in flight stay far below
/// the 64 MiB budget.
pub const WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// First buffer size for a reader of unknown length (doubled as needed).
const UNKNOWN_SIZE_START: usize = 64 * 1024;

/// Reads a file window by window.
pub struct Windows<R> {
    reader: R,
    window: usize,
    eof: bool,
    first: bool,
    /// Bytes the reader is expected to still hold, when known (sizes buffers so a small
    /// file is read with one `read` plus the one that sees the end).
    expect: Option<u64>,
}

impl<R: Read> Windows<R> {
    /// Windows of `reader` holding whole `chunk_size` chunks.
    pub fn new(reader: R, chunk_size: usize) -> Self {
        Self::with_size_hint(reader, chunk_size, None)
    }

    /// Like [`Windows::new`], for a reader expected to hold `size` bytes. The hint only
    /// sizes buffers: the bytes actually read decide the chunks.
    pub fn with_size_hint(reader: R, chunk_size: usize, size: Option<u64>) -> Self {
        let chunks = (WINDOW_BYTES / chunk_size).max(1);
        Windows {
            reader,
            window: chunks * chunk_size,
            eof: false,
            first: true,
            expect: size,
        }
    }

    /// Read the next window into the front of `buf` and return its length, or `None`
    /// when the file is exhausted. The first call always returns a window (an empty file
    /// still has one, empty, chunk). `buf` only grows (to at most one window) and is
    /// reused as is, so its bytes are zeroed once, not per window; each `read` asks for
    /// all the room left in the window.
    pub fn next_window(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        if self.eof {
            return Ok(None);
        }
        let target = match self.expect {
            // Room for what is left plus one byte, so the read that meets the end of the
            // file needs no growth.
            Some(left) => left.saturating_add(1).min(self.window as u64) as usize,
            None => self.window.min(UNKNOWN_SIZE_START),
        };
        if buf.len() < target {
            buf.resize(target, 0);
        }
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if filled >= self.window {
                    break;
                }
                let grown = (buf.len() * 2).clamp(1, self.window);
                buf.resize(grown, 0);
            }
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.expect = self.expect.map(|left| left.saturating_sub(filled as u64));
        let first = std::mem::replace(&mut self.first, false);
        Ok((filled > 0 || first).then_some(filled))
    }
}

/// The chunks of a window: `chunk_size` pieces, the last possibly shorter; one empty
/// chunk for an empty window.
pub fn chunks(window: &[u8], chunk_size: usize) -> impl Iterator<Item = &[u8]> {
    let empty: &[u8] = &[];
    let single_empty = window.is_empty().then_some(empty);
    window.chunks(chunk_size).chain(single_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_chunks(len: usize, chunk: usize) -> Vec<usize> {
        let data = vec![1u8; len];
        let mut w = Windows::new(&data[..], chunk);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(n) = w.next_window(&mut buf).unwrap() {
            out.extend(chunks(&buf[..n], chunk).map(<[u8]>::len));
        }
        out
    }

    #[test]
    fn a_wrong_size_hint_changes_nothing() {
        let data = vec![3u8; 10_000];
        for hint in [None, Some(0), Some(9_999), Some(10_000), Some(1 << 40)] {
            let mut w = Windows::with_size_hint(&data[..], 4096, hint);
            let mut buf = Vec::new();
            let mut lens = Vec::new();
            while let Some(n) = w.next_window(&mut buf).unwrap() {
                lens.extend(chunks(&buf[..n], 4096).map(<[u8]>::len));
            }
            assert_eq!(lens, [4096, 4096, 1808], "{hint:?}");
        }
    }

    #[test]
    fn boundaries() {
        assert_eq!(all_chunks(0, 4), [0]);
        assert_eq!(all_chunks(3, 4), [3]);
        assert_eq!(all_chunks(4, 4), [4]);
        assert_eq!(all_chunks(5, 4), [4, 1]);
        let big = WINDOW_BYTES + 1;
        let c = all_chunks(big, 1 << 20);
        assert_eq!(c.len(), 5);
        assert_eq!(c.iter().sum::<usize>(), big);
        assert_eq!(all_chunks(WINDOW_BYTES, 1 << 20), [1 << 20; 4]);
    }
}
