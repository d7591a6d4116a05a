//! Reading a UnixFS file or folder out of a CARv1 (what `ipfs dag export` writes), so
//! that an entry module or an input named by CID can be shipped as a `.car` beside the
//! template or job file.
//!
//! Every block used is verified against its CID (sha2-256) before it is trusted, so the
//! bytes returned are exactly the file that CID names, whatever import settings made it.
//! Supported: CIDv0/v1, dag-pb UnixFS `File`/`Raw` nodes and raw leaves; a whole tree
//! (folders, HAMT-sharded ones too) when the CAR's root is the CID wanted
//! ([`unpack_root`], the hasher's reader). Not supported (an error): identity hashes,
//! other hash functions.

use std::collections::HashMap;

use detwasm_hasher::{Cid as HCid, CidVersion};

const DAG_PB: u64 = 0x70;
const RAW: u64 = 0x55;
const SHA2_256: u64 = 0x12;

/// The largest file extracted from a CAR: 1 GiB, the size of the largest module file
/// read ([`super::resolve::MAX_MODULE_FILE`]).
///
/// A UnixFS DAG may link one block many times (a file of zeros legitimately does), so a
/// CAR of a few kilobytes can describe a file of exabytes: the file is refused as soon
/// as it would pass this size, and the blocks visited (each visit parses the block) may
/// add up to at most twice this size, so a DAG of empty blocks linked a million times
/// over is refused too. Each distinct block is hashed once, however often it is linked.
pub const MAX_FILE: usize = 1 << 30;

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// Reads a binary CID at `pos`, returning it and advancing.
fn read_cid(data: &[u8], pos: &mut usize) -> Result<cid::Cid, String> {
    let start = *pos;
    if data.get(start) == Some(&0x12) && data.get(start + 1) == Some(&0x20) {
        *pos = start.checked_add(34).ok_or("truncated CID")?;
    } else {
        let _version = varint(data, pos)?;
        let _codec = varint(data, pos)?;
        let _hash = varint(data, pos)?;
        let len = varint(data, pos)?;
        *pos = usize::try_from(len)
            .ok()
            .and_then(|len| pos.checked_add(len))
            .ok_or("truncated CID")?;
    }
    let bytes = data.get(start..*pos).ok_or("truncated CID")?;
    cid::Cid::try_from(bytes).map_err(|e| e.to_string())
}

/// Blocks by CID bytes: the CID and the block's bytes.
type Blocks<'a> = HashMap<Vec<u8>, (cid::Cid, &'a [u8])>;

/// All blocks of a CARv1, keyed by CID bytes. The header is skipped (its roots are not
/// needed: the CID wanted comes from the template).
fn blocks(car: &[u8]) -> Result<Blocks<'_>, String> {
    let mut pos = 0;
    let header_len = varint(car, &mut pos)?;
    pos = usize::try_from(header_len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .ok_or("truncated CAR header")?;
    let mut out = HashMap::new();
    while pos < car.len() {
        let len = usize::try_from(varint(car, &mut pos)?).map_err(|_| "truncated block section")?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= car.len())
            .ok_or("truncated block section")?;
        let mut p = pos;
        let cid = read_cid(&car[..end], &mut p)?;
        out.insert(cid.to_bytes(), (cid, &car[p..end]));
        pos = end;
    }
    Ok(out)
}

/// Checks a block against its CID.
fn verify(cid: &cid::Cid, block: &[u8]) -> Result<(), String> {
    if cid.hash().code() != SHA2_256 {
        return Err(format!("block {cid}: only sha2-256 is supported"));
    }
    let version = match cid.version() {
        cid::Version::V0 => CidVersion::V0,
        cid::Version::V1 => CidVersion::V1,
    };
    let computed = HCid::of_block(version, cid.codec(), block).to_cid();
    if computed != *cid {
        return Err(format!("block {cid} does not match its CID (corrupt CAR)"));
    }
    Ok(())
}

/// Protobuf fields of one message: (field number, wire type, value or bytes).
fn pb_fields(data: &[u8]) -> Result<Vec<(u64, PbValue<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => PbValue::Int(varint(data, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(data, &mut pos)?)
                    .map_err(|_| "truncated protobuf field")?;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= data.len())
                    .ok_or("truncated protobuf field")?;
                let v = &data[pos..end];
                pos = end;
                PbValue::Bytes(v)
            }
            other => return Err(format!("unexpected protobuf wire type {other}")),
        };
        out.push((field, value));
    }
    Ok(out)
}

enum PbValue<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

/// What one extraction may still do ([`MAX_FILE`]).
struct Budget {
    /// Bytes of blocks that may still be visited.
    visits: usize,
    /// Blocks already checked against their CID.
    verified: std::collections::HashSet<Vec<u8>>,
}

fn assemble(
    cid: &cid::Cid,
    blocks: &Blocks<'_>,
    out: &mut Vec<u8>,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), String> {
    if depth > 64 {
        return Err("DAG too deep".into());
    }
    let key = cid.to_bytes();
    let (_, block) = blocks
        .get(&key)
        .ok_or_else(|| format!("block {cid} is missing from the CAR"))?;
    budget.visits = budget.visits.checked_sub(block.len() + 1).ok_or_else(|| {
        format!(
            "the DAG links its blocks too many times (over {} GiB of blocks to read)",
            (2 * MAX_FILE) >> 30
        )
    })?;
    if !budget.verified.contains(&key) {
        verify(cid, block)?;
        budget.verified.insert(key);
    }
    let extend = |out: &mut Vec<u8>, bytes: &[u8]| {
        if out.len() + bytes.len() > MAX_FILE {
            return Err(format!(
                "the file is larger than {} GiB, detwasm's limit for a module",
                MAX_FILE >> 30
            ));
        }
        out.extend_from_slice(bytes);
        Ok(())
    };
    match cid.codec() {
        RAW => extend(out, block)?,
        DAG_PB => {
            let mut links = Vec::new();
            let mut data = None;
            for (field, value) in pb_fields(block)? {
                match (field, value) {
                    (2, PbValue::Bytes(link)) => {
                        for (f, v) in pb_fields(link)? {
                            if let (1, PbValue::Bytes(hash)) = (f, v) {
                                links.push(cid::Cid::try_from(hash).map_err(|e| e.to_string())?);
                            }
                        }
                    }
                    (1, PbValue::Bytes(d)) => data = Some(d),
                    _ => {}
                }
            }
            let data = data.ok_or_else(|| format!("block {cid} has no UnixFS data"))?;
            let mut kind = None;
            let mut content: &[u8] = &[];
            for (field, value) in pb_fields(data)? {
                match (field, value) {
                    (1, PbValue::Int(t)) => kind = Some(t),
                    (2, PbValue::Bytes(b)) => content = b,
                    _ => {}
                }
            }
            // UnixFS Data.Type: 0 Raw, 2 File.
            match kind {
                Some(0) | Some(2) => {}
                Some(t) => return Err(format!("block {cid} is UnixFS type {t}, not a file")),
                None => return Err(format!("block {cid} has no UnixFS type")),
            }
            extend(out, content)?;
            for link in &links {
                assemble(link, blocks, out, depth + 1, budget)?;
            }
        }
        other => {
            return Err(format!(
                "block {cid} has codec {other:#x}, not dag-pb or raw"
            ))
        }
    }
    Ok(())
}

/// The file named `want` in this CAR, with every block verified; `None` when the CAR
/// does not hold that root.
pub fn extract_file(car: &[u8], want: &cid::Cid) -> Result<Option<Vec<u8>>, String> {
    let blocks = blocks(car)?;
    if !blocks.contains_key(&want.to_bytes()) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut budget = Budget {
        visits: 2 * MAX_FILE,
        verified: Default::default(),
    };
    assemble(want, &blocks, &mut out, 0, &mut budget)?;
    Ok(Some(out))
}

/// Writes the tree of a CAR whose header names `want` as its root at `dest` (which must
/// not exist), with [`detwasm_hasher::unpack`] (every block checked, names one path
/// component each, at most [`MAX_FILE`] of blocks visited, so at most that much written). `Some(true)` for a
/// folder, `Some(false)` for a file, `None` when the CAR's root is another CID (then
/// [`extract_file`] may still find a file among its blocks). A symlink root is an error:
/// an input must be a file or a folder.
pub fn unpack_root(
    car: &[u8],
    want: &cid::Cid,
    dest: &std::path::Path,
) -> Result<Option<bool>, String> {
    // A CAR the strict reader does not take (several roots, other codecs) may still hold
    // the file among its blocks: [`extract_file`]'s case, not an error here.
    let Ok(parsed) = detwasm_hasher::unpack::Car::parse(car) else {
        return Ok(None);
    };
    if parsed.root().to_cid() != *want {
        return Ok(None);
    }
    parsed
        .unpack(dest, MAX_FILE as u64)
        .map_err(|e| e.to_string())?;
    let meta = std::fs::symlink_metadata(dest).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err(format!("{want} is a symlink, not a file or a folder"));
    }
    Ok(Some(meta.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use detwasm_hasher::{Hasher, Node, Options, Profile};

    fn car_of(bytes: &[u8], profile: Profile) -> (cid::Cid, Vec<u8>) {
        let mut car = Vec::new();
        let root = {
            let mut hasher = Hasher::new(Options::profile(profile));
            hasher = hasher.car(&mut car);
            hasher
                .hash_tree(&Node::bytes(bytes.to_vec()))
                .unwrap()
                .root
                .to_cid()
        };
        (root, car)
    }

    #[test]
    fn multi_block_files_come_back_whole_under_both_profiles() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let (root, car) = car_of(&data, profile);
            assert_eq!(
                extract_file(&car, &root).unwrap().as_deref(),
                Some(&data[..]),
                "{profile}"
            );
        }
    }

    #[test]
    fn folders_come_back_whole_with_sharded_folders_and_both_profiles() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), "ay").unwrap();
        std::fs::write(src.join("sub/deeper/big.bin"), vec![7u8; 600_000]).unwrap();
        std::fs::create_dir(src.join("many")).unwrap();
        for i in 0..3000 {
            // Enough names that the folder is a HAMT under both profiles.
            let name = format!(
                "file-{i:04}-long-enough-that-the-folder-shards-{}",
                "x".repeat(40)
            );
            std::fs::write(src.join("many").join(name), i.to_string()).unwrap();
        }
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let mut car = Vec::new();
            let root = {
                let hasher = Hasher::new(Options::profile(profile).with_hidden(true)).car(&mut car);
                hasher.hash_path(&src).unwrap().root.to_cid()
            };
            let out = t.path().join(format!("out-{profile}"));
            assert_eq!(unpack_root(&car, &root, &out).unwrap(), Some(true));
            let again = detwasm_job::results::cid_of_dir(&out, profile, true).unwrap();
            assert_eq!(again, root.to_string(), "{profile}");
            let other = t.path().join(format!("other-{profile}"));
            let elsewhere =
                cid::Cid::try_from("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH").unwrap();
            assert_eq!(unpack_root(&car, &elsewhere, &other).unwrap(), None);
            assert!(!other.exists());
        }
    }

    #[test]
    fn a_corrupt_block_is_detected_and_an_absent_root_is_none() {
        let (root, mut car) = car_of(b"hello\n", Profile::UnixfsV0_2015);
        let other = cid::Cid::try_from("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH").unwrap();
        assert_eq!(extract_file(&car, &other).unwrap(), None);
        let last = car.len() - 2;
        car[last] ^= 0xff;
        let e = extract_file(&car, &root).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }
}
