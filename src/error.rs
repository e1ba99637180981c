//! The fatal error: what ends the program, with its exit code. Peer
//! misbehaviour never becomes one of these.
//!
//! Exit codes: 0 done, 1 runtime failure, 2 bad input or usage, 3 a
//! download stopped before it was complete.

/// A download stopped (Ctrl-C, SIGTERM) before every piece was verified
/// and written.
pub const EXIT_INCOMPLETE: i32 = 3;

/// A fatal error.
#[derive(Debug)]
pub enum Error {
    /// Bad input or usage (a malformed torrent, a bad flag): exit code 2.
    Input(String),
    /// The engine could not go on (cannot bind, cannot open files): exit code 1.
    Runtime(String),
    /// Stopped (Ctrl-C, SIGTERM) before the work was done: exit code 3.
    Stopped(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Runtime(_) => 1,
            Error::Stopped(_) => EXIT_INCOMPLETE,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Input(m) | Error::Runtime(m) | Error::Stopped(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
