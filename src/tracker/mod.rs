//! Trackers, both sides, sans-IO.
//!
//! Client side (the engine announcing to trackers):
//! - [`parse_http_url`] and [`build_announce_request`] turn an announce URL and
//!   [`AnnounceParams`] into the bytes of one HTTP/1.1 GET request;
//! - [`ResponseReader`] frames the HTTP response incrementally (bounded head,
//!   `Content-Length`, chunked or read-to-EOF body);
//! - [`parse_announce_body`] turns the bencoded body into an
//!   [`AnnounceResponse`] (compact, dictionary and BEP 7 IPv6 peers);
//! - [`Announcer`] decides *when* to announce *to which* URL: BEP 12 tiers,
//!   intervals, `started`/`completed`/`stopped` events and back-off.
//!
//! UDP (BEP 15), both sides: [`udp_wire`] encodes and decodes the datagrams;
//! [`UdpClient`] runs every UDP announce and scrape of a session (connect,
//! connection ids, retransmission, matching answers by transaction id);
//! [`parse_tracker_url`] routes a URL to HTTP or UDP, and the [`Announcer`]
//! walks its tiers across both alike.
//!
//! Server side (the built-in tracker): [`frame_request`] finds the end of
//! a request head, and [`Tracker::handle`] turns a head into a complete HTTP
//! response for `/announce` and `/scrape` (BEP 48); [`UdpServer`] answers
//! BEP 15 datagrams from the same tables ([`Tracker::announce_parsed`]).
//!
//! Nothing here touches a socket or the clock: the mio shell resolves hosts,
//! moves bytes and passes `now: Instant` in.
//!
//! Every bencoded body from the network passes `crate::bencode::validate` (a bounded,
//! non-recursive validator) before serde_bencode sees it.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod announcer;
mod client;
mod http;
mod response;
mod server;
mod udp_client;
mod udp_server;
pub mod udp_wire;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod fuzz_tests;

pub use announcer::{Announcer, BACKOFF_CAP, BACKOFF_FLOOR, DEFAULT_MIN_INTERVAL};
pub use client::{
    AnnounceParams, AnnounceResponse, DEFAULT_INTERVAL, Event, HttpUrl, MAX_INTERVAL, MIN_INTERVAL,
    TrackerUrl, UdpUrl, build_announce_request, build_scrape_request, parse_announce_body,
    parse_http_url, parse_scrape_body, parse_tracker_url, scrape_url,
};
pub use http::{BadEscape, QueryPairs, percent_decode, percent_encode, split_query};
pub(crate) use http::{hex_value, percent_decode_at};
pub use response::{MAX_BODY, MAX_HEAD, ResponseReader};
pub use server::{
    AnnounceRequest, HeadStatus, MAX_REQUEST_HEAD, PeerFamily, RequestError, ServerConfig,
    SwarmCounts, Tracker, frame_request,
};
pub use udp_client::{
    BEP15_MAX_N, CONNECTION_ID_TTL, ExchangeId, RETRANSMIT_BASE, Transmit, UdpAnswer, UdpClient,
    UdpClientStats, UdpEvent, retransmit_after,
};
pub use udp_server::{RATE_SLOTS, UdpServer, UdpServerConfig, UdpServerStats};
pub use udp_wire::ScrapeCounts;

use std::fmt;

/// Why one tracker exchange failed. Every variant is recoverable: the
/// [`Announcer`] answers it with a retry on another URL or a back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerError {
    /// The URL's scheme or a feature of the response (e.g. a content coding)
    /// is not implemented.
    Unsupported(String),
    /// The announce URL is malformed.
    BadUrl(String),
    /// The HTTP response is malformed or has a non-2xx status (the text holds
    /// the status line).
    Http(String),
    /// The connection closed before the response was complete.
    Truncated,
    /// The response head or body exceeds its cap.
    TooLarge,
    /// The body is not valid bencode (or breaks a limit such as nesting).
    Bencode(String),
    /// The tracker answered with a `failure reason`.
    Failure(String),
    /// The body is valid bencode but not a valid announce response.
    BadResponse(String),
    /// A socket error reported by the shell.
    Io(String),
    /// The shell gave up waiting for the tracker.
    Timeout,
    /// The TLS session failed (`https://`): a certificate that is not
    /// valid for the name, expired or from an unknown issuer, or a
    /// handshake error. The text is one line.
    Tls(String),
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerError::Unsupported(s) => write!(f, "unsupported: {s}"),
            TrackerError::BadUrl(s) => write!(f, "bad tracker URL: {s}"),
            TrackerError::Http(s) => write!(f, "HTTP error: {s}"),
            TrackerError::Truncated => f.write_str("tracker closed the connection mid-response"),
            TrackerError::TooLarge => f.write_str("tracker response too large"),
            TrackerError::Bencode(s) => write!(f, "invalid bencode from tracker: {s}"),
            TrackerError::Failure(s) => write!(f, "tracker failure: {s}"),
            TrackerError::BadResponse(s) => write!(f, "bad tracker response: {s}"),
            TrackerError::Io(s) => write!(f, "tracker I/O error: {s}"),
            TrackerError::Timeout => f.write_str("tracker timed out"),
            TrackerError::Tls(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for TrackerError {}

/// Text from the network, made safe to log and show: lossy UTF-8, control
/// characters replaced, at most `max` characters.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
