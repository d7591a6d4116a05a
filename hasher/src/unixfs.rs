//! The UnixFS `Data` message carried in `PBNode.Data`, byte-exact with go-unixfs/boxo and
//! `ipfs-unixfs`:
//!
//! ```text
//! message Data {
//!   enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
//!   required DataType Type = 1;   optional bytes Data = 2;      optional uint64 filesize = 3;
//!   repeated uint64 blocksizes = 4;  // proto2 without [packed=true]: one key per value
//!   optional uint64 hashType = 5;    optional uint64 fanout = 6;
//!   optional uint32 mode = 7;        optional UnixTime mtime = 8;
//! }
//! ```
//!
//! Fields are written in field-number order; an empty `Data` is left out; files always
//! carry `filesize`; mode and mtime are never written (neither profile stores them).

use crate::pb;

/// `DataType.Raw` (an old form of file leaf; read, never written).
pub const TYPE_RAW: u64 = 0;
/// `DataType.Directory`.
pub const TYPE_DIRECTORY: u64 = 1;
/// `DataType.File`.
pub const TYPE_FILE: u64 = 2;
/// `DataType.Symlink`.
pub const TYPE_SYMLINK: u64 = 4;
/// `DataType.HAMTShard`.
pub const TYPE_HAMT_SHARD: u64 = 5;

const F_TYPE: u64 = 1;
const F_DATA: u64 = 2;
const F_FILESIZE: u64 = 3;
const F_BLOCKSIZES: u64 = 4;
const F_HASH_TYPE: u64 = 5;
const F_FANOUT: u64 = 6;

/// A directory's Data: `{Type: Directory}` = `08 01`.
pub fn directory() -> Vec<u8> {
    let mut out = Vec::with_capacity(2);
    pb::put_uint_field(&mut out, F_TYPE, TYPE_DIRECTORY);
    out
}

/// A symlink's Data: `{Type: Symlink, Data: target}`.
pub fn symlink(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + target.len());
    pb::put_uint_field(&mut out, F_TYPE, TYPE_SYMLINK);
    if !target.is_empty() {
        pb::put_bytes_field(&mut out, F_DATA, target);
    }
    out
}

/// An inner file node's Data: `{Type: File, filesize, blocksizes...}` (no Data).
pub fn file_node(filesize: u64, blocksizes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 11 + blocksizes.len() * 6);
    pb::put_uint_field(&mut out, F_TYPE, TYPE_FILE);
    pb::put_uint_field(&mut out, F_FILESIZE, filesize);
    for &b in blocksizes {
        pb::put_uint_field(&mut out, F_BLOCKSIZES, b);
    }
    out
}

/// A HAMT shard's Data: `{Type: HAMTShard, Data: bitfield, hashType, fanout}`.
pub fn hamt_shard(bitfield: &[u8], hash_type: u64, fanout: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + bitfield.len());
    pb::put_uint_field(&mut out, F_TYPE, TYPE_HAMT_SHARD);
    if !bitfield.is_empty() {
        pb::put_bytes_field(&mut out, F_DATA, bitfield);
    }
    pb::put_uint_field(&mut out, F_HASH_TYPE, hash_type);
    pb::put_uint_field(&mut out, F_FANOUT, fanout);
    out
}

/// A dag-pb leaf holding file bytes (`{Type: File, Data: chunk, filesize}` in a PBNode
/// without links), split around the chunk so the chunk is never copied for hashing:
/// the block is `prefix ‖ chunk ‖ suffix`.
pub fn file_leaf_parts(chunk_len: usize) -> (Vec<u8>, Vec<u8>) {
    let n = chunk_len as u64;
    let mut suffix = Vec::with_capacity(11);
    pb::put_uint_field(&mut suffix, F_FILESIZE, n);
    let data_field = if chunk_len == 0 {
        0
    } else {
        pb::bytes_field_len(chunk_len)
    };
    let inner = 2 + data_field + suffix.len();
    let mut prefix = Vec::with_capacity(16);
    // PBNode.Data (field 1, length-delimited) wrapping the UnixFS message.
    pb::put_key(&mut prefix, 1, pb::WIRE_LEN);
    pb::put_varint(&mut prefix, inner as u64);
    pb::put_uint_field(&mut prefix, F_TYPE, TYPE_FILE);
    if chunk_len > 0 {
        pb::put_key(&mut prefix, F_DATA, pb::WIRE_LEN);
        pb::put_varint(&mut prefix, n);
    }
    (prefix, suffix)
}

/// A decoded `Data` message: the fields a reader needs (mode and mtime are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// `Type` (one of the `TYPE_*` constants, or another value for the caller to refuse).
    pub kind: u64,
    /// `Data`: file bytes, a symlink's target, a HAMT shard's bitfield (empty if absent).
    pub data: &'a [u8],
    pub filesize: Option<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
}

/// Decodes a UnixFS `Data` message. `Type` is required; fields 7 (mode) and 8 (mtime) are
/// accepted and ignored, as IPFS readers ignore them unless asked; any other field is an
/// error.
pub fn decode(msg: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let mut kind = None;
    let mut d = Decoded {
        kind: 0,
        data: &[],
        filesize: None,
        hash_type: None,
        fanout: None,
    };
    for (field, value) in pb::fields(msg)? {
        match (field, value) {
            (F_TYPE, pb::Value::Varint(t)) => kind = Some(t),
            (F_DATA, pb::Value::Bytes(b)) => d.data = b,
            (F_FILESIZE, pb::Value::Varint(n)) => d.filesize = Some(n),
            (F_BLOCKSIZES, pb::Value::Varint(_)) => {}
            (F_HASH_TYPE, pb::Value::Varint(n)) => d.hash_type = Some(n),
            (F_FANOUT, pb::Value::Varint(n)) => d.fanout = Some(n),
            (7, pb::Value::Varint(_)) | (8, pb::Value::Bytes(_)) => {}
            _ => return Err("unexpected field in a UnixFS Data message"),
        }
    }
    d.kind = kind.ok_or("a UnixFS Data message without Type")?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_back_each_kind_written_here() {
        let (link, file, shard) = (
            symlink(b"../t"),
            file_node(10, &[4, 6]),
            hamt_shard(&[1, 2], 0x22, 256),
        );
        let d = decode(&link).unwrap();
        assert_eq!((d.kind, d.data), (TYPE_SYMLINK, &b"../t"[..]));
        let d = decode(&file).unwrap();
        assert_eq!((d.kind, d.filesize), (TYPE_FILE, Some(10)));
        let d = decode(&shard).unwrap();
        assert_eq!(d.kind, TYPE_HAMT_SHARD);
        assert_eq!(
            (d.data, d.hash_type, d.fanout),
            (&[1u8, 2][..], Some(0x22), Some(256))
        );
        assert_eq!(decode(&directory()).unwrap().kind, TYPE_DIRECTORY);
        assert!(decode(&[]).is_err(), "Type is required");
    }
    use crate::cid::{Cid, CidVersion, DAG_PB};

    fn leaf(chunk: &[u8]) -> Vec<u8> {
        let (p, s) = file_leaf_parts(chunk.len());
        [p.as_slice(), chunk, s.as_slice()].concat()
    }

    #[test]
    fn hello_and_empty_file_leaves_are_the_well_known_cids() {
        assert_eq!(
            Cid::of_block(CidVersion::V0, DAG_PB, &leaf(b"hello\n")).to_string(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
        assert_eq!(leaf(b""), [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        assert_eq!(
            Cid::of_block(CidVersion::V0, DAG_PB, &leaf(b"")).to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
    }

    #[test]
    fn blocksizes_are_unpacked() {
        assert_eq!(
            file_node(300, &[200, 100]),
            [0x08, 0x02, 0x18, 0xac, 0x02, 0x20, 0xc8, 0x01, 0x20, 0x64]
        );
    }

    #[test]
    fn hamt_and_symlink_data() {
        assert_eq!(
            hamt_shard(&[0x80], 0x22, 256),
            [0x08, 0x05, 0x12, 0x01, 0x80, 0x28, 0x22, 0x30, 0x80, 0x02]
        );
        assert_eq!(symlink(b"a"), [0x08, 0x04, 0x12, 0x01, b'a']);
    }

    #[test]
    fn a_large_leaf_has_multibyte_lengths() {
        let chunk = vec![7u8; 262_144];
        let block = leaf(&chunk);
        // 0a [varint inner] 08 02 12 [varint 262144] chunk 18 [varint 262144]
        assert_eq!(&block[..2], &[0x0a, 0x8a]);
        assert_eq!(block.len(), 262_158);
    }
}
