//! `detwasm fetch`: argument parsing and output only; the work is `detwasm_ops::ipfs`.

use std::path::PathBuf;
use std::process::ExitCode;

use detwasm_ops::ipfs::{self, Remote};

/// The IPFS node or gateway content is fetched from (and results published to), as the
/// operator names them. Nothing is ever fetched unless one is named.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IpfsArgs {
    /// A trustless IPFS gateway to fetch content missing here by CID (`GET
    /// URL/ipfs/CID?format=car`), e.g. https://trustless-gateway.link [env:
    /// DETWASM_IPFS_GATEWAY]. Every block is checked against its CID; nothing the
    /// gateway says is trusted.
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,

    /// An IPFS node's RPC API (Kubo's, e.g. http://127.0.0.1:5001), to fetch content
    /// missing here by CID (`dag/export`) and to publish to (`dag/import`) [env:
    /// DETWASM_IPFS_API]. Preferred over --gateway for fetching when both are named.
    #[arg(long, value_name = "URL")]
    pub ipfs_api: Option<String>,
}

impl IpfsArgs {
    /// The endpoints of the flags, else of the environment.
    pub fn remote(&self) -> Remote {
        Remote::from_flags_or_env(self.gateway.clone(), self.ipfs_api.clone())
    }
}

/// Fetch a file or folder by its CID from an IPFS node or trustless gateway, as `ipfs get`
/// does, trusting nothing it is sent.
///
/// The DAG comes as one CAR (from --ipfs-api's `dag/export`, else --gateway's
/// `/ipfs/CID?format=car`), read within --max-size plus 1/16 and 16 MiB. Every block is
/// checked against its CID and the DAG must be whole; the tree's size and entries are
/// checked before anything is written, then it is written beside DEST and renamed into
/// place (DEST must not exist). With --car FILE the checked CAR is kept instead.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CID of the file or folder.
    pub cid: String,

    /// Where to write it: a new file or folder [default: its CID, in the current folder].
    #[arg(conflicts_with = "car")]
    pub dest: Option<PathBuf>,

    /// Keep the checked CAR at FILE (new) instead of writing the tree out.
    #[arg(long, value_name = "FILE")]
    pub car: Option<PathBuf>,

    #[command(flatten)]
    pub ipfs: IpfsArgs,

    #[command(flatten)]
    pub limits: super::unpack::LimitArgs,

    /// Give up after SECS seconds, answer included [default: 600].
    #[arg(long, value_name = "SECS", value_parser = super::verify::parse_secs)]
    pub timeout: Option<std::time::Duration>,

    /// Print what was done as one JSON object (`cid`, `from`, `unpacked` or `car`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let remote = args.ipfs.remote();
    if !remote.is_set() {
        anyhow::bail!(
            "name an IPFS node (--ipfs-api URL or ${}) or trustless gateway (--gateway URL or ${}) to fetch {} from",
            ipfs::API_ENV,
            ipfs::GATEWAY_ENV,
            args.cid
        );
    }
    let limits = args.limits.limits();
    let fetched = ipfs::fetch(
        &remote,
        &args.cid,
        args.dest.as_deref(),
        args.car.as_deref(),
        limits,
        args.timeout.unwrap_or(ipfs::REQUEST_TIMEOUT),
    )?;
    if args.json {
        println!("{}", super::json(&fetched, false)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", fetched.cid);
    match (&fetched.unpacked, &fetched.car) {
        (Some(u), _) => eprintln!(
            "fetched from {}: a {} of {} bytes in {} {} at {}",
            fetched.from,
            u.kind,
            u.bytes,
            u.entries,
            if u.entries == 1 { "entry" } else { "entries" },
            u.dest.display()
        ),
        (None, Some(car)) => eprintln!(
            "fetched from {}: its CAR, checked, at {}",
            fetched.from,
            car.display()
        ),
        (None, None) => {}
    }
    Ok(ExitCode::SUCCESS)
}
