//! `piecemeal scrape`: ask each tracker of a torrent for its counts, once,
//! outside any session. A one-shot command, so plain blocking sockets with
//! time-outs, one thread per tracker; the protocols are the same sans-IO
//! cores the loop uses (the UDP client core, the HTTP response reader).

use super::net;
use crate::tracker::{
    ResponseReader, ScrapeCounts, TrackerError, TrackerUrl, UdpAnswer, UdpClient,
    build_scrape_request, parse_scrape_body, parse_tracker_url, scrape_url,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One tracker's answer to a scrape: its URL and the counts, or why not.
pub type ScrapeResult = (String, Result<ScrapeCounts, TrackerError>);

/// Scrape `info_hash` from every URL (at the same time, each within
/// `timeout`), from `bind` when given; `https://` trackers are checked
/// against the system's CAs and those in `ca_files`. The results come in
/// the order of `urls`; an unusable `ca_files` is an error.
pub fn scrape_trackers(
    urls: &[String],
    info_hash: [u8; 20],
    bind: Option<IpAddr>,
    timeout: Duration,
    ca_files: &[PathBuf],
) -> Result<Vec<ScrapeResult>, String> {
    let any_https = urls.iter().any(|u| {
        u.trim()
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let tls = if any_https || !ca_files.is_empty() {
        Some(super::tls::client_config(ca_files).map_err(|e| format!("--ca-file {e}"))?)
    } else {
        None
    };
    let tls = &tls;
    Ok(std::thread::scope(|scope| {
        let jobs: Vec<_> = urls
            .iter()
            .map(|url| scope.spawn(move || scrape_one(url, info_hash, bind, timeout, tls)))
            .collect();
        urls.iter()
            .zip(jobs)
            .map(|(url, job)| {
                let r = job
                    .join()
                    .unwrap_or_else(|_| Err(TrackerError::Io("scrape failed".into())));
                (url.clone(), r)
            })
            .collect()
    }))
}

fn scrape_one(
    url: &str,
    info_hash: [u8; 20],
    bind: Option<IpAddr>,
    timeout: Duration,
    tls: &Option<Arc<ClientConfig>>,
) -> Result<ScrapeCounts, TrackerError> {
    let deadline = Instant::now() + timeout;
    match parse_tracker_url(url)? {
        TrackerUrl::Udp(u) => {
            let addr = resolve(&u.host, u.port, deadline)?;
            udp_scrape(addr, info_hash, bind, deadline)
        }
        TrackerUrl::Http(h) => {
            let s = scrape_url(&h).ok_or_else(|| {
                TrackerError::Unsupported(
                    "no scrape URL (the path does not end in announce)".into(),
                )
            })?;
            let addr = resolve(&s.host, s.port, deadline)?;
            let tls = match tls {
                Some(c) if s.tls => Some((c.clone(), s.host.as_str())),
                _ => None,
            };
            let body = http_get(addr, &build_scrape_request(&s, &info_hash), deadline, tls)?;
            parse_scrape_body(&body, &info_hash)
        }
    }
}

/// The first address of `host`, within `deadline`: the lookup runs on a
/// thread of its own, so a resolver that hangs costs the time-out, not
/// the command.
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<SocketAddr, TrackerError> {
    if let Some(ip) = crate::dns::ip_literal(host) {
        return Ok(SocketAddr::new(ip, port));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|mut a| a.next()),
            );
        })
        .map_err(|e| TrackerError::Io(format!("cannot resolve {host}: {e}")))?;
    match rx.recv_timeout(left(deadline)?) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(TrackerError::Io(format!(
            "cannot resolve {host}: no address"
        ))),
        Ok(Err(e)) => Err(TrackerError::Io(format!("cannot resolve {host}: {e}"))),
        Err(_) => Err(TrackerError::Timeout),
    }
}

fn io_err(what: &str, e: io::Error) -> TrackerError {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return TrackerError::Tls(super::tls_error_text(t));
    }
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        TrackerError::Timeout
    } else {
        TrackerError::Io(format!("{what}: {e}"))
    }
}

/// What is left until `deadline` (at least 1 ms: a zero time-out means
/// "none" to the socket calls).
fn left(deadline: Instant) -> Result<Duration, TrackerError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(TrackerError::Timeout);
    }
    Ok(d.max(Duration::from_millis(1)))
}

fn http_get(
    addr: SocketAddr,
    request: &[u8],
    deadline: Instant,
    tls: Option<(Arc<ClientConfig>, &str)>,
) -> Result<Vec<u8>, TrackerError> {
    let s = TcpStream::connect_timeout(&addr, left(deadline)?).map_err(|e| io_err("connect", e))?;
    match tls {
        None => exchange(s, request, deadline),
        Some((config, host)) => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| TrackerError::BadUrl(format!("not a TLS server name: {host}")))?;
            let conn = ClientConnection::new(config, name)
                .map_err(|e| TrackerError::Tls(super::tls_error_text(&e)))?;
            exchange(StreamOwned::new(conn, s), request, deadline)
        }
    }
}

/// A socket, or TLS over one, whose time-outs can be set.
trait Timed: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Timed for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Timed for StreamOwned<ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

fn exchange(mut s: impl Timed, request: &[u8], deadline: Instant) -> Result<Vec<u8>, TrackerError> {
    s.tcp()
        .set_write_timeout(Some(left(deadline)?))
        .map_err(|e| io_err("write", e))?;
    s.tcp()
        .set_read_timeout(Some(left(deadline)?))
        .map_err(|e| io_err("read", e))?;
    s.write_all(request)
        .and_then(|()| s.flush())
        .map_err(|e| io_err("write", e))?;
    let mut reader = ResponseReader::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        s.tcp()
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| io_err("read", e))?;
        match s.read(&mut buf) {
            Ok(0) => return reader.eof(),
            Ok(n) => {
                if let Some(body) = reader.feed(buf.get(..n).unwrap_or_default())? {
                    return Ok(body);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A TLS peer that closes without close_notify: the end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return reader.eof(),
            Err(e) => return Err(io_err("read", e)),
        }
    }
}

fn udp_scrape(
    tracker: SocketAddr,
    info_hash: [u8; 20],
    bind: Option<IpAddr>,
    deadline: Instant,
) -> Result<ScrapeCounts, TrackerError> {
    let local = match (bind, tracker) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let sock = UdpSocket::bind(local).map_err(|e| io_err("UDP socket", e))?;
    let mut client = UdpClient::new(net::random_u64());
    client.start_scrape(0, tracker, &[info_hash], 1, Instant::now())?;
    let mut buf = [0u8; crate::tracker::udp_wire::MAX_RESPONSE_LEN + 1];
    loop {
        let now = Instant::now();
        client.handle_timeout(now);
        while let Some(tx) = client.poll_transmit(now) {
            if let Err(e) = sock.send_to(&tx.payload, tx.dest) {
                client.on_send_error(tx.id, format!("send to {}: {e}", tx.dest));
            }
        }
        if let Some(ev) = client.poll_event() {
            return match ev.outcome? {
                UdpAnswer::Scrape(counts) => counts
                    .first()
                    .copied()
                    .ok_or_else(|| TrackerError::BadResponse("no record for the torrent".into())),
                UdpAnswer::Announce(_) => Err(TrackerError::BadResponse("not a scrape".into())),
            };
        }
        if Instant::now() >= deadline {
            return Err(TrackerError::Timeout);
        }
        let until = client.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue; // a retransmission is due
        }
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| io_err("UDP socket", e))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                client.handle_datagram(from, buf.get(..n).unwrap_or_default(), Instant::now())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // An ICMP "port unreachable" for an earlier datagram.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(TrackerError::Io(format!("{tracker}: {e}")));
            }
            Err(e) => return Err(io_err("receive", e)),
        }
    }
}
