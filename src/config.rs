//! Every limit, time-out and budget, as plain data with defaults.

use std::time::Duration;

/// Limits and timers of the peer engine.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most peer connections at once (incoming + outgoing).
    pub max_peers: usize,
    /// Most connections from one IP address (loopback is exempt: test
    /// swarms and local clients share it).
    pub max_per_ip: usize,
    /// A connection that has moved no payload and where neither side is
    /// interested may be closed for a newcomer once it is this old.
    pub evict_after: Duration,
    /// Most outgoing connects in flight at once.
    pub max_half_open: usize,
    /// Give up on a connect after this long.
    pub connect_timeout: Duration,
    /// Close a peer that has not completed the handshake after this long.
    pub handshake_timeout: Duration,
    /// Close a peer that sent nothing (not even a keep-alive) for this long.
    pub idle_timeout: Duration,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// A peer that delivers none of our requests for this long is snubbed:
    /// its requests go back to the picker.
    pub request_timeout: Duration,
    /// Piece cache budget in bytes (0 = write-through).
    pub cache_bytes: usize,
    /// Requests in flight to one peer: start and bounds of the adaptive pipeline.
    pub pipeline_start: usize,
    pub pipeline_min: usize,
    pub pipeline_max: usize,
    /// Most requests from one peer we queue; more closes the connection.
    pub max_peer_requests: usize,
    /// Largest block a peer may request from us.
    pub max_request_len: u32,
    /// Upload slots (regular unchokes), besides the optimistic one.
    pub upload_slots: usize,
    /// Stop filling a peer's send buffer above this many bytes.
    pub send_watermark: usize,
    /// Receive buffer size per peer.
    pub recv_buf: usize,
    /// Upload rate limit in bytes per second (None: unlimited).
    pub upload_limit: Option<u64>,
    /// Download rate limit in bytes/s (None: unlimited).
    pub download_limit: Option<u64>,
    /// Bytes of verified pieces written per loop turn (keeps the loop responsive).
    pub flush_per_turn: usize,
    /// Message Stream Encryption: prefer (dial encrypted, fall back to
    /// plaintext; accept both), require (RC4 only) or off (plaintext only).
    pub encryption: crate::mse::Policy,
    /// Peer exchange (BEP 11): at most one `ut_pex` message per peer this
    /// often (60 s; tests shorten it with the hidden `--pex-interval`).
    pub pex_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_peers: 50,
            max_per_ip: 8,
            evict_after: Duration::from_secs(5),
            max_half_open: 8,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(180),
            keepalive_interval: Duration::from_secs(90),
            request_timeout: Duration::from_secs(20),
            cache_bytes: 16 << 20,
            pipeline_start: 32,
            pipeline_min: 4,
            pipeline_max: 1024,
            max_peer_requests: 2048,
            max_request_len: 128 * 1024,
            upload_slots: 4,
            send_watermark: 128 * 1024,
            recv_buf: 64 * 1024,
            upload_limit: None,
            download_limit: None,
            flush_per_turn: 8 << 20,
            encryption: crate::mse::Policy::Prefer,
            pex_interval: Duration::from_secs(60),
        }
    }
}
