//! The `piecemeal` command: parse, set up logging, run, map errors to exit
//! codes (0 done, 1 runtime failure, 2 bad input or usage).

use clap::Parser;
use log::LevelFilter;
use piecemeal::cli::{Cli, Command, Common, LogArgs, parse_peer, rewrite_legacy_args};
use piecemeal::client::{self, ClientOptions, TrackerOptions};
use piecemeal::error::Error;
use piecemeal::memory;
use piecemeal::metainfo::{CreateOptions, Metainfo, create};
use piecemeal::progress::{ProgressMode, human_bytes, machine_line};
use piecemeal::tracker::ServerConfig;
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        level,
        config.clone(),
        TerminalMode::Stderr,
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        },
    )];
    if let Some(path) = &log.log_file {
        let file = std::fs::File::create(path)
            .map_err(|e| Error::Input(format!("cannot create log file {}: {e}", path.display())))?;
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
    download: bool,
    c: &Common,
    log: &LogArgs,
) -> Result<ClientOptions, Error> {
    let mut o = ClientOptions::new(
        torrent,
        c.output.clone().unwrap_or_else(|| PathBuf::from(".")),
        download,
    );
    o.keep_seeding = c.seed;
    o.listen = SocketAddr::from(([0, 0, 0, 0], c.port.unwrap_or(6881)));
    o.bind_ip = c.bind;
    o.peers = c
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<_, _>>()
        .map_err(Error::Input)?;
    o.no_tracker = c.no_tracker;
    o.tracker_port = c.tracker_port;
    o.seed_ratio = c.seed_ratio;
    o.seed_time = c.seed_time.map(Duration::from_secs);
    o.progress = if log.machine {
        ProgressMode::Machine
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
    if let Some(n) = c.max_peers {
        o.config.max_peers = n.max(1);
    }
    match fit {
        Some(plan) => log::info!("{}", plan.describe(&o.config)),
        None => log::info!(
            "memory: piece cache {} (--cache), up to {} peers",
            human_bytes(o.config.cache_bytes as u64),
            o.config.max_peers
        ),
    }
    if let Some(s) = c.handshake_timeout {
        o.config.handshake_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(s) = c.idle_timeout {
        o.config.idle_timeout = Duration::from_secs(s.max(1));
    }
    Ok(o)
}

fn run_client(o: ClientOptions) -> Result<(), Error> {
    let machine = o.progress == ProgressMode::Machine;
    let outcome = client::run(&o)?;
    if let Some(s) = outcome.status {
        if machine {
            piecemeal::outln!(
                "{} {}",
                machine_line("@done", &s),
                outcome.elapsed.as_millis()
            );
        }
        let secs = outcome.elapsed.as_secs_f64().max(1e-3);
        piecemeal::errln!(
            "{}: {} down, {} up in {:.1} s (average {}/s down), {}/{} pieces{}",
            if outcome.complete {
                "complete"
            } else {
                "stopped"
            },
            human_bytes(s.totals.downloaded),
            human_bytes(s.totals.uploaded),
            secs,
            human_bytes((s.totals.downloaded as f64 / secs) as u64),
            s.have,
            s.num_pieces,
            if s.totals.hash_failures > 0 {
                format!(
                    ", {} hash failures, {} banned",
                    s.totals.hash_failures, outcome.banned
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        None => {
            let Some(torrent) = cli.legacy.torrent.clone() else {
                return Err(Error::Input(
                    "nothing to do: give -t FILE.torrent [-d], or a subcommand (see --help)".into(),
                ));
            };
            run_client(client_options(
                torrent,
                cli.legacy.download,
                &cli.legacy.common,
                &cli.log,
            )?)
        }
        Some(Command::Download { torrent, common }) => {
            run_client(client_options(torrent, true, &common, &cli.log)?)
        }
        Some(Command::Seed { torrent, common }) => {
            run_client(client_options(torrent, false, &common, &cli.log)?)
        }
        Some(Command::Info { torrent }) => {
            let m = Metainfo::load(&torrent).map_err(|e| Error::Input(e.to_string()))?;
            piecemeal::out!("{}", m.describe());
            Ok(())
        }
        Some(Command::Create {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
        }) => {
            let piece_len = piece_length
                .map(|n| {
                    u32::try_from(n).map_err(|_| Error::Input("--piece-length is too large".into()))
                })
                .transpose()?;
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
            std::fs::write(&output, &bytes)
                .map_err(|e| Error::Runtime(format!("cannot write {}: {e}", output.display())))?;
            let m = Metainfo::from_bytes(&bytes).map_err(|e| Error::Runtime(e.to_string()))?;
            piecemeal::outln!(
                "wrote {} (info-hash {})",
                output.display(),
                m.info_hash_hex()
            );
            Ok(())
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
            s.run().map_err(|e| Error::Runtime(e.to_string()))?;
            Ok(())
        }
        Some(Command::Demo {
            size,
            leechers,
            dir,
        }) => piecemeal::demo::run(size, leechers, dir),
    }
}

fn main() {
    let args = rewrite_legacy_args(std::env::args_os());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = init_logging(&cli.log) {
        piecemeal::errln!("piecemeal: {e}");
        std::process::exit(e.exit_code());
    }
    piecemeal::event_loop::install_stop_handler();
    if let Err(e) = run(cli) {
        piecemeal::errln!("piecemeal: {e}");
        std::process::exit(e.exit_code());
    }
}
