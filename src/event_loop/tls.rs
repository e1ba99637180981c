//! HTTPS trackers: rustls (ring provider) driven over the announce's
//! non-blocking socket, in the loop. The handshake runs on the same poll
//! as everything else: [`Tls::flush`] writes records until `WouldBlock`,
//! [`Tls::read`] reads records, processes them and hands back the
//! plaintext; nothing waits.
//!
//! Certificates are checked against the system's store (`SSL_CERT_FILE`,
//! else `/etc/ssl/certs/ca-certificates.crt`, else the PEM files in
//! `/etc/ssl/certs/`), or, on a machine without one, the Mozilla roots
//! built in (`webpki-roots`); `--ca-file` adds CAs (private trackers).
//! Failures are one line: `certificate not valid for name "x"`,
//! `certificate expired`, `certificate from an unknown issuer`.

use super::ReadStop;
use crate::tracker::TrackerError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The system's CA bundle on Debian and its relatives.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The folder of single CA files, when there is no bundle.
const SYSTEM_DIR: &str = "/etc/ssl/certs";

/// The certificates of a PEM file (other PEM sections are skipped).
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The system's trusted CAs (none on a machine without a store).
fn system_roots(store: &mut RootCertStore) -> usize {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let files: Vec<PathBuf> = match from_env {
        Some(f) => vec![f],
        None if Path::new(SYSTEM_BUNDLE).is_file() => vec![PathBuf::from(SYSTEM_BUNDLE)],
        None => std::fs::read_dir(SYSTEM_DIR)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut added = 0;
    for f in files {
        if let Ok(certs) = pem_certs(&f) {
            added += store.add_parsable_certificates(certs).0;
        }
    }
    added
}

/// The TLS set-up for tracker connections: the system's CAs (or the
/// built-in roots when it has none) plus the certificates of `ca_files`.
/// An unreadable `--ca-file`, or one without a certificate, is an error.
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if system_roots(&mut roots) == 0 {
        log::debug!("no system CA store; using the built-in Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for f in ca_files {
        let certs = pem_certs(f)?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", f.display()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: {}", f.display(), tls_error_text(&e)))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One line for a TLS failure, certificate problems in plain words.
pub fn tls_error_text(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName => "certificate not valid for the name".into(),
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => {
                let name = match expected {
                    ServerName::DnsName(d) => d.as_ref().to_string(),
                    ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                    _ => "?".into(),
                };
                // rustls writes them as `DnsName("x")`: keep the name.
                let presented: Vec<&str> = presented
                    .iter()
                    .map(|p| p.split('"').nth(1).unwrap_or(p))
                    .collect();
                format!(
                    "certificate not valid for name \"{name}\" (it is for {})",
                    presented.join(", ")
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".into()
            }
            CertificateError::UnknownIssuer => "certificate from an unknown issuer".into(),
            CertificateError::BadSignature => "certificate with a bad signature".into(),
            CertificateError::Revoked => "certificate revoked".into(),
            other => format!("bad certificate: {other:?}"),
        },
        other => format!("TLS: {other}"),
    }
}

/// A TLS client session over a non-blocking socket the caller owns.
pub struct Tls {
    conn: ClientConnection,
}

impl Tls {
    /// Start a session with `host` (checked against the certificate).
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Tls, TrackerError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TrackerError::BadUrl(format!("not a TLS server name: {host}")))?;
        let conn = ClientConnection::new(config, name)
            .map_err(|e| TrackerError::Tls(tls_error_text(&e)))?;
        Ok(Tls { conn })
    }

    /// Queue plaintext (sent once the handshake is done).
    pub fn send(&mut self, data: &[u8]) -> Result<(), TrackerError> {
        self.conn
            .writer()
            .write_all(data)
            .map_err(|e| TrackerError::Io(format!("TLS write: {e}")))
    }

    /// Write queued records until done or `WouldBlock`.
    pub fn flush(&mut self, sock: &mut impl Write) -> Result<(), TrackerError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TrackerError::Io(format!("write: {e}"))),
            }
        }
        Ok(())
    }

    /// Read records (at most about `cap` bytes of them) and append the
    /// plaintext to `buf`. Handshake answers are written on the way.
    /// Also gives the bytes read from the socket (records that carry no
    /// plaintext count against a read budget too).
    pub fn read(
        &mut self,
        sock: &mut (impl Read + Write),
        buf: &mut Vec<u8>,
        cap: usize,
    ) -> Result<(ReadStop, usize), TrackerError> {
        let mut taken = 0;
        let stop = loop {
            if taken >= cap {
                break ReadStop::Cap;
            }
            match self.conn.read_tls(sock) {
                Ok(0) => break ReadStop::Eof,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadStop::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TrackerError::Io(format!("read: {e}"))),
            }
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // Send the alert, best effort, then fail.
                    let _ = self.flush(sock);
                    return Err(TrackerError::Tls(tls_error_text(&e)));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = buf.len();
                buf.resize(start + n, 0);
                let got = self
                    .conn
                    .reader()
                    .read(buf.get_mut(start..).unwrap_or_default())
                    .unwrap_or(0);
                buf.truncate(start + got);
            }
            if state.peer_has_closed() {
                break ReadStop::Eof;
            }
        };
        self.flush(sock)?;
        Ok((stop, taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_read_as_one_plain_line() {
        let cases = [
            (CertificateError::Expired, "certificate expired"),
            (
                CertificateError::UnknownIssuer,
                "certificate from an unknown issuer",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("t.example").unwrap(),
                    presented: vec!["DnsName(\"other.example\")".into()],
                },
                "certificate not valid for name \"t.example\" (it is for other.example)",
            ),
        ];
        for (e, want) in cases {
            let text = tls_error_text(&rustls::Error::InvalidCertificate(e));
            assert_eq!(text, want);
            assert!(!text.contains('\n'));
        }
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_an_error() {
        let e = client_config(&[PathBuf::from("/nonexistent/ca.pem")]).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("pm-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(std::slice::from_ref(&empty)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        // Without extra files the system's (or the built-in) roots do.
        assert!(client_config(&[]).is_ok());
    }

    /// A socket that hands over at most `chunk` bytes per read, then
    /// `WouldBlock` when empty; takes all writes.
    struct Pipe {
        inbox: std::collections::VecDeque<u8>,
        outbox: Vec<u8>,
        chunk: usize,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.inbox.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.inbox.len());
            for (i, b) in self.inbox.drain(..n).enumerate() {
                buf[i] = b;
            }
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.outbox.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A client config trusting a fresh CA, and a server for `names`
    /// signed by it.
    fn pair(names: &[&str]) -> (Arc<ClientConfig>, rustls::ServerConnection) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            Arc::new(client),
            rustls::ServerConnection::new(Arc::new(server)).unwrap(),
        )
    }

    /// Drive a request and its answer through `Tls` over a `Pipe` giving
    /// `chunk` bytes per read: the plaintext the client got, or its error.
    fn exchange(host: &str, names: &[&str], chunk: usize) -> Result<Vec<u8>, TrackerError> {
        let (client, mut server) = pair(names);
        let mut tls = Tls::new(client, host)?;
        let request = b"GET /announce HTTP/1.1\r\n\r\n";
        let answer = vec![b'x'; 40_000];
        tls.send(request)?;
        let mut pipe = Pipe {
            inbox: Default::default(),
            outbox: Vec::new(),
            chunk,
        };
        let (mut got, mut asked, mut answered) = (Vec::new(), Vec::new(), false);
        for _ in 0..200_000 {
            tls.flush(&mut pipe)?;
            let mut from_client = &pipe.outbox[..];
            while !from_client.is_empty() {
                server.read_tls(&mut from_client).unwrap();
                server.process_new_packets().unwrap();
            }
            pipe.outbox.clear();
            let _ = server.reader().read_to_end(&mut asked);
            if asked == request && !answered {
                server.writer().write_all(&answer).unwrap();
                answered = true;
            }
            let mut to_client = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut to_client).unwrap();
            }
            pipe.inbox.extend(to_client);
            let (stop, _) = tls.read(&mut pipe, &mut got, 1 << 20)?;
            assert_ne!(stop, ReadStop::Cap);
            if got.len() == answer.len() {
                assert_eq!(got, answer);
                return Ok(got);
            }
        }
        panic!("no answer: {} of {} bytes", got.len(), answer.len());
    }

    #[test]
    fn a_tls_exchange_completes_whole_or_one_byte_at_a_time() {
        for chunk in [1, 7, 1 << 16] {
            exchange("tracker.test", &["tracker.test"], chunk).unwrap();
        }
        exchange("127.0.0.1", &["127.0.0.1"], 1 << 16).unwrap();
    }

    #[test]
    fn a_certificate_for_another_name_fails_in_the_handshake() {
        match exchange("tracker.test", &["other.test"], 1 << 16) {
            Err(TrackerError::Tls(e)) => assert_eq!(
                e,
                "certificate not valid for name \"tracker.test\" (it is for other.test)"
            ),
            other => panic!("{other:?}"),
        }
    }
}
