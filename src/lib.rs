//! piecemeal: a BitTorrent engine on one mio poll loop.

pub mod bencode;
pub mod storage;
pub mod bitfield;
pub mod choker;
pub mod geometry;
pub mod metainfo;
pub mod picker;
pub mod tracker;
pub mod wire;
