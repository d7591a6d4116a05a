//! Content identifiers (CIDs) of the blocks this crate makes: always sha2-256, codec
//! dag-pb or raw, version 0 or 1.
//!
//! A CIDv0 is the bare multihash `0x12 0x20 ‖ digest` (34 bytes, base58btc text starting
//! `Qm`); a CIDv1 is `varint(1) ‖ varint(codec) ‖ multihash` (36 bytes for these codecs,
//! base32 lower-case text starting `b`). The text forms come from the `cid` crate.

use sha2::{Digest, Sha256};
use std::fmt;

/// Multicodec code of dag-pb (the protobuf merkle-DAG format of UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multicodec code of raw bytes (the leaves of `--raw-leaves` / unixfs-v1-2025).
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Digest length of sha2-256 in bytes.
pub const SHA2_256_LEN: usize = 32;

/// CID version, as `ipfs add --cid-version` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CidVersion {
    /// CIDv0: base58btc, implies dag-pb and sha2-256.
    V0,
    /// CIDv1: self-describing, base32 text.
    V1,
}

/// A sha2-256 CID of a dag-pb or raw block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: CidVersion,
    codec: u64,
    digest: [u8; SHA2_256_LEN],
}

impl Cid {
    /// The CID of `block` with the given version and codec. A raw block always gets a
    /// CIDv1 (v0 can only name dag-pb), exactly as the IPFS importers do.
    pub fn of_block(version: CidVersion, codec: u64, block: &[u8]) -> Cid {
        Cid::from_digest(version, codec, Sha256::digest(block).into())
    }

    /// A CID from an already computed sha2-256 digest. `version` is forced to V1 when
    /// `codec` is not dag-pb.
    pub fn from_digest(version: CidVersion, codec: u64, digest: [u8; SHA2_256_LEN]) -> Cid {
        let version = if codec == DAG_PB {
            version
        } else {
            CidVersion::V1
        };
        Cid {
            version,
            codec,
            digest,
        }
    }

    /// The CID version.
    pub fn version(&self) -> CidVersion {
        self.version
    }

    /// The multicodec of the block (`DAG_PB` or `RAW`).
    pub fn codec(&self) -> u64 {
        self.codec
    }

    /// The sha2-256 digest of the block.
    pub fn digest(&self) -> &[u8; SHA2_256_LEN] {
        &self.digest
    }

    /// The binary form, as it appears in dag-pb links and CAR sections.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        if self.version == CidVersion::V1 {
            crate::pb::put_varint(&mut out, 1);
            crate::pb::put_varint(&mut out, self.codec);
        }
        crate::pb::put_varint(&mut out, SHA2_256);
        crate::pb::put_varint(&mut out, SHA2_256_LEN as u64);
        out.extend_from_slice(&self.digest);
        out
    }

    /// Length of [`Cid::to_bytes`]: 34 for v0, 36 for v1 dag-pb or raw.
    pub fn encoded_len(&self) -> usize {
        let mh = 2 + SHA2_256_LEN;
        match self.version {
            CidVersion::V0 => mh,
            CidVersion::V1 => 1 + crate::pb::varint_len(self.codec) + mh,
        }
    }

    /// Parses the binary form ([`Cid::to_bytes`]) of a CID this crate can make: sha2-256,
    /// v0, or v1 with a one-byte codec. `None` for anything else (another hash, a longer
    /// codec, trailing bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Cid> {
        let (version, codec, mh) = match bytes {
            [0x12, 0x20, ..] => (CidVersion::V0, DAG_PB, bytes),
            [0x01, codec, rest @ ..] if *codec < 0x80 => (CidVersion::V1, u64::from(*codec), rest),
            _ => return None,
        };
        if mh.len() != 2 + SHA2_256_LEN || u64::from(mh[0]) != SHA2_256 || mh[1] != 0x20 {
            return None;
        }
        let digest: [u8; SHA2_256_LEN] = mh[2..].try_into().ok()?;
        let cid = Cid::from_digest(version, codec, digest);
        // A raw block named by a v0 CID cannot exist: from_digest would have made it v1.
        (cid.version == version).then_some(cid)
    }

    /// Parses the text form (`Qm…`, `bafy…`) of a CID this crate can make (see
    /// [`Cid::from_bytes`]).
    pub fn parse(text: &str) -> Option<Cid> {
        let parsed = cid::Cid::try_from(text).ok()?;
        Cid::from_bytes(&parsed.to_bytes())
    }

    /// The same CID as a `cid::Cid`, for callers that work with the `cid` crate.
    pub fn to_cid(&self) -> cid::Cid {
        let mh = multihash::Multihash::<64>::wrap(SHA2_256, &self.digest)
            .expect("a 32-byte digest fits a 64-byte multihash");
        match self.version {
            CidVersion::V0 => cid::Cid::new_v0(mh).expect("sha2-256 is valid for CIDv0"),
            CidVersion::V1 => cid::Cid::new_v1(self.codec, mh),
        }
    }
}

impl fmt::Display for Cid {
    /// base58btc for v0 (`Qm…`), base32 lower case for v1 (`bafy…`, `bafk…`), as
    /// `ipfs add` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_cid(), f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_forms_parse_back() {
        for cid in [
            Cid::of_block(CidVersion::V0, DAG_PB, b"a"),
            Cid::of_block(CidVersion::V1, DAG_PB, b"a"),
            Cid::of_block(CidVersion::V1, RAW, b"a"),
        ] {
            assert_eq!(Cid::from_bytes(&cid.to_bytes()), Some(cid));
            assert_eq!(Cid::parse(&cid.to_string()), Some(cid));
        }
        let mut long = Cid::of_block(CidVersion::V0, DAG_PB, b"a").to_bytes();
        long.push(0);
        assert_eq!(Cid::from_bytes(&long), None);
        assert_eq!(Cid::parse("not a cid"), None);
    }

    #[test]
    fn empty_raw_block_is_the_well_known_cid() {
        let cid = Cid::of_block(CidVersion::V1, RAW, b"");
        assert_eq!(
            cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(cid.encoded_len(), 36);
        assert_eq!(cid.to_bytes().len(), 36);
        assert_eq!(cid.to_cid().to_bytes(), cid.to_bytes());
    }

    #[test]
    fn raw_codec_forces_v1_and_v0_is_34_bytes() {
        assert_eq!(
            Cid::of_block(CidVersion::V0, RAW, b"x").version(),
            CidVersion::V1
        );
        let v0 = Cid::of_block(CidVersion::V0, DAG_PB, b"x");
        assert_eq!(v0.encoded_len(), 34);
        assert_eq!(v0.to_bytes(), v0.to_cid().to_bytes());
        assert!(v0.to_string().starts_with("Qm"));
    }
}
