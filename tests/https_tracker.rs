//! HTTPS trackers: Debian's `stunnel4` in front of our built-in tracker,
//! all on 127.0.0.1, with certificates made by the test (`rcgen`): one CA
//! given to the leecher with `--ca-file`, another it does not know.
//!
//! - a good certificate: the announce works and the download completes
//!   through it (and `scrape` works over HTTPS);
//! - a certificate for another name, an expired one and one from an
//!   unknown CA each fail in one clear line, and the announcer falls
//!   through to the next tier (a plain `http://` tracker) and the download
//!   completes.
//!
//! A missing `stunnel4` fails the test (`.ci/run` installs it).

mod common;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: &[(&str, usize)] = &[("file.bin", 800_000)];

/// A CA: its certificate (PEM) and what it signs with.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

/// A server certificate for `names`, signed by `ca`; `expired`: valid in
/// 2000 only. Written as `DIR/TAG.crt` and `DIR/TAG.key`.
fn server_cert(
    dir: &Path,
    tag: &str,
    ca: &Ca,
    names: &[&str],
    expired: bool,
) -> (PathBuf, PathBuf) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, format!("piecemeal test {tag}"));
    if expired {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn stunnel_binary() -> &'static str {
    for b in ["stunnel4", "stunnel"] {
        if Command::new(b).arg("-version").output().is_ok() {
            return b;
        }
    }
    panic!("stunnel4 is not installed (Debian package stunnel4; .ci/run installs it)");
}

/// One tracker, TLS fronts for it with four certificates, a seeder known
/// to the tracker.
struct Setup {
    tmp: TempDir,
    tracker_port: u16,
    /// `https://127.0.0.1:PORT/announce` by certificate: good, wrong name,
    /// expired, unknown CA.
    good: String,
    wrong_name: String,
    expired: String,
    unknown_ca: String,
    ca_file: PathBuf,
    seed_dir: PathBuf,
    // Dropped (killed) last to first.
    _seeder: Proc,
    _stunnel: Proc,
    _tracker: Proc,
}

fn setup(name: &str) -> Setup {
    let tmp = TempDir::new(name);
    let (tracker, tracker_port) = start_tracker(&tmp);
    let certs = tmp.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ours = ca("piecemeal test CA");
    let theirs = ca("someone else's CA");
    let ca_file = certs.join("ca.pem");
    std::fs::write(&ca_file, &ours.pem).unwrap();
    let fronts = [
        (
            "good",
            server_cert(&certs, "good", &ours, &["127.0.0.1"], false),
        ),
        (
            "wrong",
            server_cert(&certs, "wrong", &ours, &["other.piecemeal.test"], false),
        ),
        (
            "expired",
            server_cert(&certs, "expired", &ours, &["127.0.0.1"], true),
        ),
        (
            "unknown",
            server_cert(&certs, "unknown", &theirs, &["127.0.0.1"], false),
        ),
    ];
    let mut conf = String::from("foreground = yes\npid =\ndebug = 5\n");
    let mut urls = Vec::new();
    for (tag, (crt, key)) in &fronts {
        let port = free_port();
        conf.push_str(&format!(
            "[{tag}]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{tracker_port}\ncert = {}\nkey = {}\n",
            crt.display(),
            key.display()
        ));
        urls.push((port, format!("https://127.0.0.1:{port}/announce")));
    }
    let conf_path = tmp.join("stunnel.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(stunnel_binary());
    cmd.arg(&conf_path);
    let mut stunnel = Proc::spawn("stunnel", cmd, tmp.path());
    let end = Instant::now() + Duration::from_secs(20);
    for (port, _) in &urls {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if let Ok(Some(st)) = stunnel.child.try_wait() {
                panic!("stunnel exited ({st}):\n{}", stunnel.log_text());
            }
            assert!(
                Instant::now() < end,
                "stunnel did not listen:\n{}",
                stunnel.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // The seeder announces over plain HTTP; the tracker knows it before
    // any leecher asks.
    let plain = format!("http://127.0.0.1:{tracker_port}/announce");
    let (seed_dir, torrent) = seed_data(
        &tmp,
        FILES,
        "file.bin",
        std::slice::from_ref(&plain),
        64 * 1024,
    );
    let (seeder, _) = start_seeder(&tmp, &seed_dir, &torrent, &["--verbose"]);
    let answered = format!("tracker {plain}: 0 peers");
    seeder.wait_log(&answered, Duration::from_secs(20));
    let mut urls = urls.into_iter().map(|(_, u)| u);
    Setup {
        tracker_port,
        good: urls.next().unwrap(),
        wrong_name: urls.next().unwrap(),
        expired: urls.next().unwrap(),
        unknown_ca: urls.next().unwrap(),
        ca_file,
        seed_dir,
        tmp,
        _seeder: seeder,
        _stunnel: stunnel,
        _tracker: tracker,
    }
}

impl Setup {
    fn plain(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.tracker_port)
    }

    /// Download a torrent of the seeder's data naming `trackers` (one
    /// tier each), with `extra` arguments, no `--peer`; the log.
    fn download(&self, tag: &str, trackers: &[String], extra: &[&str]) -> String {
        let torrent = make_torrent(
            &self.seed_dir.join("file.bin"),
            &self.tmp.join(&format!("{tag}.torrent")),
            trackers,
            64 * 1024,
        );
        let out = self.tmp.join(tag);
        let mut args = vec![
            "download",
            torrent.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--verbose",
        ];
        args.extend_from_slice(extra);
        let mut leecher = Proc::start(tag, self.tmp.path(), &args, self.tmp.path());
        let code = leecher.wait(Duration::from_secs(90));
        let log = leecher.log_text();
        assert_eq!(code, 0, "{tag} failed:\n{log}");
        assert_same_files(&self.seed_dir, &out, FILES);
        log
    }
}

/// The log lines that mention `url`, with `what` in them.
fn lines_with<'a>(log: &'a str, url: &str, what: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("tracker {url}: {what}")))
        .collect()
}

#[test]
fn an_announce_over_https_finds_the_seeder() {
    let s = setup("https-good");
    let ca = s.ca_file.to_str().unwrap().to_string();
    let log = s.download("good", std::slice::from_ref(&s.good), &["--ca-file", &ca]);
    assert!(
        !lines_with(&log, &s.good, "1 peers").is_empty(),
        "the HTTPS tracker gave the seeder:\n{log}"
    );
    assert!(!log.contains("certificate"), "{log}");

    // Scrape over HTTPS too.
    let torrent = s.tmp.join("good.torrent");
    let out = Command::new(BIN)
        .args(["scrape", torrent.to_str().unwrap(), "--ca-file", &ca])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{}: ", s.good)) && text.contains(" seeders, "),
        "{text}"
    );
    // Without our CA, the same tracker is refused.
    let out = Command::new(BIN)
        .args(["scrape", torrent.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{}: certificate from an unknown issuer", s.good)),
        "{text}"
    );
}

#[test]
fn certificate_failures_are_one_line_each_and_fall_through_to_the_next_tier() {
    let s = setup("https-bad");
    let ca = s.ca_file.to_str().unwrap().to_string();
    let tiers = [
        s.wrong_name.clone(),
        s.expired.clone(),
        s.unknown_ca.clone(),
        s.plain(),
    ];
    let log = s.download("bad", &tiers, &["--ca-file", &ca]);
    for (url, why) in [
        (
            &s.wrong_name,
            "certificate not valid for name \"127.0.0.1\"",
        ),
        (&s.expired, "certificate expired"),
        (&s.unknown_ca, "certificate from an unknown issuer"),
    ] {
        let lines = lines_with(&log, url, why);
        assert!(!lines.is_empty(), "no `{why}` for {url}:\n{log}");
        // One line, and it is a warning the user sees.
        eprintln!("{}", lines[0]);
        assert!(lines[0].contains("[WARN]"), "{}", lines[0]);
    }
    assert!(
        !lines_with(&log, &s.plain(), "1 peers").is_empty(),
        "the plain tracker in the last tier gave the seeder:\n{log}"
    );
}
