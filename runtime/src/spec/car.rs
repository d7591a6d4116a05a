//! Reading a UnixFS file or folder out of a CARv1 (what `ipfs dag export` writes), so
//! that an entry module or an input named by CID can be shipped as a `.car` beside the
//! template or job file.
//!
//! Every block used is verified against its CID (sha2-256) before it is trusted, so the
//! bytes returned are exactly the file that CID names, whatever import settings made it.
//! Supported: CIDv0/v1, dag-pb UnixFS `File`/`Raw` nodes, raw leaves, `Directory` and
//! `HAMTShard` folders ([`extract_dir`]). Not supported (an error): identity hashes,
//! other hash functions, symlinks and metadata nodes.

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

/// Most entries (files and folders) one folder extraction writes.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Deepest folder nesting one folder extraction writes.
const MAX_DIR_DEPTH: usize = 256;

/// A dag-pb link: its name and CID.
type Link = (Vec<u8>, cid::Cid);

/// UnixFS `Data.Type` of a dag-pb block, and its links.
fn node(cid: &cid::Cid, block: &[u8]) -> Result<(u64, Vec<Link>), String> {
    let mut links = Vec::new();
    let mut data = None;
    for (field, value) in pb_fields(block)? {
        match (field, value) {
            (2, PbValue::Bytes(link)) => {
                let (mut hash, mut name) = (None, Vec::new());
                for (f, v) in pb_fields(link)? {
                    match (f, v) {
                        (1, PbValue::Bytes(h)) => hash = Some(h),
                        (2, PbValue::Bytes(n)) => name = n.to_vec(),
                        _ => {}
                    }
                }
                let hash = hash.ok_or_else(|| format!("block {cid} has a link without a hash"))?;
                links.push((name, cid::Cid::try_from(hash).map_err(|e| e.to_string())?));
            }
            (1, PbValue::Bytes(d)) => data = Some(d),
            _ => {}
        }
    }
    let data = data.ok_or_else(|| format!("block {cid} has no UnixFS data"))?;
    let kind = pb_fields(data)?
        .into_iter()
        .find_map(|(f, v)| match (f, v) {
            (1, PbValue::Int(t)) => Some(t),
            _ => None,
        })
        .ok_or_else(|| format!("block {cid} has no UnixFS type"))?;
    Ok((kind, links))
}

/// A block of the CAR, verified against its CID.
fn verified<'a>(
    cid: &cid::Cid,
    blocks: &Blocks<'a>,
    budget: &mut Budget,
) -> Result<&'a [u8], String> {
    let key = cid.to_bytes();
    let (_, block) = blocks
        .get(&key)
        .ok_or_else(|| format!("block {cid} is missing from the CAR"))?;
    if !budget.verified.contains(&key) {
        verify(cid, block)?;
        budget.verified.insert(key);
    }
    Ok(block)
}

/// Whether `want` names a folder (a UnixFS `Directory` or `HAMTShard` root) in this CAR.
pub fn is_dir(car: &[u8], want: &cid::Cid) -> Result<bool, String> {
    let blocks = blocks(car)?;
    if want.codec() != DAG_PB {
        return Ok(false);
    }
    let Some((_, block)) = blocks.get(&want.to_bytes()) else {
        return Ok(false);
    };
    verify(want, block)?;
    Ok(matches!(node(want, block)?.0, 1 | 5))
}

/// Writes the folder `want` names in this CAR into `dest` (an empty folder), every block
/// verified; `Ok(false)` when the CAR does not hold that root. Names must be single path
/// components (no `/`, NUL, `.` or `..`), so nothing is written outside `dest`; files are
/// created with `create_new`, so a name twice is an error, never an overwrite. The same
/// bounds as [`extract_file`] hold for the bytes written and the blocks visited in all,
/// plus [`MAX_ENTRIES`] entries and a nesting depth of 256.
pub fn extract_dir(car: &[u8], want: &cid::Cid, dest: &std::path::Path) -> Result<bool, String> {
    let blocks = blocks(car)?;
    if !blocks.contains_key(&want.to_bytes()) {
        return Ok(false);
    }
    let mut budget = Budget {
        visits: 2 * MAX_FILE,
        verified: Default::default(),
    };
    let mut written = Written::default();
    let block = verified(want, &blocks, &mut budget)?;
    match node(want, block)? {
        (1 | 5, _) => {}
        (t, _) => return Err(format!("{want} is UnixFS type {t}, not a folder")),
    }
    write_dir(want, &blocks, dest, 0, &mut budget, &mut written)?;
    Ok(true)
}

#[derive(Default)]
struct Written {
    bytes: usize,
    entries: usize,
}

/// Writes the entries of the folder (`Directory`, or a `HAMTShard` and its sub-shards)
/// `cid` into `dir`.
fn write_dir(
    cid: &cid::Cid,
    blocks: &Blocks<'_>,
    dir: &std::path::Path,
    depth: usize,
    budget: &mut Budget,
    written: &mut Written,
) -> Result<(), String> {
    if depth > MAX_DIR_DEPTH {
        return Err(format!("folders nested deeper than {MAX_DIR_DEPTH}"));
    }
    let block = verified(cid, blocks, budget)?;
    budget.visits = budget
        .visits
        .checked_sub(block.len() + 1)
        .ok_or("the DAG links its blocks too many times")?;
    let (kind, links) = node(cid, block)?;
    for (name, child) in links {
        let name = match kind {
            1 => name,
            // A HAMT link's name is two hex digits of the bucket, then the entry's name;
            // two digits alone link a sub-shard of the same folder.
            5 if name.len() == 2 => {
                write_dir(&child, blocks, dir, depth + 1, budget, written)?;
                continue;
            }
            5 if name.len() > 2 => name[2..].to_vec(),
            _ => return Err(format!("block {cid}: a folder link with a bad name")),
        };
        let text = String::from_utf8(name)
            .map_err(|_| format!("block {cid}: a name that is not UTF-8"))?;
        if text.is_empty() || text == "." || text == ".." || text.contains(['/', '\0']) {
            return Err(format!(
                "block {cid}: the name {text:?} is not a single path component"
            ));
        }
        written.entries += 1;
        if written.entries > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let path = dir.join(&text);
        let is_folder = child.codec() == DAG_PB && {
            let b = verified(&child, blocks, budget)?;
            match node(&child, b)?.0 {
                1 | 5 => true,
                0 | 2 => false,
                t => {
                    return Err(format!(
                        "{text}: UnixFS type {t} (a symlink or metadata) is not supported"
                    ))
                }
            }
        };
        if is_folder {
            std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            write_dir(&child, blocks, &path, depth + 1, budget, written)?;
        } else {
            let mut bytes = Vec::new();
            assemble(&child, blocks, &mut bytes, 0, budget)?;
            written.bytes += bytes.len();
            if written.bytes > MAX_FILE {
                return Err(format!("the folder holds more than {} GiB", MAX_FILE >> 30));
            }
            use std::io::Write;
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
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
            std::fs::write(
                src.join("many").join(format!(
                    "file-{i:04}-with-a-name-long-enough-that-the-folder-shards-{}",
                    "x".repeat(40)
                )),
                i.to_string(),
            )
            .unwrap();
        }
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let mut car = Vec::new();
            let root = {
                let hasher = Hasher::new(Options::profile(profile).with_hidden(true)).car(&mut car);
                hasher.hash_path(&src).unwrap().root.to_cid()
            };
            assert!(is_dir(&car, &root).unwrap());
            let shards = blocks(&car)
                .unwrap()
                .values()
                .filter(|(c, b)| c.codec() == DAG_PB && node(c, b).unwrap().0 == 5)
                .count();
            assert!(
                shards > 1,
                "{profile}: the big folder is a HAMT ({shards} shards)"
            );
            let out = t.path().join(format!("out-{profile}"));
            std::fs::create_dir(&out).unwrap();
            assert!(extract_dir(&car, &root, &out).unwrap());
            let again = crate::results::cid_of_dir(&out, profile, true).unwrap();
            assert_eq!(again, root.to_string(), "{profile}");
            let e = extract_dir(&car, &root, &out).unwrap_err();
            assert!(
                e.contains("exists"),
                "extracting over files is an error: {e}"
            );
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
