//! `piecemeal demo`: a whole swarm on this machine (being written).

use crate::error::Error;
use std::path::PathBuf;

pub fn run(_size: u64, _leechers: usize, _dir: Option<PathBuf>) -> Result<(), Error> {
    Err(Error::Runtime("demo is not built yet".into()))
}
