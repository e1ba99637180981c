//! The mainline DHT (BEP 5) as a sans-IO core.
//!
//! ```text
//!  datagram ──► krpc::decode ──► Node ──► routing table (k-buckets, BEP 42 id)
//!                                 │  ├─► serving: tokens, peer store (capped), rate limits
//!                                 │  └─► lookups: iterative find_node / get_peers, announce_peer
//!                                 ▼
//!              poll_transmit (datagrams) · poll_event (peers found) · poll_timeout
//! ```
//!
//! Nothing here owns a socket or reads the clock: the shell
//! (`event_loop/dht.rs`) feeds datagrams and `now`, and sends what
//! [`Node::poll_transmit`] hands back. The simulation test drives
//! thousands of these cores in one deterministic process.
//!
//! IPv4 only (BEP 5's compact formats); BEP 32 (IPv6) is not done.
//!
//! # Memory bound
//!
//! Every table has a cap stated where it is declared; with the default
//! [`DhtConfig`] one node holds at most about 5.1 MiB whatever arrives
//! ([`DhtConfig::memory_bound`], 5,212 KiB): the routing table (160
//! buckets × 16 entries), the peer store ([`store`]: 2,000 info-hashes,
//! 20,000 peers), the rate limiter's fixed array, the in-flight query
//! table, 64 lookups and the output queue. `tests/dht_hostile.rs` floods
//! a node with a million announced info-hashes and checks the bound; a
//! node in the 10,000-node simulation holds about 40 KiB.

pub mod id;
pub mod krpc;
pub mod lookup;
pub mod node;
pub mod ratelimit;
pub mod state;
pub mod store;
pub mod table;
pub mod tokens;

pub use id::NodeId;
pub use node::{DhtConfig, DhtEvent, DhtStats, LookupReport, Node, Transmit};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
