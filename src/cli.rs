//! Command-line definitions. The original interface
//! (`piecemeal -t FILE.torrent -d -sp 6942 -pp 7190 --verbose`) is kept by
//! rewriting its two-letter short flags before clap sees them. Shell
//! completions and the man page are generated from these definitions
//! (`piecemeal completions SHELL`, `piecemeal manpage`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "piecemeal",
    version,
    about = "A BitTorrent client and tracker on one event loop",
    after_help = "Original form: piecemeal -t FILE.torrent [-d] [-sp PORT] [-pp PORT|HOST:PORT] [--verbose]\n\
                  Exit codes: 0 done, 1 runtime failure, 2 bad input or usage, \
                  3 a download stopped before it was complete."
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
    #[arg(long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Errors only: no progress line, no log lines below error, no summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print compact `@status` lines on stdout (for the demo and the tests).
    #[arg(long, global = true, hide = true)]
    pub machine: bool,
    /// Also write the log to this file (info level, or debug with --verbose).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Legacy {
    /// The .torrent file (original form).
    #[arg(short = 't', long = "torrent", value_name = "FILE.torrent")]
    pub torrent: Option<PathBuf>,
    /// Download (into the current folder, or -o DIR); without it, seed.
    #[arg(short = 'd', long = "download")]
    pub download: bool,
    #[command(flatten)]
    pub dl: DownloadOpts,
    #[command(flatten)]
    pub common: Common,
}

/// Options of a download only.
#[derive(Args, Debug, Clone, Default)]
pub struct DownloadOpts {
    /// Keep seeding after the download completes (until Ctrl-C, --seed-ratio or --seed-time).
    #[arg(long)]
    pub seed: bool,
    /// Overwrite files in the output folder that have the torrent's file
    /// names but other sizes and none of its data (refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    /// Leave new files sparse, taking disk space as data arrives. By
    /// default their whole size is reserved up front (fallocate, where the
    /// file system has it): a disk too small is reported at the start, and
    /// writing costs less CPU.
    #[arg(long)]
    pub sparse: bool,
}

/// `--encryption`: see [`crate::mse::Policy`].
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encryption {
    #[default]
    Prefer,
    Require,
    Off,
}

impl From<Encryption> for crate::mse::Policy {
    fn from(e: Encryption) -> crate::mse::Policy {
        match e {
            Encryption::Prefer => crate::mse::Policy::Prefer,
            Encryption::Require => crate::mse::Policy::Require,
            Encryption::Off => crate::mse::Policy::Off,
        }
    }
}

/// Options shared by download and seed.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Port to listen on for peers (-sp in the original form; 0 = any)
    /// [default: 6881, or the next free one up to 6889].
    #[arg(long = "port", short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// A peer to connect to: PORT (on 127.0.0.1) or HOST:PORT (-pp in the original form). Repeatable.
    #[arg(long = "peer", value_name = "PORT|HOST:PORT")]
    pub peers: Vec<String>,
    /// Folder the data is written to or seeded from [default: the current folder].
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Keep every .torrent file in DIR running: those that appear are
    /// added (data checked, then downloaded or seeded), those that disappear
    /// are stopped; a broken file is reported and skipped. Runs until
    /// stopped.
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Local address for listening and for outgoing peer and tracker connections [default: any].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Piece cache budget, e.g. 16M, 256K; 0 keeps only 4 piece buffers and no read cache.
    /// Default: sized from the memory limit the process runs under (cgroup,
    /// rlimits, MemAvailable), at most 16M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache: Option<u64>,
    /// Peers uploaded to at once per torrent, besides the optimistic unchoke [default: 4].
    #[arg(long, value_name = "N")]
    pub upload_slots: Option<usize>,
    /// Stop seeding once uploaded/size reaches this ratio.
    #[arg(long, value_name = "RATIO")]
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub seed_time: Option<u64>,
    /// Upload rate limit in bytes per second, e.g. 2M, all torrents together [default: none].
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    pub upload_limit: Option<u64>,
    /// Download rate limit in bytes per second, e.g. 5M, all torrents together [default: none].
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    pub download_limit: Option<u64>,
    /// Most peer connections, all torrents together [default: 50, fewer
    /// under a tight memory limit].
    #[arg(long, value_name = "N")]
    pub max_peers: Option<usize>,
    /// Ignore the torrent's trackers (use --peer only).
    #[arg(long)]
    pub no_tracker: bool,
    /// Also run the built-in tracker on this port, in the same loop.
    #[arg(long, value_name = "PORT")]
    pub tracker_port: Option<u16>,
    /// Trust the CA certificates in this PEM file too, for https://
    /// trackers (a private tracker's own CA). Repeatable.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,
    /// Print one JSON object per second on stdout, and a last one at the
    /// end, instead of the status line (fields: see the README).
    #[arg(long)]
    pub json: bool,
    /// Message Stream Encryption (RC4) with peers: prefer dials encrypted
    /// and falls back to plaintext, accepting both; require refuses
    /// plaintext peers; off neither offers nor accepts encryption.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Encryption::Prefer)]
    pub encryption: Encryption,
    /// Turn the DHT (BEP 5) off: peers then come from trackers and --peer
    /// only. (Private torrents never use the DHT.)
    #[arg(long)]
    pub no_dht: bool,
    /// A DHT node to bootstrap from (repeatable) [default:
    /// router.bittorrent.com:6881, dht.transmissionbt.com:6881,
    /// router.utorrent.com:6881].
    #[arg(long = "dht-node", value_name = "HOST:PORT")]
    pub dht_nodes: Vec<String>,
    /// UDP port of the DHT [default: the peer port].
    #[arg(long, value_name = "PORT")]
    pub dht_port: Option<u16>,
    /// Folder of the state files: the DHT's (its id and known nodes, so a
    /// restart bootstraps from them) and each torrent's resume data (its
    /// verified pieces at a clean stop, so a restart need not check them
    /// again) [default: the output folder].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Close a peer that has not completed its handshake after this many
    /// seconds (default 20; hidden: for tests of hostile peers).
    #[arg(long, value_name = "SECS", hide = true)]
    pub handshake_timeout: Option<u64>,
    /// Close a peer that sent no complete message for this many seconds
    /// (default 180; hidden: for tests of hostile peers).
    #[arg(long, value_name = "SECS", hide = true)]
    pub idle_timeout: Option<u64>,
    /// Unchoke no peer at all, not even optimistically: peers with the fast
    /// extension get only their allowed-fast pieces (hidden: for tests).
    #[arg(long, hide = true)]
    pub choke_all: bool,
    /// Send peer exchange (BEP 11) at most this often, per peer, in
    /// seconds (default 60; hidden: for tests).
    #[arg(long, value_name = "SECS", hide = true)]
    pub pex_interval: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download torrents (and seed while downloading); several run
    /// together in one process, on one port, and it exits when all are done.
    Download {
        /// The .torrent file(s); several run together, on one port.
        #[arg(required_unless_present = "watch", value_name = "FILE.torrent")]
        torrents: Vec<PathBuf>,
        #[command(flatten)]
        dl: DownloadOpts,
        #[command(flatten)]
        common: Common,
    },
    /// Seed the data torrents describe, found in the output folder (several
    /// torrents: all on one port).
    Seed {
        /// The .torrent file(s); several are seeded together, on one port.
        #[arg(required_unless_present = "watch", value_name = "FILE.torrent")]
        torrents: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share (a folder's files in sorted order).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Where to write the .torrent [default: NAME.torrent in the current folder].
        #[arg(short = 'o', long = "output", value_name = "OUT.torrent")]
        output: Option<PathBuf>,
        /// Tracker URL: http, https or udp (repeatable; each becomes its own tier).
        #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
        trackers: Vec<String>,
        /// Piece length in bytes (power of two), e.g. 256K [default: chosen from the size].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        piece_length: Option<u64>,
        /// Mark the torrent private (no DHT/PEX).
        #[arg(long)]
        private: bool,
        /// A comment stored in the torrent.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show what a .torrent contains.
    Info {
        /// The .torrent file, or a magnet link (its metadata is fetched
        /// from peers: the link's trackers and x.pe peers, --peer).
        #[arg(value_name = "FILE.torrent|MAGNET")]
        torrent: PathBuf,
        /// Write the torrent (for a magnet link: the fetched metadata and
        /// the link's trackers) to this .torrent file.
        #[arg(long, value_name = "FILE.torrent")]
        save: Option<PathBuf>,
        /// Replace the --save file if it exists.
        #[arg(long)]
        force: bool,
        /// Give up fetching a magnet link's metadata after this long.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        timeout: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Ask a torrent's trackers how many seeders and leechers it has (HTTP and UDP).
    Scrape {
        /// The .torrent file, or a magnet link (its `tr` trackers).
        #[arg(value_name = "FILE.torrent|MAGNET")]
        torrent: PathBuf,
        /// Give each tracker this long to answer.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        timeout: u64,
        /// Local address to send from [default: any].
        #[arg(long, value_name = "ADDR")]
        bind: Option<IpAddr>,
        /// Trust the CA certificates in this PEM file too, for https://
        /// trackers. Repeatable.
        #[arg(long = "ca-file", value_name = "PATH")]
        ca_files: Vec<PathBuf>,
    },
    /// Run a tracker: HTTP on TCP and BEP 15 on UDP, both on one port.
    Tracker {
        /// Port to listen on for announces and scrapes (TCP and UDP).
        #[arg(short = 'p', long, default_value_t = 6969, value_name = "PORT")]
        port: u16,
        /// Local address to listen on [default: any].
        #[arg(long, value_name = "ADDR")]
        bind: Option<IpAddr>,
        /// Announce interval given to clients, in seconds.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        interval: u32,
        /// Only track these torrents [default: any torrent].
        #[arg(long, value_name = "FILE.torrent", num_args = 1..)]
        allow: Vec<PathBuf>,
    },
    /// Run a stand-alone DHT node (e.g. the bootstrap node of a private
    /// swarm); it prints its table size and traffic. It bootstraps from
    /// --dht-node only.
    Dht {
        /// UDP port of the node.
        #[arg(short = 'p', long, default_value_t = 6881, value_name = "PORT")]
        port: u16,
        /// Local IPv4 address to bind [default: any].
        #[arg(long, value_name = "ADDR")]
        bind: Option<IpAddr>,
        /// A node to bootstrap from (repeatable).
        #[arg(long = "dht-node", value_name = "HOST:PORT")]
        dht_nodes: Vec<String>,
        /// Keep the node's state (id, known nodes) in this folder.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Print the table size and traffic every this many seconds.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        stats_every: u64,
    },
    /// Run a whole swarm on this machine: tracker, a seeder and leechers.
    Demo {
        /// Size of the random file to share.
        #[arg(long, default_value = "64M", value_name = "SIZE", value_parser = parse_size)]
        size: u64,
        /// Number of leechers.
        #[arg(long, default_value_t = 3, value_name = "N")]
        leechers: usize,
        /// Working folder, kept afterwards [default: a new temporary one, removed afterwards].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `piecemeal completions bash > /etc/bash_completion.d/piecemeal`).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    Manpage {
        /// Write piecemeal.1 and piecemeal-COMMAND.1 into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The top-level arguments that belong to the original form (not the
/// global logging flags): given with a subcommand, they are a mistake.
pub fn legacy_ids() -> Vec<String> {
    use clap::CommandFactory;
    let globals = ["verbose", "quiet", "machine", "log_file", "help", "version"];
    Cli::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| !globals.contains(&id.as_str()))
        .collect()
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

/// A tracker URL for `create`: `http://`, `https://` or `udp://`, a host,
/// and a valid port when one is given (required for udp).
pub fn parse_tracker_url(s: &str) -> Result<String, String> {
    let shown = crate::output::escape_controls(s);
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "{shown:?} is not a URL; a tracker URL looks like http://HOST:PORT/announce \
             (http, https or udp)"
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !["http", "https", "udp"].contains(&scheme.as_str()) {
        return Err(format!("{shown:?}: the scheme must be http, https or udp"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("{shown:?}: unclosed [ in the host")),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{shown:?}: no host"));
    }
    match port {
        Some(p) if p.parse::<u16>().map_or(true, |p| p == 0) => {
            Err(format!("{shown:?}: {p:?} is not a port"))
        }
        None if scheme == "udp" => Err(format!("{shown:?}: a udp tracker URL needs a port")),
        _ => Ok(s.to_string()),
    }
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
        .map_err(|e| format!("bad peer {s:?}: {}", crate::output::plain_io(&e)))?
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
        assert!(!cli.legacy.dl.seed);
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
            Some(Command::Download {
                torrents, common, ..
            }) => {
                assert_eq!(torrents, vec![PathBuf::from("a.torrent")]);
                assert_eq!(common.cache, Some(0));
                assert_eq!(common.output, Some(PathBuf::from("out")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tracker_urls_are_checked() {
        for ok in [
            "http://127.0.0.1:6969/announce",
            "https://tracker.example/announce",
            "udp://tracker.example:1337",
            "http://[::1]:6969/announce",
            "HTTP://example.org/a?b=c",
        ] {
            assert_eq!(parse_tracker_url(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "notaurl",
            "ftp://example.org/",
            "http:///announce",
            "udp://example.org/announce",
            "http://example.org:99999/",
            "http://example.org:0/",
            "http://[::1/",
        ] {
            assert!(parse_tracker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_and_help_are_the_same_everywhere() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in ["download", "seed", "tracker"] {
            let c = cmd.find_subcommand(sub).unwrap();
            let port = c
                .get_arguments()
                .find(|a| a.get_id() == "port")
                .unwrap_or_else(|| panic!("{sub} has no --port"));
            assert_eq!(port.get_short(), Some('p'), "{sub}");
        }
        // `seed` does not offer --seed or --overwrite.
        let seed = cmd.find_subcommand("seed").unwrap();
        assert!(seed.get_arguments().all(|a| a.get_long() != Some("seed")));
        assert!(
            seed.get_arguments()
                .all(|a| a.get_long() != Some("overwrite"))
        );
        // Every visible argument of every command says what it is.
        let mut cmds = vec![&cmd];
        cmds.extend(cmd.get_subcommands());
        for c in cmds {
            for a in c.get_arguments() {
                if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                    continue;
                }
                assert!(
                    a.get_help().is_some(),
                    "{} {}: no description",
                    c.get_name(),
                    a.get_id()
                );
            }
        }
        cmd.debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        for args in [
            &["piecemeal", "-q", "download", "a.torrent"][..],
            &["piecemeal", "download", "a.torrent", "-q"],
            &["piecemeal", "--verbose", "info", "a.torrent"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.command.is_some());
        }
        assert!(Cli::try_parse_from(["piecemeal", "-q", "--verbose", "info", "a"]).is_err());
    }
}
