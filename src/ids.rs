//! The ids that name things across the engine, each its own type so that one
//! cannot be passed where another is meant.
//!
//! - [`PeerKey`]: a peer within one torrent (the key of the torrent's peer
//!   slab). Only the torrent core makes them ([`crate::peer::Peers::insert`]);
//!   the picker and choker take them as opaque names.
//! - [`ConnToken`]: a connection in the event loop (the key of the session's
//!   connection slab, which is also its `mio::Token`). The core keeps it on
//!   each peer so it can name connections to close; only the shell turns it
//!   into a `mio::Token` or a slab index.
//! - [`crate::event_loop::TorrentId`]: a torrent in the session (the key of
//!   the session's torrent slab).
//! - [`PieceIndex`]: a piece of a torrent's data. The wire carries bare
//!   `u32`s; the torrent core wraps them as it reads a message (and checks
//!   them against the geometry) and unwraps them as it encodes one. Metadata
//!   piece numbers of `ut_metadata` are not torrent pieces and stay `u32`.

use std::fmt;

/// A peer within one torrent: the key of [`crate::torrent::Torrent`]'s peer
/// slab. Only the core mints them; everyone else passes them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub(crate) usize);

impl PeerKey {
    /// A key made up outside a torrent, for benches that drive the picker
    /// or choker alone. A torrent's keys come from its peer slab.
    pub const fn from_raw(n: usize) -> PeerKey {
        PeerKey(n)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connection in the event loop: the key of the session's connection slab,
/// which is also its `mio::Token`. The core keeps it on each peer only to
/// name connections to close; the shell alone turns it into a `mio::Token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnToken(pub usize);

impl fmt::Display for ConnToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A piece of a torrent's data, counted from 0 (see
/// [`crate::geometry::Geometry`] for its length and offset). The wire's
/// `u32` is wrapped at the boundary; a `PieceIndex` is not by itself known
/// to be in range: [`crate::geometry::Geometry`] checks that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(pub u32);

impl PieceIndex {
    /// The piece as an index into a per-piece table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl From<PieceIndex> for u32 {
    fn from(p: PieceIndex) -> u32 {
        p.0
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
