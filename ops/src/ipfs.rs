//! IPFS in and out: content fetched by CID from an IPFS node or trustless gateway that the
//! operator names, and results published to a node.
//!
//! Two interfaces, the two every IPFS deployment offers:
//!
//! - a **trustless gateway** (`--gateway URL`, `$DETWASM_IPFS_GATEWAY`): `GET
//!   /ipfs/CID?format=car` with `Accept: application/vnd.ipld.car`, the whole DAG as a
//!   CARv1 ([IPIP-402](https://specs.ipfs.tech/http-gateways/trustless-gateway/)); read
//!   only;
//! - a node's **Kubo RPC** (`--ipfs-api URL`, `$DETWASM_IPFS_API`, e.g.
//!   `http://127.0.0.1:5001`): `POST /api/v0/dag/export?arg=CID` to fetch (the same CAR)
//!   and `POST /api/v0/dag/import` to publish (a CAR, its roots pinned).
//!
//! Nothing received is trusted: a CAR is written to a scratch file within a size limit,
//! then read as any CAR is ([`crate::unpack`]): every block checked against its CID, the
//! DAG under the CID asked for complete, its size, entries and block visits within the
//! caller's limits before a byte of it is written out. A gateway that lies gives an
//! error, never content. Rejected: fetching block by block (`?format=raw`, one request
//! per block: thousands of round trips for a CPython input), and trusting a gateway's
//! answer because it is TLS (the CID is the only proof of content).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use detwasm_hasher::cid::Cid;
use detwasm_hasher::unpack::Car;

/// The environment variable naming a trustless gateway (`--gateway`).
pub const GATEWAY_ENV: &str = "DETWASM_IPFS_GATEWAY";
/// The environment variable naming a node's Kubo RPC (`--ipfs-api`).
pub const API_ENV: &str = "DETWASM_IPFS_API";

/// How long fetching may take, answers included: 10 minutes (a gigabyte at under 2 MB/s),
/// for one `fetch`, and for all the CIDs of one job together (a hostile job file or
/// receipt names up to 256, each of which a slow server could drip for the whole time).
/// Past it the fetch fails; nothing half-fetched is used.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The IPFS endpoints an operator named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    pub gateway: Option<String>,
    pub api: Option<String>,
}

/// Why IPFS content could not be fetched or published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IpfsError(pub String);

impl Remote {
    /// The endpoints of the flags, else of [`GATEWAY_ENV`] and [`API_ENV`].
    pub fn from_flags_or_env(gateway: Option<String>, api: Option<String>) -> Remote {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Remote {
            gateway: gateway.or_else(|| env(GATEWAY_ENV)),
            api: api.or_else(|| env(API_ENV)),
        }
    }

    /// Whether any endpoint is named.
    pub fn is_set(&self) -> bool {
        self.gateway.is_some() || self.api.is_some()
    }

    /// Fetches the DAG of `cid` as a CAR into the new file `to` (at most `max_car_bytes`
    /// of it), from the node's RPC when named, else from the gateway, and checks it:
    /// every block against its CID, and the DAG under `cid` complete. Returns the URL it
    /// came from. `to` is removed again when anything fails.
    pub fn fetch_car(&self, cid: &str, to: &Path, max_car_bytes: u64) -> Result<String, IpfsError> {
        self.fetch_car_by(cid, to, max_car_bytes, Instant::now() + REQUEST_TIMEOUT)
    }

    /// [`Self::fetch_car`], ended at `deadline`.
    pub fn fetch_car_by(
        &self,
        cid: &str,
        to: &Path,
        max_car_bytes: u64,
        deadline: Instant,
    ) -> Result<String, IpfsError> {
        let root = Cid::parse(cid).ok_or_else(|| IpfsError(format!("{cid} is not a CID")))?;
        // The CID as it parsed, never the text it came in: a receipt's or job file's
        // string goes into no URL.
        let cid = &root.to_string();
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(IpfsError(format!(
                "fetching {cid}: out of time ({} s for all of the job's fetches)",
                REQUEST_TIMEOUT.as_secs()
            )));
        };
        let (url, request) = match (&self.api, &self.gateway) {
            (Some(api), _) => {
                let url = format!("{}/api/v0/dag/export?arg={cid}", trim(api));
                (url.clone(), agent(left).post(&url).send_empty())
            }
            (None, Some(gateway)) => {
                let url = format!("{}/ipfs/{cid}?format=car&dag-scope=all", trim(gateway));
                (
                    url.clone(),
                    agent(left)
                        .get(&url)
                        .header("Accept", "application/vnd.ipld.car; version=1")
                        .call(),
                )
            }
            (None, None) => {
                return Err(IpfsError(format!(
                    "{cid}: no IPFS node or gateway named (--ipfs-api URL or ${API_ENV}, --gateway URL or ${GATEWAY_ENV})"
                )))
            }
        };
        let bad = |why: String| IpfsError(format!("fetching {cid} from {url}: {why}"));
        let mut response = request.map_err(|e| bad(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(bad(format!(
                "HTTP {status}: {}",
                server_text(response.body_mut().as_reader())
            )));
        }
        // Only a file this call created is removed on failure (found by review: a file
        // already there was removed when creating it failed).
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(|e| bad(format!("{}: {e}", to.display())))?;
        let written = (|| -> Result<(), IpfsError> {
            let mut body = response.body_mut().as_reader().take(max_car_bytes + 1);
            let n = std::io::copy(&mut body, &mut file).map_err(|e| bad(e.to_string()))?;
            if n > max_car_bytes {
                return Err(bad(format!(
                    "the answer is larger than the {max_car_bytes} bytes of CAR read here"
                )));
            }
            file.flush().map_err(|e| bad(e.to_string()))?;
            check_car(to, &root).map_err(bad)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
        Ok(url)
    }

    /// Fetches the CAR of each of `cids` into `dir` (named by `name` from its place and
    /// CID), within `max_total` bytes of CAR for all of them and one `deadline` for all
    /// (a job's: a hostile job file or receipt names up to 256 CIDs). Returns the files,
    /// in the order of `cids`.
    pub fn fetch_each(
        &self,
        cids: &[&str],
        dir: &Path,
        name: impl Fn(usize, &str) -> String,
        max_total: u64,
        deadline: Instant,
    ) -> Result<Vec<PathBuf>, IpfsError> {
        let mut left = max_total;
        let mut files = Vec::with_capacity(cids.len());
        for (i, cid) in cids.iter().enumerate() {
            let to = dir.join(name(i, cid));
            self.fetch_car_by(cid, &to, left, deadline)?;
            left = left.saturating_sub(std::fs::metadata(&to).map(|m| m.len()).unwrap_or(left));
            files.push(to);
        }
        Ok(files)
    }

    /// Publishes the CAR file `car` (whose root is `root`) to the node's RPC
    /// (`dag/import`, roots pinned), and checks that the node took `root`. Returns the
    /// URL it went to.
    pub fn publish_car(&self, car: &Path, root: &str) -> Result<String, IpfsError> {
        let Some(api) = &self.api else {
            return Err(IpfsError(format!(
                "publishing needs an IPFS node's RPC (--ipfs-api URL or ${API_ENV}); a gateway is read only"
            )));
        };
        let url = format!("{}/api/v0/dag/import?pin-roots=true", trim(api));
        let bad = |why: String| IpfsError(format!("publishing {root} to {url}: {why}"));
        // The CAR streamed from its file between the form's head and tail: results can be
        // gigabytes. The boundary cannot occur in the CAR's bytes by chance: it holds the
        // root's CID and 128 random bits.
        let file = std::fs::File::open(car).map_err(|e| bad(format!("{}: {e}", car.display())))?;
        let mut nonce = [0u8; 16];
        getrandom(&mut nonce);
        let boundary = format!("detwasm-{root}-{}", hex(&nonce));
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{root}.car\"\r\nContent-Type: application/vnd.ipld.car\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body = std::io::Cursor::new(head.into_bytes())
            .chain(std::io::BufReader::new(file))
            .chain(std::io::Cursor::new(tail.into_bytes()));
        let mut response = agent(REQUEST_TIMEOUT)
            .post(&url)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .send(ureq::SendBody::from_owned_reader(body))
            .map_err(|e| bad(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(bad(format!(
                "HTTP {status}: {}",
                server_text(response.body_mut().as_reader())
            )));
        }
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        let want = Cid::parse(root).ok_or_else(|| bad(format!("{root} is not a CID")))?;
        // One JSON object per root: {"Root": {"Cid": {"/": CID}, "PinErrorMsg": ""}}.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not Kubo's answer: {e}")))?;
            let Some(got) = v["Root"]["Cid"]["/"].as_str() else {
                continue;
            };
            if Cid::parse(got) == Some(want) {
                return match v["Root"]["PinErrorMsg"].as_str().unwrap_or("") {
                    "" => Ok(url),
                    pin => Err(bad(format!(
                        "imported but not pinned: {}",
                        server_text(pin.as_bytes())
                    ))),
                };
            }
        }
        Err(bad(format!(
            "the node did not report {root} among the roots it imported: {}",
            server_text(text.as_bytes())
        )))
    }
}

/// Checks the CAR file `path`: every block against its CID, and the DAG under `root`
/// complete (every block it links to present).
fn check_car(path: &Path, root: &Cid) -> Result<(), String> {
    let map = detwasm_hasher::unpack::map_car_file(path).map_err(|e| e.to_string())?;
    let blocks = Car::parse(&map).map_err(|e| format!("not a valid CAR: {e}"))?;
    if !blocks.contains(root) {
        return Err(format!("the CAR holds no block {root}"));
    }
    blocks
        .expanded(*root)
        .map_err(|e| format!("the DAG under {root} is not whole: {e}"))?;
    Ok(())
}

/// Publishes the file or folder `path`, hashed with `options`, to the node named in
/// `remote` (see [`Remote::publish_car`]); returns its CID and the URL.
pub fn publish_path(
    remote: &Remote,
    path: &Path,
    options: detwasm_hasher::Options,
) -> Result<(String, String), IpfsError> {
    let scratch = crate::scratch::Scratch::new("detwasm-publish-", "a CAR being published")
        .map_err(|e| IpfsError(e.to_string()))?;
    let car = scratch.path().join("publish.car");
    let hashed = (|| -> std::io::Result<_> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&car)?);
        let hashed = detwasm_hasher::Hasher::new(options)
            .car(&mut w)
            .hash_path(path)
            .map_err(std::io::Error::other)?;
        w.flush()?;
        Ok(hashed)
    })()
    .map_err(|e| IpfsError(format!("{}: {e}", path.display())))?;
    let cid = hashed.root.to_string();
    let url = remote.publish_car(&car, &cid)?;
    Ok((cid, url))
}

/// For a Bacalhau v1 job file `file`: fetches each CID its `ipfs` inputs name that is
/// not here (no file or folder `CID`, no `CID.car`, in the job file's folder or a folder
/// `policy` allows) from `remote`, as `CID.car` in a scratch folder that the caller then
/// allows too, so that the job finds it as it finds a CAR beside the job file, with the
/// same checks and budgets. `None` when nothing was fetched (or no endpoint is named).
/// The CARs fetched together are at most [`detwasm_jobspec::car::MAX_JOB_CAR_READ`], what
/// a job reads of CAR files in all.
pub fn prefetch_job_file(
    file: &Path,
    cwd: &Path,
    policy: &detwasm_jobspec::InputPolicy,
    remote: &Remote,
) -> Result<Option<crate::scratch::Scratch>, IpfsError> {
    use detwasm_jobspec::bacalhau::v1;
    if !remote.is_set() {
        return Ok(None);
    }
    let bytes = detwasm_jobspec::resolve::read_bounded(file, v1::MAX_JOB_FILE)
        .map_err(|e| IpfsError(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    // A job file that does not parse is reported by the job's own reading, with its line.
    let Ok(spec) = v1::parse(&text) else {
        return Ok(None);
    };
    let here = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut folders = vec![here.to_path_buf()];
    folders.extend(policy.roots.iter().map(|r| cwd.join(r)));
    // Only a CID written as one (letters and digits, as every multibase CID is): the text
    // names the file the job then finds. Found by review: the CID parser skips whatever
    // comes before `/ipfs/`, so `../../x/ipfs/Qm…` parsed, and its CAR was written (or a
    // file there removed) outside the scratch folder. Anything else is left to the job's
    // own reading, which names the input and its line.
    let mut cids: Vec<&str> = spec
        .inputs
        .iter()
        .filter_map(|i| match &i.source {
            v1::Source::Ipfs { cid } => Some(cid.as_str()),
            _ => None,
        })
        .filter(|cid| is_plain_cid(cid))
        .filter(|cid| {
            !folders.iter().any(|f| {
                std::fs::symlink_metadata(f.join(cid)).is_ok()
                    || std::fs::symlink_metadata(f.join(format!("{cid}.car"))).is_ok()
            })
        })
        .collect();
    cids.sort_unstable();
    cids.dedup();
    if cids.is_empty() {
        return Ok(None);
    }
    let scratch = crate::scratch::Scratch::new("detwasm-fetched-", "CARs fetched for a job")
        .map_err(|e| IpfsError(e.to_string()))?;
    remote
        .fetch_each(
            &cids,
            scratch.path(),
            |_, cid| format!("{cid}.car"),
            detwasm_jobspec::car::MAX_JOB_CAR_READ,
            Instant::now() + REQUEST_TIMEOUT,
        )
        .map_err(|e| IpfsError(format!("{}: {e}", file.display())))?;
    Ok(Some(scratch))
}

/// For a module folder whose template names its entry module by a CID that the folder
/// does not hold (neither at its `Path` nor as a `.wasm` or `.car` of that CID): fetches
/// it from `remote` as a CAR into a scratch folder for [`detwasm_jobspec::ModuleDir::fetched`],
/// within what a module file may be. `None` when nothing was fetched (or no endpoint is
/// named, or the template does not render: the job's own reading reports that).
pub fn prefetch_entry_module(
    dir: &detwasm_jobspec::ModuleDir,
    values: &std::collections::BTreeMap<String, String>,
    remote: &Remote,
) -> Result<Option<crate::scratch::Scratch>, IpfsError> {
    if !remote.is_set() {
        return Ok(None);
    }
    let Ok((_, spec)) = dir.spec(values) else {
        return Ok(None);
    };
    let cid = spec.entry_module.cid.trim();
    if cid.is_empty()
        || Cid::parse(cid).is_none()
        || detwasm_jobspec::resolve::entry_module(&dir.dir, cid, &spec.entry_module.path).is_ok()
    {
        return Ok(None);
    }
    let scratch = crate::scratch::Scratch::new("detwasm-fetched-", "a module fetched by CID")
        .map_err(|e| IpfsError(e.to_string()))?;
    let limits = crate::unpack::Limits::of(detwasm_jobspec::resolve::MAX_MODULE_FILE, 1);
    remote
        .fetch_car(
            cid,
            &scratch.path().join("module.car"),
            limits.max_car_bytes,
        )
        .map_err(|e| {
            IpfsError(format!(
                "{}: the entry module: {e}",
                dir.template_path.display()
            ))
        })?;
    Ok(Some(scratch))
}

/// Whether `text` is a CID written as one: letters and digits only (every multibase CID
/// is), and a CID. Such a text can name a file or folder (`CID.car`, `CID`) without
/// naming another place: the CID parser accepts `../../x/ipfs/CID` too (it skips what
/// comes before `/ipfs/`), which as a path leads anywhere.
pub fn is_plain_cid(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric())
        && Cid::parse(text).is_some()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes from the kernel (a multipart boundary's nonce; not a secret).
fn getrandom(buf: &mut [u8]) {
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    let _ = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
}

/// At most 512 bytes of what a server said, for a message, made fit for a terminal
/// ([`crate::text::shown`]). Found by review: an error body was printed raw, escapes and
/// a megabyte included.
fn server_text(r: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = r.take(512).read_to_end(&mut bytes);
    crate::text::shown(String::from_utf8_lossy(&bytes).trim())
}

fn trim(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

/// An HTTP client whose requests end after `timeout`, and that follows no redirect: a
/// gateway's answer is the CAR or an error. Rejected: following redirects (an untrusted
/// gateway could point requests at hosts the operator never named, such as services
/// on the provider's own network).
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Fetches `cid` (see [`Remote::fetch_car`], within `timeout`) and writes its tree at
/// `dest` (default: the CID, in the current folder, as `ipfs get` names it) within
/// `limits`, or keeps the checked CAR at `car` when given instead.
pub fn fetch(
    remote: &Remote,
    cid: &str,
    dest: Option<&Path>,
    car: Option<&Path>,
    limits: crate::unpack::Limits,
    timeout: Duration,
) -> Result<Fetched, IpfsError> {
    let deadline = Instant::now() + timeout;
    if let Some(car) = car {
        // Fetched beside the destination and renamed into place once checked, never over
        // a file: a CAR file is never half-written.
        let parent = match car.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // In a locked scratch folder beside it, which a later fetch removes if this one
        // is killed (found by review: a killed fetch left its partial file for good).
        let staging = crate::scratch::Scratch::new_in(parent, ".detwasm-fetch-", "fetching")
            .map_err(|e| IpfsError(format!("{}: {e}", parent.display())))?;
        let part = staging.path().join("fetched.car");
        let from = remote.fetch_car_by(cid, &part, limits.max_car_bytes, deadline)?;
        detwasm_runtime::deliver::rename_noreplace(&part, car)
            .map_err(|e| IpfsError(format!("{}: {e}", car.display())))?;
        return Ok(Fetched {
            cid: cid.to_string(),
            from,
            unpacked: None,
            car: Some(car.to_path_buf()),
        });
    }
    let scratch = crate::scratch::Scratch::new("detwasm-fetch-", "a fetched CAR")
        .map_err(|e| IpfsError(e.to_string()))?;
    let file = scratch.path().join("fetched.car");
    let from = remote.fetch_car_by(cid, &file, limits.max_car_bytes, deadline)?;
    let unpacked =
        crate::unpack::unpack_as(&file, Some(cid), dest, limits, None).map_err(IpfsError)?;
    Ok(Fetched {
        cid: cid.to_string(),
        from,
        unpacked: Some(unpacked),
        car: None,
    })
}

/// What [`fetch`] did.
#[derive(Debug, serde::Serialize)]
pub struct Fetched {
    pub cid: String,
    /// The URL the CAR came from.
    pub from: String,
    /// What was written, when the tree was.
    pub unpacked: Option<crate::unpack::Unpacked>,
    /// Where the checked CAR was kept, when asked.
    pub car: Option<PathBuf>,
}
