//! The `piecemeal` command: parse, set up logging, run, map errors to exit
//! codes (0 done, 1 runtime failure, 2 bad input or usage, 3 a download
//! stopped before it was complete).

use clap::{CommandFactory, FromArgMatches};
use log::LevelFilter;
use piecemeal::cli::{
    Cli, Command, Common, DownloadOpts, LogArgs, legacy_ids, parse_peer, rewrite_legacy_args,
};
use piecemeal::client::{self, ClientOptions, TrackerOptions};
use piecemeal::error::{EXIT_INCOMPLETE, Error};
use piecemeal::event_loop::{DhtOptions, Session, SessionOptions, default_routers, state_file_in};
use piecemeal::memory;
use piecemeal::metainfo::{CreateOptions, Metainfo, create};
use piecemeal::output::{escape_controls, plain_io, strip_os_error};
use piecemeal::progress::{ProgressMode, View, human_bytes, json_object, machine_line};
use piecemeal::tracker::ServerConfig;
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn init_logging(log: &LogArgs) -> Result<(), Error> {
    let level = if log.verbose {
        LevelFilter::Debug
    } else if log.quiet {
        LevelFilter::Error
    } else {
        LevelFilter::Info
    };
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    // The terminal logger lifts the live status line off around each line.
    let term = piecemeal::output::LiveLineLogger(TermLogger::new(
        level,
        config.clone(),
        TerminalMode::Stderr,
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        },
    ));
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![Box::new(term)];
    if let Some(path) = &log.log_file {
        let file = std::fs::File::create(path).map_err(|e| {
            Error::Input(format!(
                "cannot create the log file {}: {}",
                path.display(),
                plain_io(&e)
            ))
        })?;
        let file_level = if log.verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        };
        loggers.push(WriteLogger::new(file_level, config, file));
    }
    // Every message is escaped before simplelog writes it (see `output`).
    let max = loggers
        .iter()
        .map(|l| l.level())
        .max()
        .unwrap_or(LevelFilter::Off);
    let logger = piecemeal::output::EscapingLogger(*CombinedLogger::new(loggers));
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    Ok(())
}

fn client_options(
    torrent: PathBuf,
    download: Option<&DownloadOpts>,
    c: &Common,
    log: &LogArgs,
) -> Result<ClientOptions, Error> {
    let mut o = ClientOptions::new(
        torrent,
        c.output.clone().unwrap_or_else(|| PathBuf::from(".")),
        download.is_some(),
    );
    if let Some(d) = download {
        o.keep_seeding = d.seed;
        o.overwrite = d.overwrite;
        if d.sparse {
            o.allocation = piecemeal::storage::Allocation::Sparse;
        }
    }
    o.listen = SocketAddr::from(([0, 0, 0, 0], c.port.unwrap_or(6881)));
    o.port_fallback = c.port.is_none();
    o.bind_ip = c.bind;
    o.peers = c
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<_, _>>()
        .map_err(Error::Input)?;
    o.no_tracker = c.no_tracker;
    o.tracker_port = c.tracker_port;
    o.ca_files = c.ca_files.clone();
    o.seed_ratio = c.seed_ratio;
    o.seed_time = c.seed_time.map(Duration::from_secs);
    o.progress = if log.machine {
        ProgressMode::Machine
    } else if c.json {
        ProgressMode::Json
    } else if log.quiet {
        ProgressMode::Off
    } else {
        ProgressMode::Auto
    };
    // An explicit --cache wins; without it, memory is sized from the limits
    // the process runs under (cgroup, rlimits, MemAvailable).
    let fit = match c.cache {
        Some(cache) => {
            o.config.cache_bytes =
                usize::try_from(cache).map_err(|_| Error::Input("--cache is too large".into()))?;
            None
        }
        None => {
            let plan = memory::plan(&memory::probe(), &o.config);
            plan.apply(&mut o.config);
            Some(plan)
        }
    };
    o.config.upload_limit = c.upload_limit.filter(|&r| r > 0);
    o.config.download_limit = c.download_limit.filter(|&r| r > 0);
    if let Some(n) = c.max_peers {
        o.config.max_peers = n.max(1);
    }
    if let Some(n) = c.upload_slots {
        o.config.upload_slots = n.max(1);
    }
    if c.choke_all {
        o.config.upload_slots = 0;
    }
    match fit {
        Some(plan) => log::info!("{}", plan.describe(&o.config)),
        None => log::info!(
            "memory: piece cache {} (--cache), up to {} peers",
            human_bytes(o.config.cache_bytes as u64),
            o.config.max_peers
        ),
    }
    o.config.encryption = c.encryption.into();
    if let Some(s) = c.pex_interval {
        o.config.pex_interval = Duration::from_secs(s.max(1));
    }
    if let Some(s) = c.handshake_timeout {
        o.config.handshake_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(s) = c.idle_timeout {
        o.config.idle_timeout = Duration::from_secs(s.max(1));
    }
    o.dht = dht_options(c, &o.dir);
    o.resume_dir = c.state_dir.clone();
    Ok(o)
}

/// The DHT of a download or seed: on unless `--no-dht`; the state file
/// beside the data (or in `--state-dir`).
fn dht_options(c: &Common, data_dir: &std::path::Path) -> Option<DhtOptions> {
    if c.no_dht {
        return None;
    }
    Some(DhtOptions {
        port: c.dht_port,
        bootstrap: if c.dht_nodes.is_empty() {
            default_routers()
        } else {
            c.dht_nodes.clone()
        },
        state_file: Some(state_file_in(c.state_dir.as_deref().unwrap_or(data_dir))),
        ..DhtOptions::default()
    })
}

/// Options for one or more torrents in one session.
fn many(
    mut torrents: Vec<PathBuf>,
    download: Option<&DownloadOpts>,
    c: &Common,
    log: &LogArgs,
) -> Result<ClientOptions, Error> {
    if torrents.is_empty() && c.watch.is_none() {
        return Err(Error::Input("no torrent given".into()));
    }
    let first = if torrents.is_empty() {
        PathBuf::new() // none: the watched folder brings them
    } else {
        torrents.remove(0)
    };
    let mut o = client_options(first, download, c, log)?;
    o.more = torrents;
    o.watch = c.watch.clone();
    Ok(o)
}

/// Download or seed; the exit code: 0 done, 3 a download stopped before
/// it was complete.
fn run_client(o: ClientOptions, quiet: bool) -> Result<i32, Error> {
    let names: Vec<PathBuf> = std::iter::once(o.torrent.clone())
        .filter(|p| !p.as_os_str().is_empty())
        .chain(o.more.iter().cloned())
        .collect();
    let outcome = client::run(&o)?;
    if outcome.torrents.len() > 1 && !quiet {
        // One line per torrent: which finished and which did not.
        for (name, t) in names.iter().zip(&outcome.torrents) {
            piecemeal::errln!(
                "{}: {}, {}/{} pieces, {} down, {} up",
                name.display(),
                if t.complete { "complete" } else { "incomplete" },
                t.status.have,
                t.status.num_pieces,
                human_bytes(t.status.totals.downloaded),
                human_bytes(t.status.totals.uploaded),
            );
        }
    }
    let code = if o.download && !outcome.complete {
        EXIT_INCOMPLETE
    } else {
        0
    };
    let Some(s) = outcome.status else {
        return Ok(code);
    };
    let secs = outcome.elapsed.as_secs_f64().max(1e-3);
    let average_down = (s.totals.downloaded as f64 / secs) as u64;
    let average_up = (s.totals.uploaded as f64 / secs) as u64;
    match o.progress {
        ProgressMode::Machine => piecemeal::outln!(
            "{} {}",
            machine_line("@done", &s, average_down, average_up),
            outcome.elapsed.as_millis()
        ),
        ProgressMode::Json => {
            let view = View {
                phase: if o.download {
                    piecemeal::progress::Phase::Downloading
                } else {
                    piecemeal::progress::Phase::Seeding
                },
                done: s.total_len.saturating_sub(s.left),
                total: s.total_len,
                have: s.have,
                num_pieces: s.num_pieces,
                down_rate: average_down,
                up_rate: average_up,
                downloaded: s.totals.downloaded,
                uploaded: s.totals.uploaded,
                peers: s.peers,
                seeds: s.seeds,
                elapsed: outcome.elapsed,
                ratio_goal: o.seed_ratio,
                warnings: Vec::new(),
                dht_nodes: None,
                metadata: None,
            };
            piecemeal::outln!(
                "{}",
                json_object(
                    "done",
                    &view,
                    &[
                        ("complete", outcome.complete.to_string()),
                        ("exit_code", code.to_string()),
                        ("hash_failures", s.totals.hash_failures.to_string()),
                        ("banned", outcome.banned.to_string()),
                    ]
                )
            );
        }
        _ => {}
    }
    if !quiet {
        let failures = if s.totals.hash_failures > 0 {
            format!(
                ", {} hash failures, {} banned",
                s.totals.hash_failures, outcome.banned
            )
        } else {
            String::new()
        };
        let ratio = if s.total_len == 0 {
            0.0
        } else {
            s.totals.uploaded as f64 / s.total_len as f64
        };
        if o.download {
            piecemeal::errln!(
                "{}: {} down in {:.1} s ({}/s), {} up, {}/{} pieces{failures}{}",
                if outcome.complete {
                    "complete"
                } else {
                    "stopped before complete"
                },
                human_bytes(s.totals.downloaded),
                secs,
                human_bytes(average_down),
                human_bytes(s.totals.uploaded),
                s.have,
                s.num_pieces,
                if outcome.complete {
                    ""
                } else {
                    " (the same command resumes it)"
                }
            );
        } else {
            piecemeal::errln!(
                "stopped seeding: {} up in {:.1} s (ratio {ratio:.2}), {}/{} pieces{failures}",
                human_bytes(s.totals.uploaded),
                secs,
                s.have,
                s.num_pieces,
            );
        }
    }
    Ok(code)
}

/// `create`'s output when `-o` is not given: `NAME.torrent` in the
/// current folder, NAME being the shared file's or folder's name.
fn default_torrent_path(path: &Path) -> Result<PathBuf, Error> {
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .or_else(|| {
            std::fs::canonicalize(path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        })
        .ok_or_else(|| {
            Error::Input(format!(
                "cannot name the torrent after {}; give -o OUT.torrent",
                path.display()
            ))
        })?;
    let mut file = name;
    file.push(".torrent");
    Ok(PathBuf::from(file))
}

/// Write a new .torrent: refuses to replace a file unless `force`.
fn write_torrent(out: &Path, bytes: &[u8], force: bool) -> Result<(), Error> {
    use std::io::Write;
    if out.is_dir() {
        return Err(Error::Input(format!(
            "-o {}: is a folder; give the path of the .torrent to write",
            out.display()
        )));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Input(format!(
                "{} exists already; give --force to replace it, or another path with -o",
                out.display()
            ))
        } else {
            Error::Runtime(format!("cannot write {}: {}", out.display(), plain_io(&e)))
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Runtime(format!("cannot write {}: {}", out.display(), plain_io(&e))))
}

fn run(cli: Cli) -> Result<i32, Error> {
    let quiet = cli.log.quiet;
    match cli.command {
        None => {
            let Some(torrent) = cli.legacy.torrent.clone() else {
                return Err(Error::Input(
                    "nothing to do: give -t FILE.torrent [-d], or a subcommand (see --help)".into(),
                ));
            };
            let download = cli.legacy.download.then_some(&cli.legacy.dl);
            if !cli.legacy.download && (cli.legacy.dl.seed || cli.legacy.dl.overwrite) {
                return Err(Error::Input(
                    "--seed and --overwrite are for downloads (-d)".into(),
                ));
            }
            run_client(
                client_options(torrent, download, &cli.legacy.common, &cli.log)?,
                quiet,
            )
        }
        Some(Command::Download {
            torrents,
            dl,
            common,
        }) => run_client(many(torrents, Some(&dl), &common, &cli.log)?, quiet),
        Some(Command::Seed { torrents, common }) => {
            run_client(many(torrents, None, &common, &cli.log)?, quiet)
        }
        Some(Command::Scrape {
            torrent,
            timeout,
            bind,
            ca_files,
        }) => {
            // A magnet link names its trackers and info-hash itself.
            let (info_hash, urls): ([u8; 20], Vec<String>) = match torrent.to_str() {
                Some(link) if piecemeal::magnet::is_magnet(link) => {
                    let m = piecemeal::magnet::Magnet::parse(link)
                        .map_err(|e| Error::Input(e.to_string()))?;
                    (m.info_hash, m.trackers)
                }
                _ => {
                    let m = client::load_torrent(&torrent)?;
                    (
                        m.info_hash,
                        m.tracker_tiers().into_iter().flatten().collect(),
                    )
                }
            };
            if urls.is_empty() {
                return Err(Error::Input(format!(
                    "{} names no tracker",
                    torrent.display()
                )));
            }
            let results = piecemeal::event_loop::scrape_trackers(
                &urls,
                info_hash,
                bind,
                std::time::Duration::from_secs(timeout),
                &ca_files,
            )
            .map_err(Error::Input)?;
            let mut answered = 0;
            for (url, r) in results {
                match r {
                    Ok(c) => {
                        answered += 1;
                        piecemeal::outln!(
                            "{url}: {} seeders, {} leechers, {} completed",
                            c.seeders,
                            c.leechers,
                            c.completed
                        );
                    }
                    Err(e) => piecemeal::outln!("{url}: {e}"),
                }
            }
            if answered == 0 {
                return Err(Error::Runtime("no tracker answered".into()));
            }
            Ok(0)
        }
        Some(Command::Info {
            torrent,
            save,
            force,
            timeout,
            common,
        }) => {
            let is_magnet = torrent.to_str().is_some_and(piecemeal::magnet::is_magnet);
            let (m, bytes) = if is_magnet {
                let mut o = client_options(torrent, None, &common, &cli.log)?;
                o.progress = ProgressMode::Off;
                let bytes = client::fetch_metadata(&o, Duration::from_secs(timeout.max(1)))?;
                let m = Metainfo::from_bytes(&bytes).map_err(|e| Error::Runtime(e.to_string()))?;
                (m, bytes)
            } else {
                let m = client::load_torrent(&torrent)?;
                let bytes = std::fs::read(&torrent).map_err(|e| {
                    Error::Input(format!(
                        "cannot read {}: {}",
                        torrent.display(),
                        plain_io(&e)
                    ))
                })?;
                (m, bytes)
            };
            piecemeal::out!("{}", m.describe());
            if let Some(out) = save {
                write_torrent(&out, &bytes, force)?;
                log::info!("wrote {}", out.display());
            }
            Ok(0)
        }
        Some(Command::Create {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            force,
        }) => {
            let piece_len = piece_length
                .map(|n| {
                    u32::try_from(n).map_err(|_| Error::Input("--piece-length is too large".into()))
                })
                .transpose()?;
            let output = match output {
                Some(o) => o,
                None => default_torrent_path(&path)?,
            };
            if output.exists() && !force && !output.is_dir() {
                // Say so before hashing what may be gigabytes.
                return Err(Error::Input(format!(
                    "{} exists already; give --force to replace it, or another path with -o",
                    output.display()
                )));
            }
            let opts = CreateOptions {
                trackers,
                piece_len,
                private,
                comment,
                created_by: None,
                creation_date: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs() as i64),
            };
            let bytes = create(&path, &opts).map_err(|e| Error::Input(e.to_string()))?;
            write_torrent(&output, &bytes, force)?;
            let m = Metainfo::from_bytes(&bytes).map_err(|e| Error::Runtime(e.to_string()))?;
            piecemeal::outln!(
                "wrote {} (info-hash {})",
                output.display(),
                m.info_hash_hex()
            );
            Ok(0)
        }
        Some(Command::Tracker {
            port,
            bind,
            interval,
            allow,
        }) => {
            let mut config = ServerConfig::with_interval(interval);
            if !allow.is_empty() {
                config.allow = Some(client::info_hashes(&allow)?.into_iter().collect());
            }
            let ip = bind.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            let mut s = client::prepare_tracker(&TrackerOptions {
                listen: SocketAddr::new(ip, port),
                config,
            })?;
            s.run()
                .map_err(|e| Error::Runtime(format!("event loop failed: {}", plain_io(&e))))?;
            Ok(0)
        }
        Some(Command::Dht {
            port,
            bind,
            dht_nodes,
            state_dir,
            stats_every,
        }) => {
            let sopts = SessionOptions {
                bind_ip: bind,
                keep_running: true,
                dht: Some(DhtOptions {
                    port: Some(port),
                    bootstrap: dht_nodes,
                    state_file: state_dir.as_deref().map(state_file_in),
                    stats_every: Some(Duration::from_secs(stats_every.max(1))),
                    stats_machine: cli.log.machine,
                    ..DhtOptions::default()
                }),
                ..SessionOptions::default()
            };
            let mut s = Session::new(sopts).map_err(|e| {
                Error::Runtime(format!(
                    "cannot run the DHT node on port {port}: {}",
                    plain_io(&e)
                ))
            })?;
            s.run()
                .map_err(|e| Error::Runtime(format!("event loop failed: {}", plain_io(&e))))?;
            Ok(0)
        }
        Some(Command::Demo {
            size,
            leechers,
            dir,
        }) => piecemeal::demo::run(size, leechers, dir).map(|()| 0),
        Some(Command::Completions { shell }) => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "piecemeal", &mut out);
            piecemeal::out!("{}", String::from_utf8_lossy(&out));
            Ok(0)
        }
        Some(Command::Manpage { dir }) => {
            let cmd = Cli::command();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .and_then(|()| clap_mangen::generate_to(cmd, &dir))
                        .map_err(|e| {
                            Error::Runtime(format!(
                                "cannot write to {}: {}",
                                dir.display(),
                                plain_io(&e)
                            ))
                        })?;
                    piecemeal::outln!("wrote the man pages into {}", dir.display());
                }
                None => {
                    let mut out = Vec::new();
                    clap_mangen::Man::new(cmd)
                        .render(&mut out)
                        .map_err(|e| Error::Runtime(plain_io(&e)))?;
                    piecemeal::out!("{}", String::from_utf8_lossy(&out));
                }
            }
            Ok(0)
        }
    }
}

/// Parse the command line; usage errors exit 2 (help and version 0).
fn parse() -> Cli {
    let args = rewrite_legacy_args(std::env::args_os());
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (m, cli)));
    let (matches, cli) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Some((sub, _)) = matches.subcommand() {
        let stray: Vec<String> = legacy_ids()
            .into_iter()
            .filter(|id| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
            .collect();
        if !stray.is_empty() {
            piecemeal::errln!(
                "piecemeal: give the options of `{sub}` after it (found {} before it)",
                stray.join(", ")
            );
            std::process::exit(2);
        }
    }
    cli
}

fn main() {
    let cli = parse();
    if let Err(e) = init_logging(&cli.log) {
        piecemeal::errln!(
            "piecemeal: {}",
            escape_controls(&strip_os_error(&e.to_string()))
        );
        std::process::exit(e.exit_code());
    }
    piecemeal::event_loop::install_stop_handler();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            piecemeal::errln!(
                "piecemeal: {}",
                escape_controls(&strip_os_error(&e.to_string()))
            );
            std::process::exit(e.exit_code());
        }
    }
}
