//! piecemeal: a BitTorrent engine on one mio poll loop.
//!
//! ```text
//! socket ─► event_loop (mio, Slab<Conn>) ─► wire::RecvBuf ─► wire::decode_frame
//!        ─► torrent (peer state, routing) ─► picker / choker
//!        ─► storage::Cache (copy once, SHA-1 as the prefix grows) ─► storage::Disk (pwrite)
//! seeding: request ─► Cache read (read cache / pread whole piece) ─► wire::SendBuf ─► socket
//! ```
//!
//! Everything but `event_loop`, `storage::disk` and `memory::probe` (which
//! reads the process's memory limits at start) is sans-IO.

pub mod bencode;
pub mod bitfield;
pub mod blame;
pub mod candidates;
pub mod choker;
pub mod cli;
pub mod client;
pub mod compact;
pub mod config;
pub mod demo;
pub mod dht;
pub mod dns;
pub mod error;
pub mod event_loop;
pub mod extension;
pub mod fast;
pub mod geometry;
pub mod ids;
pub mod magnet;
pub mod memory;
pub mod metainfo;
pub mod mse;
pub mod output;
pub mod peer;
pub mod picker;
pub mod progress;
pub mod rate;
pub mod rng;
pub mod state_file;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod ut_metadata;
pub mod ut_pex;
pub mod wire;
