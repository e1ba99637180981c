//! Tracker client exchange: announce URL, request bytes, response body.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde_bencode::value::Value;

use super::http::percent_encode;
use super::{TrackerError, printable};

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce (no `event` parameter).
    None,
    /// The first announce of a session.
    Started,
    /// The download just finished.
    Completed,
    /// The torrent is being stopped.
    Stopped,
}

impl Event {
    /// The value of the `event` parameter, if any.
    pub fn as_param(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }
}

/// A parsed `http://` or `https://` announce URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: the request goes over TLS (the shell's business; the
    /// request bytes are the same).
    pub tls: bool,
    /// Host name or IP literal; an IPv6 literal is stored without brackets
    /// (`::1`), ready for `str::parse::<IpAddr>` or a resolver.
    pub host: String,
    /// Port, 80 (443 for `https://`) when the URL names none.
    pub port: u16,
    /// Path starting with `/`, including any existing `?query`; never
    /// contains spaces or control characters.
    pub path: String,
}

impl HttpUrl {
    /// The `Host` header value: `host:port`, with brackets around an IPv6
    /// literal.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn bad_url(msg: &str) -> TrackerError {
    TrackerError::BadUrl(msg.to_string())
}

/// Parse an `http://` or `https://` announce URL; other schemes give
/// [`TrackerError::Unsupported`]. The port defaults to 80 (443); an
/// IPv6 literal is written `[::1]:6969`. A `#fragment` is dropped, non-ASCII
/// path bytes are %-encoded, and user info (`user@host`) is refused.
pub fn parse_http_url(s: &str) -> Result<HttpUrl, TrackerError> {
    let s = s.trim();
    let Some(colon) = s.find("://") else {
        return Err(bad_url("no scheme"));
    };
    let scheme = &s[..colon];
    let tls = scheme.eq_ignore_ascii_case("https");
    if !tls && !scheme.eq_ignore_ascii_case("http") {
        return Err(TrackerError::Unsupported(format!(
            "tracker scheme {}",
            printable(scheme.as_bytes(), 16)
        )));
    }
    let rest = &s[colon + 3..];
    let rest = rest.split('#').next().unwrap_or("");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(bad_url("user info in URL"));
    }
    let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;

    let mut path = String::with_capacity(path_and_query.len() + 1);
    if !path_and_query.starts_with('/') {
        path.push('/');
    }
    for &b in path_and_query.as_bytes() {
        if b <= b' ' || b == 0x7f {
            return Err(bad_url("space or control character in path"));
        } else if b >= 0x80 {
            percent_encode(&[b], &mut path);
        } else {
            path.push(char::from(b));
        }
    }
    Ok(HttpUrl {
        tls,
        host,
        port,
        path,
    })
}

/// A parsed `udp://` announce URL (BEP 15). Its path (BEP 41 URL data)
/// is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpUrl {
    /// Host name or IP literal (an IPv6 literal without brackets).
    pub host: String,
    /// Port; a `udp://` URL must name one.
    pub port: u16,
}

/// An announce URL, by scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerUrl {
    Http(HttpUrl),
    Udp(UdpUrl),
}

/// Parse an announce URL of any scheme we speak: `http://` (see
/// [`parse_http_url`]) or `udp://host:port[/path]` (BEP 15; the port is
/// required); `https://` is an [`HttpUrl`] with `tls` set.
pub fn parse_tracker_url(s: &str) -> Result<TrackerUrl, TrackerError> {
    let t = s.trim();
    let scheme = t.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !scheme.eq_ignore_ascii_case("udp") {
        return parse_http_url(s).map(TrackerUrl::Http);
    }
    let rest = t.get(scheme.len() + 3..).unwrap_or("");
    let rest = rest.split('#').next().unwrap_or("");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or("");
    if authority.contains('@') {
        return Err(bad_url("user info in URL"));
    }
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
        None => authority.contains(':'),
    };
    if !has_port {
        return Err(bad_url("a udp tracker URL needs a port"));
    }
    let (host, port) = split_host_port(authority, 80)?;
    Ok(TrackerUrl::Udp(UdpUrl { host, port }))
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), TrackerError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']').ok_or_else(|| bad_url("unclosed '['"))?;
        let literal = &rest[..close];
        literal
            .parse::<Ipv6Addr>()
            .map_err(|_| bad_url("bad IPv6 literal"))?;
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad_url("junk after IPv6 literal")),
        };
        (literal.to_string(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad_url("empty host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(bad_url("bad character in host"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(bad_url("bad port")),
        },
    };
    Ok((host, port))
}

/// Everything an announce says about us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceParams {
    /// The torrent's info-hash.
    pub info_hash: [u8; 20],
    /// Our peer id.
    pub peer_id: [u8; 20],
    /// Our listening port.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// The event, if any.
    pub event: Event,
    /// How many peers we would like.
    pub numwant: u32,
    /// A random key that stays the same for the session (lets the tracker
    /// recognise us across IP changes).
    pub key: u32,
    /// The `tracker id` a tracker gave us earlier, echoed back.
    pub tracker_id: Option<Vec<u8>>,
}

/// Build the bytes of one announce request: a `GET` of `url.path` with the
/// announce parameters appended (after `?`, or `&` when the path already has
/// a query), binary fields %-encoded, and the headers `Host`, `User-Agent`,
/// `Accept-Encoding: identity` and `Connection: close`.
pub fn build_announce_request(url: &HttpUrl, p: &AnnounceParams) -> Vec<u8> {
    let mut target = String::with_capacity(url.path.len() + 200);
    target.push_str(&url.path);
    if !url.path.contains('?') {
        target.push('?');
    } else if !url.path.ends_with(['?', '&']) {
        target.push('&');
    }
    target.push_str("info_hash=");
    percent_encode(&p.info_hash, &mut target);
    target.push_str("&peer_id=");
    percent_encode(&p.peer_id, &mut target);
    // Writing to a String cannot fail.
    let _ = write!(
        target,
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        p.port, p.uploaded, p.downloaded, p.left, p.numwant, p.key
    );
    if let Some(event) = p.event.as_param() {
        target.push_str("&event=");
        target.push_str(event);
    }
    if let Some(id) = &p.tracker_id {
        target.push_str("&trackerid=");
        percent_encode(id, &mut target);
    }
    get_request(url, &target)
}

/// A `GET` of `target` on the tracker of `url`, with the headers every
/// tracker request carries.
fn get_request(url: &HttpUrl, target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: piecemeal/0.1\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.host_header()
    )
    .into_bytes()
}

/// The scrape URL of an announce URL, by the BEP 48 convention: the last
/// path segment must start with `announce`, which becomes `scrape`
/// (`/x/announce.php?k=1` → `/x/scrape.php?k=1`). `None`: the tracker has
/// no scrape URL.
pub fn scrape_url(announce: &HttpUrl) -> Option<HttpUrl> {
    let (path, query) = match announce.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (announce.path.as_str(), None),
    };
    let slash = path.rfind('/')?;
    let (dir, last) = path.split_at(slash + 1);
    let rest = last.strip_prefix("announce")?;
    let mut new = format!("{dir}scrape{rest}");
    if let Some(q) = query {
        new.push('?');
        new.push_str(q);
    }
    Some(HttpUrl {
        tls: announce.tls,
        host: announce.host.clone(),
        port: announce.port,
        path: new,
    })
}

/// The bytes of a scrape request (BEP 48) for one info-hash: a `GET` of
/// the scrape URL with `info_hash` appended, headers as for announces.
pub fn build_scrape_request(url: &HttpUrl, info_hash: &[u8; 20]) -> Vec<u8> {
    let mut target = url.path.clone();
    if !target.contains('?') {
        target.push('?');
    } else if !target.ends_with(['?', '&']) {
        target.push('&');
    }
    target.push_str("info_hash=");
    percent_encode(info_hash, &mut target);
    get_request(url, &target)
}

/// A tracker's bencoded answer as a dictionary, after the bounded
/// validator; its `failure reason`, when it has one, as
/// [`TrackerError::Failure`].
fn tracker_dict(body: &[u8]) -> Result<std::collections::HashMap<Vec<u8>, Value>, TrackerError> {
    crate::bencode::validate(body, &crate::bencode::Limits::TRACKER)
        .map_err(|e| TrackerError::Bencode(e.to_string()))?;
    let value: Value = serde_bencode::from_bytes(body)
        .map_err(|e| TrackerError::Bencode(printable(e.to_string().as_bytes(), 200)))?;
    let Value::Dict(dict) = value else {
        return Err(bad("body is not a dictionary"));
    };
    if let Some(reason) = dict.get(&b"failure reason"[..]) {
        return Err(TrackerError::Failure(match reason {
            Value::Bytes(b) => printable(b, MAX_TEXT),
            _ => "(failure reason is not a string)".to_string(),
        }));
    }
    Ok(dict)
}

/// The counts for `info_hash` in a bencoded scrape body (BEP 48): its entry
/// of `files`, with `complete`, `downloaded` and `incomplete` (a missing
/// count reads 0). A `failure reason` becomes [`TrackerError::Failure`];
/// no entry for the hash is a [`TrackerError::BadResponse`].
pub fn parse_scrape_body(
    body: &[u8],
    info_hash: &[u8; 20],
) -> Result<super::ScrapeCounts, TrackerError> {
    let dict = tracker_dict(body)?;
    let Some(Value::Dict(files)) = dict.get(&b"files"[..]) else {
        return Err(bad("no files dictionary"));
    };
    let Some(Value::Dict(entry)) = files.get(&info_hash[..]) else {
        return Err(bad("the torrent is not in the answer"));
    };
    Ok(super::ScrapeCounts {
        seeders: count(entry, b"complete").unwrap_or(0),
        completed: count(entry, b"downloaded").unwrap_or(0),
        leechers: count(entry, b"incomplete").unwrap_or(0),
    })
}

/// A successful announce response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce, clamped to
    /// [`MIN_INTERVAL`, `MAX_INTERVAL`]; [`DEFAULT_INTERVAL`] when missing.
    pub interval: u32,
    /// The tracker's `min interval`: re-announcing sooner is rude.
    pub min_interval: Option<u32>,
    /// Peers from `peers` (compact or dictionary list) and `peers6`.
    pub peers: Vec<SocketAddr>,
    /// The `warning message`, if any.
    pub warning: Option<String>,
    /// Seeders, as the tracker counts them.
    pub complete: Option<u32>,
    /// Leechers, as the tracker counts them.
    pub incomplete: Option<u32>,
    /// The `tracker id` to send back next time.
    pub tracker_id: Option<Vec<u8>>,
}

/// Shortest re-announce interval accepted from a tracker, in seconds.
pub const MIN_INTERVAL: u32 = 30;
/// Longest re-announce interval accepted from a tracker, in seconds.
pub const MAX_INTERVAL: u32 = 6 * 3600;
/// Interval used when the tracker sends none, in seconds.
pub const DEFAULT_INTERVAL: u32 = 1800;
/// Longest text kept from `failure reason` / `warning message`.
const MAX_TEXT: usize = 512;

fn bad(msg: &str) -> TrackerError {
    TrackerError::BadResponse(msg.to_string())
}

/// Parse a bencoded announce body. A `failure reason` becomes
/// [`TrackerError::Failure`]. Compact `peers` must be a multiple of 6 bytes
/// and `peers6` a multiple of 18; in a dictionary-list `peers`, entries whose
/// `ip` is not an IP literal or whose port is 0 are skipped.
pub fn parse_announce_body(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let dict = tracker_dict(body)?;
    let interval = match dict.get(&b"interval"[..]) {
        None => DEFAULT_INTERVAL,
        Some(Value::Int(i)) => clamp_secs(*i),
        Some(_) => return Err(bad("interval is not an integer")),
    };
    let min_interval = match dict.get(&b"min interval"[..]) {
        None => None,
        Some(Value::Int(i)) => Some(clamp_secs(*i).min(interval)),
        Some(_) => return Err(bad("min interval is not an integer")),
    };
    let mut peers = Vec::new();
    match dict.get(&b"peers"[..]) {
        None => {}
        Some(Value::Bytes(b)) => compact(b, false, &mut peers)?,
        Some(Value::List(list)) => dict_peers(list, &mut peers),
        Some(_) => return Err(bad("peers is neither a string nor a list")),
    }
    match dict.get(&b"peers6"[..]) {
        None => {}
        Some(Value::Bytes(b)) => compact(b, true, &mut peers)?,
        Some(_) => return Err(bad("peers6 is not a string")),
    }
    let warning = match dict.get(&b"warning message"[..]) {
        Some(Value::Bytes(b)) => Some(printable(b, MAX_TEXT)),
        _ => None,
    };
    let tracker_id = match dict.get(&b"tracker id"[..]) {
        Some(Value::Bytes(b)) if !b.is_empty() && b.len() <= 256 => Some(b.clone()),
        _ => None,
    };
    Ok(AnnounceResponse {
        interval,
        min_interval,
        peers,
        warning,
        complete: count(&dict, b"complete"),
        incomplete: count(&dict, b"incomplete"),
        tracker_id,
    })
}

/// A tracker-supplied number of seconds, clamped to the sane range.
fn clamp_secs(i: i64) -> u32 {
    // The clamp makes the cast lossless.
    i.clamp(i64::from(MIN_INTERVAL), i64::from(MAX_INTERVAL)) as u32
}

fn count(dict: &HashMap<Vec<u8>, Value>, key: &[u8]) -> Option<u32> {
    match dict.get(key) {
        Some(Value::Int(i)) => u32::try_from(*i).ok(),
        _ => None,
    }
}

/// Compact peers (`peers` with `v6` false, `peers6` with it true); port 0
/// is skipped, a partial record refused.
fn compact(b: &[u8], v6: bool, out: &mut Vec<SocketAddr>) -> Result<(), TrackerError> {
    if !b.len().is_multiple_of(crate::compact::record_len(v6)) {
        return Err(bad(if v6 {
            "peers6 length is not a multiple of 18"
        } else {
            "compact peers length is not a multiple of 6"
        }));
    }
    out.extend(crate::compact::records(b, v6).filter(|a| a.port() != 0));
    Ok(())
}

fn dict_peers(list: &[Value], out: &mut Vec<SocketAddr>) {
    for entry in list {
        let Value::Dict(d) = entry else { continue };
        let ip = match d.get(&b"ip"[..]) {
            Some(Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok()),
            _ => None,
        };
        let port = match d.get(&b"port"[..]) {
            Some(Value::Int(p)) => u16::try_from(*p).ok().filter(|&p| p != 0),
            _ => None,
        };
        if let (Some(ip), Some(port)) = (ip, port) {
            out.push(SocketAddr::new(ip, port));
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
