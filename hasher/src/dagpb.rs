//! dag-pb encoding (the `PBNode` protobuf of the IPLD dag-pb spec), byte-exact with
//! go-merkledag and `@ipld/dag-pb`:
//!
//! ```text
//! message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! ```
//!
//! Links are written *before* Data although Data has the lower field number (the
//! canonical dag-pb form). Every link carries Name (even when empty) and Tsize, as the
//! UnixFS importers write them. Links must already be in their final order (sorted by
//! name bytes for directories, by position for files and HAMT shards).

use crate::cid::Cid;
use crate::pb;

/// `PBNode.Data` field number.
const NODE_DATA: u64 = 1;
/// `PBNode.Links` field number.
const NODE_LINKS: u64 = 2;
/// `PBLink.Hash` field number.
const LINK_HASH: u64 = 1;
/// `PBLink.Name` field number.
const LINK_NAME: u64 = 2;
/// `PBLink.Tsize` field number.
const LINK_TSIZE: u64 = 3;

/// One link of a dag-pb node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbLink {
    /// The CID of the target block.
    pub cid: Cid,
    /// The link name (UTF-8); empty for file chunks.
    pub name: String,
    /// The cumulative size: the target block's length plus the Tsize of all its links.
    pub tsize: u64,
}

impl PbLink {
    /// The same link with its name borrowed.
    pub fn borrowed(&self) -> LinkRef<'_> {
        LinkRef {
            cid: self.cid,
            name: &self.name,
            tsize: self.tsize,
        }
    }
}

/// One link of a dag-pb node whose name lives elsewhere: what [`encode_links`] takes, so
/// that a directory's links are encoded from the importer's tables. Rejected: building a
/// [`PbLink`] per entry (a copy of every name, and 80 bytes more, for every entry of a
/// folder at once: a folder of 500,000 entries is one directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRef<'a> {
    /// The CID of the target block.
    pub cid: Cid,
    /// The link name (UTF-8); empty for file chunks.
    pub name: &'a str,
    /// The cumulative size: the target block's length plus the Tsize of all its links.
    pub tsize: u64,
}

/// Encoded length of one `PBLink` message body (without the enclosing field key/length).
fn link_body_len(name_len: usize, cid_len: usize, tsize: u64) -> usize {
    pb::bytes_field_len(cid_len) + pb::bytes_field_len(name_len) + 1 + pb::varint_len(tsize)
}

/// Bytes one link adds to an encoded `PBNode` (key, length and body).
pub fn link_encoded_len(name_len: usize, cid_len: usize, tsize: u64) -> usize {
    pb::bytes_field_len(link_body_len(name_len, cid_len, tsize))
}

/// Bytes the Data field adds to an encoded `PBNode`.
pub fn data_encoded_len(data_len: usize) -> usize {
    pb::bytes_field_len(data_len)
}

/// Encode a `PBNode`: the links (in the given order), then the data.
pub fn encode_node(links: &[PbLink], data: &[u8]) -> Vec<u8> {
    encode_links(links.iter().map(PbLink::borrowed), data)
}

/// [`encode_node`] over links made on demand: `links` is walked twice, once to size the
/// block and once to write it.
pub fn encode_links<'a, I>(links: I, data: &[u8]) -> Vec<u8>
where
    I: Iterator<Item = LinkRef<'a>> + Clone,
{
    let size = links
        .clone()
        .map(|l| link_encoded_len(l.name.len(), l.cid.encoded_len(), l.tsize))
        .sum::<usize>()
        + data_encoded_len(data.len());
    let mut out = Vec::with_capacity(size);
    for link in links {
        let cid = link.cid.to_bytes();
        pb::put_key(&mut out, NODE_LINKS, pb::WIRE_LEN);
        pb::put_varint(
            &mut out,
            link_body_len(link.name.len(), cid.len(), link.tsize) as u64,
        );
        pb::put_bytes_field(&mut out, LINK_HASH, &cid);
        pb::put_bytes_field(&mut out, LINK_NAME, link.name.as_bytes());
        pb::put_uint_field(&mut out, LINK_TSIZE, link.tsize);
    }
    pb::put_bytes_field(&mut out, NODE_DATA, data);
    debug_assert_eq!(out.len(), size);
    out
}

/// One link of a decoded `PBNode` (see [`decode_node`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedLink<'a> {
    /// The binary CID of the target.
    pub hash: &'a [u8],
    /// The name (bytes as stored; UTF-8 in valid UnixFS, but not checked here).
    pub name: &'a [u8],
    pub tsize: Option<u64>,
}

/// A decoded `PBNode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedNode<'a> {
    pub links: Vec<DecodedLink<'a>>,
    pub data: Option<&'a [u8]>,
}

/// Decodes any well-formed `PBNode` (not only what [`encode_node`] writes): links in
/// their order, the data if present. Unknown fields are an error, as the dag-pb spec
/// requires; a link without Hash is one too.
pub fn decode_node(block: &[u8]) -> Result<DecodedNode<'_>, &'static str> {
    let mut node = DecodedNode {
        links: Vec::new(),
        data: None,
    };
    for (field, value) in pb::fields(block)? {
        match (field, value) {
            (NODE_LINKS, pb::Value::Bytes(body)) => {
                let (mut hash, mut name, mut tsize) = (None, None, None);
                for (f, v) in pb::fields(body)? {
                    match (f, v) {
                        (LINK_HASH, pb::Value::Bytes(h)) if hash.is_none() => hash = Some(h),
                        (LINK_NAME, pb::Value::Bytes(n)) if name.is_none() => name = Some(n),
                        (LINK_TSIZE, pb::Value::Varint(t)) if tsize.is_none() => tsize = Some(t),
                        _ => return Err("unexpected field in a PBLink"),
                    }
                }
                node.links.push(DecodedLink {
                    hash: hash.ok_or("a PBLink without Hash")?,
                    name: name.unwrap_or_default(),
                    tsize,
                });
            }
            (NODE_DATA, pb::Value::Bytes(d)) if node.data.is_none() => node.data = Some(d),
            _ => return Err("unexpected field in a PBNode"),
        }
    }
    Ok(node)
}

/// The targets of a dag-pb block's links, in order. Used to walk our own blocks when
/// writing a CAR; only understands what [`encode_node`] writes.
pub fn decode_link_cids(block: &[u8]) -> Vec<Vec<u8>> {
    let mut links = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let key = read_varint(block, &mut pos);
        let len = read_varint(block, &mut pos) as usize;
        let body = &block[pos..pos + len];
        pos += len;
        if key == (NODE_LINKS << 3) | pb::WIRE_LEN {
            let mut p = 0;
            let hkey = read_varint(body, &mut p);
            debug_assert_eq!(hkey, (LINK_HASH << 3) | pb::WIRE_LEN);
            let hlen = read_varint(body, &mut p) as usize;
            links.push(body[p..p + hlen].to_vec());
        }
    }
    links
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    pb::read_varint(buf, pos).expect("blocks of our own are well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_back_what_encode_writes() {
        let cid = Cid::of_block(crate::cid::CidVersion::V0, crate::cid::DAG_PB, b"x");
        let links = vec![
            PbLink {
                cid,
                name: "a".into(),
                tsize: 7,
            },
            PbLink {
                cid,
                name: String::new(),
                tsize: 300,
            },
        ];
        let block = encode_node(&links, b"data");
        let node = decode_node(&block).unwrap();
        assert_eq!(node.data, Some(&b"data"[..]));
        assert_eq!(node.links.len(), 2);
        assert_eq!(node.links[0].hash, &cid.to_bytes()[..]);
        assert_eq!(node.links[0].name, b"a");
        assert_eq!(node.links[1].tsize, Some(300));
        assert!(decode_node(&block[..block.len() - 1]).is_err());
        assert!(decode_node(&[0x18, 0x01]).is_err(), "field 3 is not dag-pb");
    }
    use crate::cid::{CidVersion, DAG_PB, RAW};

    #[test]
    fn links_come_before_data_and_always_carry_name_and_tsize() {
        let child = Cid::of_block(CidVersion::V1, RAW, b"abc");
        let links = [PbLink {
            cid: child,
            name: String::new(),
            tsize: 3,
        }];
        let block = encode_node(&links, &[0x08, 0x02]);
        let cid = child.to_bytes();
        let mut want = vec![0x12, 2 + 36 + 2 + 2, 0x0a, 36];
        want.extend_from_slice(&cid);
        want.extend_from_slice(&[0x12, 0x00, 0x18, 0x03, 0x0a, 0x02, 0x08, 0x02]);
        assert_eq!(block, want);
        assert_eq!(decode_link_cids(&block), vec![cid]);
    }

    #[test]
    fn the_empty_directory_is_the_well_known_cid() {
        let block = encode_node(&[], &[0x08, 0x01]);
        assert_eq!(block, [0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(
            Cid::of_block(CidVersion::V0, DAG_PB, &block).to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!(
            Cid::of_block(CidVersion::V1, DAG_PB, &block).to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }

    #[test]
    fn link_length_formula_matches_the_encoder() {
        let cid = Cid::of_block(CidVersion::V0, DAG_PB, b"x");
        for (name, tsize) in [("", 0u64), ("a", 127), ("ümlaut", 128), ("x", 1 << 40)] {
            let link = PbLink {
                cid,
                name: name.to_string(),
                tsize,
            };
            let with = encode_node(std::slice::from_ref(&link), &[]).len();
            let without = encode_node(&[], &[]).len();
            assert_eq!(with - without, link_encoded_len(name.len(), 34, tsize));
        }
    }
}
