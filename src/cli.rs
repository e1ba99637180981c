//! Command-line definitions. The original interface
//! (`piecemeal -t FILE.torrent -d -sp 6942 -pp 7190 --verbose`) is kept by
//! rewriting its two-letter short flags before clap sees them.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "piecemeal",
    version,
    about = "A BitTorrent client and tracker on one event loop",
    args_conflicts_with_subcommands = true,
    after_help = "Original form: piecemeal -t FILE.torrent [-d] [-sp PORT] [-pp PORT|HOST:PORT] [--verbose]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The original interface: -t torrent, -d download (else seed).
    #[command(flatten)]
    pub legacy: Legacy,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Logging flags, accepted everywhere.
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Debug logging.
    #[arg(long, global = true)]
    pub verbose: bool,
    /// Only errors; no progress line.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print machine-readable `@status` lines on stdout (used by the demo).
    #[arg(long, global = true, hide = true)]
    pub machine: bool,
    /// Also write the log to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Legacy {
    /// The .torrent file.
    #[arg(short = 't', long = "torrent", value_name = "FILE.torrent")]
    pub torrent: Option<PathBuf>,
    /// Download (into the current folder, or -o DIR); without it, seed.
    #[arg(short = 'd', long = "download")]
    pub download: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Options shared by download and seed.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Port to listen on for peers (-sp in the original form; 0 = any).
    #[arg(long = "port", short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// A peer to connect to: PORT (on 127.0.0.1) or HOST:PORT (-pp in the original form). Repeatable.
    #[arg(long = "peer", value_name = "PORT|HOST:PORT")]
    pub peers: Vec<String>,
    /// Folder for the data (default: the current folder).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Local address for listening and for outgoing peer and tracker connections.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Piece cache budget, e.g. 16M, 256K; 0 keeps only 4 piece buffers and no read cache.
    /// Default: sized from the memory limit the process runs under (cgroup,
    /// rlimits, MemAvailable), at most 16M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache: Option<u64>,
    /// Keep seeding after the download completes.
    #[arg(long)]
    pub seed: bool,
    /// Stop seeding once uploaded/size reaches this ratio.
    #[arg(long, value_name = "RATIO")]
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub seed_time: Option<u64>,
    /// Upload rate limit, e.g. 2M (bytes per second).
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    pub upload_limit: Option<u64>,
    /// Most peer connections.
    #[arg(long, value_name = "N")]
    pub max_peers: Option<usize>,
    /// Ignore the torrent's trackers (use --peer only).
    #[arg(long)]
    pub no_tracker: bool,
    /// Also run the built-in tracker on this port, in the same loop.
    #[arg(long, value_name = "PORT")]
    pub tracker_port: Option<u16>,
    /// Close a peer that has not completed its handshake after this many
    /// seconds (default 20; hidden: for tests of hostile peers).
    #[arg(long, value_name = "SECS", hide = true)]
    pub handshake_timeout: Option<u64>,
    /// Close a peer that sent no complete message for this many seconds
    /// (default 180; hidden: for tests of hostile peers).
    #[arg(long, value_name = "SECS", hide = true)]
    pub idle_timeout: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a torrent (and seed while downloading).
    Download {
        torrent: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Seed the data a torrent describes, found in the output folder.
    Seed {
        torrent: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Make a .torrent from a file or folder.
    Create {
        path: PathBuf,
        /// Where to write the .torrent.
        #[arg(short = 'o', long = "output", value_name = "OUT.torrent")]
        output: PathBuf,
        /// Tracker URL (repeatable; each becomes its own tier).
        #[arg(long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// Piece length in bytes (power of two), e.g. 256K; chosen from the size if absent.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        piece_length: Option<u64>,
        /// Mark the torrent private (no DHT/PEX).
        #[arg(long)]
        private: bool,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Show what a .torrent contains.
    Info { torrent: PathBuf },
    /// Run an HTTP tracker.
    Tracker {
        #[arg(long, default_value_t = 6969)]
        port: u16,
        #[arg(long, value_name = "ADDR")]
        bind: Option<IpAddr>,
        /// Announce interval given to clients, in seconds.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        interval: u32,
        /// Only track these torrents.
        #[arg(long, value_name = "FILE.torrent", num_args = 1..)]
        allow: Vec<PathBuf>,
    },
    /// Run a whole swarm on this machine: tracker, a seeder and leechers.
    Demo {
        /// Size of the random file to share.
        #[arg(long, default_value = "64M", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value_t = 3)]
        leechers: usize,
        /// Working folder (default: a new temporary one, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Rewrite the original two-letter flags (`-sp`, `-pp`) into long ones.
pub fn rewrite_legacy_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-sp") => OsString::from("--port"),
            Some("-pp") => OsString::from("--peer"),
            _ => a,
        })
        .collect()
}

/// Parse `16M`, `256K`, `1G`, `1048576`, `0` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'B' => 1,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// `7190` means 127.0.0.1:7190; otherwise HOST:PORT (resolved once).
pub fn parse_peer(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("bad peer {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad peer {s:?}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_command_line_parses() {
        let args = [
            "piecemeal",
            "-t",
            "x.torrent",
            "-d",
            "-sp",
            "6942",
            "-pp",
            "7190",
            "--verbose",
        ];
        let cli =
            Cli::try_parse_from(rewrite_legacy_args(args.iter().map(OsString::from))).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.legacy.torrent.as_deref(),
            Some(std::path::Path::new("x.torrent"))
        );
        assert!(cli.legacy.download);
        assert_eq!(cli.legacy.common.port, Some(6942));
        assert_eq!(cli.legacy.common.peers, vec!["7190".to_string()]);
        assert!(cli.log.verbose);
        assert_eq!(
            parse_peer("7190").unwrap(),
            "127.0.0.1:7190".parse().unwrap()
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from([
            "piecemeal",
            "download",
            "a.torrent",
            "-o",
            "out",
            "--peer",
            "1.2.3.4:5",
            "--cache",
            "0",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Download { torrent, common }) => {
                assert_eq!(torrent, PathBuf::from("a.torrent"));
                assert_eq!(common.cache, Some(0));
                assert_eq!(common.output, Some(PathBuf::from("out")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
