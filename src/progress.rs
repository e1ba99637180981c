//! The status line: redrawn in place on a terminal (a few times a second),
//! a plain line every few seconds otherwise, and the final summary.

use crate::torrent::Status;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Decide from whether stderr is a terminal.
    Auto,
    /// Nothing (`--quiet`).
    Off,
    /// `@status` lines on stdout twice a second, for a program to read
    /// (the demo reads its children this way).
    Machine,
}

/// Prints progress to stderr.
pub struct Progress {
    mode: ProgressMode,
    tty: bool,
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_duration(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// `TAG have num_pieces downloaded uploaded down_rate up_rate peers`.
pub fn machine_line(tag: &str, s: &Status) -> String {
    format!(
        "{tag} {} {} {} {} {} {} {}",
        s.have,
        s.num_pieces,
        s.totals.downloaded,
        s.totals.uploaded,
        s.down_rate,
        s.up_rate,
        s.peers
    )
}

/// One status line (no newline).
pub fn status_line(s: &Status) -> String {
    let pct = if s.total_len == 0 {
        100.0
    } else {
        100.0 * (s.total_len - s.left) as f64 / s.total_len as f64
    };
    let eta = match s.left.checked_div(s.down_rate) {
        _ if s.left == 0 => "done".to_string(),
        Some(secs) => human_duration(secs),
        None => "-".to_string(),
    };
    format!(
        "{pct:5.1}% {}/{} pieces  down {}/s  up {}/s  peers {}  eta {eta}",
        s.have,
        s.num_pieces,
        human_bytes(s.down_rate),
        human_bytes(s.up_rate),
        s.peers
    )
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            tty: std::io::stderr().is_terminal(),
            enabled: mode != ProgressMode::Off,
            last: None,
            drawn: false,
        }
    }

    /// Show `s` if it is time to.
    /// Is a line due now? Lets the caller skip building a [`Status`] (an
    /// O(pieces) walk) on the many loop turns that print nothing.
    pub fn due(&self, now: Instant) -> bool {
        self.enabled
            && self
                .last
                .is_none_or(|t| now.duration_since(t) >= self.every())
    }

    /// When the next line is due (None when progress is off): the loop
    /// wakes for it.
    pub fn next_due(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |t| t + self.every()))
    }

    fn every(&self) -> Duration {
        match (self.mode, self.tty) {
            (ProgressMode::Machine, _) => Duration::from_millis(500),
            (_, true) => Duration::from_millis(250),
            (_, false) => Duration::from_secs(5),
        }
    }

    pub fn update(&mut self, s: &Status, now: Instant) {
        if !self.due(now) {
            return;
        }
        self.last = Some(now);
        if self.mode == ProgressMode::Machine {
            crate::outln!("{}", machine_line("@status", s));
            return;
        }
        let line = status_line(s);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// End the live line so that later output starts on a fresh line.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
