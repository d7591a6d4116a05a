//! Import options: an IPIP-499 profile plus the overrides `ipfs add` users know.

use crate::cid::CidVersion;
use crate::error::{HashError, Result};
use std::fmt;
use std::str::FromStr;

/// Chunk size of unixfs-v0-2015: kubo's default `size-262144` chunker (256 KiB).
pub const CHUNK_SIZE_V0: usize = 256 * 1024;
/// Chunk size of unixfs-v1-2025: 1 MiB (IPIP-499).
pub const CHUNK_SIZE_V1: usize = 1024 * 1024;
/// Maximum links per file node in unixfs-v0-2015: go-unixfs' `DefaultLinksPerBlock`
/// = `roughLinkBlockSize / roughLinkSize` = 8192 / (34 + 8 + 5) = 174.
pub const MAX_LINKS_V0: usize = 174;
/// Maximum links per file node in unixfs-v1-2025 (IPIP-499).
pub const MAX_LINKS_V1: usize = 1024;
/// Directory size above which a directory becomes a HAMT: boxo's `HAMTShardingSize`,
/// 256 KiB, in both profiles (only the way the size is estimated differs).
pub const HAMT_THRESHOLD: u64 = 256 * 1024;
/// Largest chunk size accepted (2 MiB): a larger block could not be fetched over bitswap.
pub const MAX_CHUNK_SIZE: usize = 2 * 1024 * 1024;

/// An IPIP-499 UnixFS CID profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// What `ipfs add -r` prints with kubo's defaults (and what Lilypad compares):
    /// CIDv0, 256 KiB chunks, dag-pb leaves, 174 links, HAMT when Σ(name + CID bytes)
    /// of the links exceeds 256 KiB.
    UnixfsV0_2015,
    /// CIDv1, 1 MiB chunks, raw leaves, 1024 links, HAMT when the serialized directory
    /// node would exceed 256 KiB.
    UnixfsV1_2025,
}

impl Profile {
    /// The profile's name as IPIP-499 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::UnixfsV0_2015 => "unixfs-v0-2015",
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unixfs-v0-2015" => Ok(Profile::UnixfsV0_2015),
            "unixfs-v1-2025" => Ok(Profile::UnixfsV1_2025),
            _ => Err(HashError::Options(format!(
                "unknown profile {s:?} (expected unixfs-v0-2015 or unixfs-v1-2025)"
            ))),
        }
    }
}

/// How a plain directory's size is estimated against the HAMT threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HamtEstimate {
    /// Σ over links of (name bytes + CID bytes): go-unixfs/boxo `linksize` estimation,
    /// unixfs-v0-2015.
    LinksBytes,
    /// The length of the whole serialized dag-pb node: unixfs-v1-2025.
    BlockBytes,
}

/// How the estimate is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HamtCompare {
    /// Shard when estimate > threshold (kubo 0.40 and later, boxo, IPIP-499).
    Greater,
    /// Shard when estimate >= threshold (kubo before 0.40).
    GreaterOrEqual,
}

/// Everything that decides the DAG (and so the CID) of an import.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// The profile these options started from (reported with the result).
    pub profile: Profile,
    /// CID version of dag-pb nodes.
    pub cid_version: CidVersion,
    /// Leaves as raw blocks (codec 0x55, always CIDv1) instead of dag-pb UnixFS files.
    pub raw_leaves: bool,
    /// Fixed chunk size in bytes.
    pub chunk_size: usize,
    /// Maximum links per node of the balanced file layout.
    pub max_links: usize,
    /// HAMT threshold in bytes.
    pub hamt_threshold: u64,
    /// How a directory's size is estimated.
    pub hamt_estimate: HamtEstimate,
    /// How the estimate is compared with the threshold.
    pub hamt_compare: HamtCompare,
    /// Include names starting with `.` (excluded by default, as `ipfs add`).
    pub hidden: bool,
}

impl Options {
    /// The options of a profile, with hidden files excluded.
    pub fn profile(profile: Profile) -> Options {
        match profile {
            Profile::UnixfsV0_2015 => Options {
                profile,
                cid_version: CidVersion::V0,
                raw_leaves: false,
                chunk_size: CHUNK_SIZE_V0,
                max_links: MAX_LINKS_V0,
                hamt_threshold: HAMT_THRESHOLD,
                hamt_estimate: HamtEstimate::LinksBytes,
                hamt_compare: HamtCompare::Greater,
                hidden: false,
            },
            Profile::UnixfsV1_2025 => Options {
                profile,
                cid_version: CidVersion::V1,
                raw_leaves: true,
                chunk_size: CHUNK_SIZE_V1,
                max_links: MAX_LINKS_V1,
                hamt_threshold: HAMT_THRESHOLD,
                hamt_estimate: HamtEstimate::BlockBytes,
                hamt_compare: HamtCompare::Greater,
                hidden: false,
            },
        }
    }

    /// Set `hidden` (builder style).
    pub fn with_hidden(mut self, hidden: bool) -> Options {
        self.hidden = hidden;
        self
    }

    /// True when these options are exactly their profile's (with any `hidden`).
    pub fn is_pure_profile(&self) -> bool {
        let base = Options::profile(self.profile).with_hidden(self.hidden);
        *self == base
    }

    /// Check the options can produce a valid DAG.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(HashError::Options(format!(
                "chunk size {} must be between 1 and {MAX_CHUNK_SIZE} bytes",
                self.chunk_size
            )));
        }
        if self.max_links < 2 {
            return Err(HashError::Options(format!(
                "max links {} must be at least 2",
                self.max_links
            )));
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::profile(Profile::UnixfsV0_2015)
    }
}

/// Parse a chunker spec as `ipfs add --chunker` takes it: `size-N`.
pub fn parse_chunker(spec: &str) -> Result<usize> {
    let n = spec
        .strip_prefix("size-")
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| {
            HashError::Options(format!(
                "unsupported chunker {spec:?}: only fixed-size chunking, `size-N`, is supported"
            ))
        })?;
    if n == 0 || n > MAX_CHUNK_SIZE {
        return Err(HashError::Options(format!(
            "chunker {spec:?}: size must be between 1 and {MAX_CHUNK_SIZE} bytes"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_chunkers_parse() {
        for p in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            assert!(Options::profile(p).is_pure_profile());
        }
        assert!("unixfs-v2".parse::<Profile>().is_err());
        assert_eq!(parse_chunker("size-262144").unwrap(), 262_144);
        assert!(parse_chunker("rabin").is_err());
        assert!(parse_chunker("size-0").is_err());
        let o = Options {
            max_links: 1,
            ..Options::default()
        };
        assert!(o.validate().is_err());
    }
}
