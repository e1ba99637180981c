//! The fatal error: what ends the program, with its exit code. Peer
//! misbehaviour never becomes one of these.

/// A fatal error.
#[derive(Debug)]
pub enum Error {
    /// Bad input or usage (a malformed torrent, a bad flag): exit code 2.
    Input(String),
    /// The engine could not go on (cannot bind, cannot open files): exit code 1.
    Runtime(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Input(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
