//! Progress output: a live status line on a terminal (redrawn in place a
//! few times a second, fitted to the terminal's width), a plain line every
//! few seconds otherwise, one JSON object per interval with `--json`, and
//! the compact `@status` lines of `--machine`.
//!
//! Rendering is pure: [`render`] and [`json_object`] turn a [`View`] (and a
//! width) into text, and [`RateWindow`] turns byte counters sampled at
//! given instants into rates, so tests drive them with fixed widths and a
//! fake clock. [`Progress`] decides when to draw and where; the terminal
//! side (lifting the live line off for log lines) is in [`crate::output`].

use crate::torrent::Status;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Decide from whether stderr is a terminal.
    Auto,
    /// Nothing (`--quiet`).
    Off,
    /// `@status` lines on stdout twice a second, for a program to read
    /// (the demo and the integration tests read their children this way).
    Machine,
    /// One JSON object per second on stdout (`--json`).
    Json,
}

/// Rates are measured over about this much of the recent past.
pub const RATE_WINDOW: Duration = Duration::from_secs(4);

/// Download and upload rates over the last [`RATE_WINDOW`], from the
/// session's byte counters sampled whenever a line is drawn. A rate is
/// never the 0 B/s of an empty second while data arrives in bursts.
#[derive(Clone, Debug, Default)]
pub struct RateWindow {
    /// `(when, bytes received, bytes sent)`, oldest first. The first is the
    /// newest sample at least `RATE_WINDOW` old (or the oldest there is).
    samples: VecDeque<(Instant, u64, u64)>,
}

impl RateWindow {
    /// Most samples kept (a line is drawn at most every 250 ms).
    const MAX: usize = 64;

    /// Record the counters at `now`.
    pub fn add(&mut self, now: Instant, received: u64, sent: u64) {
        self.samples.push_back((now, received, sent));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|s| now.duration_since(s.0) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if self.samples.len() > Self::MAX {
            self.samples.pop_front();
        }
    }

    /// `(down, up)` in bytes per second; zero until two samples are apart.
    pub fn rates(&self) -> (u64, u64) {
        let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) else {
            return (0, 0);
        };
        let secs = b.0.duration_since(a.0).as_secs_f64();
        if secs < 0.1 {
            return (0, 0);
        }
        let per_sec = |x: u64, y: u64| (y.saturating_sub(x) as f64 / secs) as u64;
        (per_sec(a.1, b.1), per_sec(a.2, b.2))
    }
}

/// Why nothing may be happening, for the status line (filled by the event
/// loop; see [`Warnings::messages`]). Plain data, cheap to copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warnings {
    /// No tracker to ask and no `--peer` given: only peers that find us
    /// can connect.
    pub no_peer_source: bool,
    /// A `--peer` we cannot connect to (the first such, and whether it
    /// refused), and how many others fail too.
    pub unreachable_peer: Option<(SocketAddr, bool)>,
    pub more_unreachable: usize,
    /// Every tracker failed in its last round: how many trackers there are.
    pub trackers_failing: Option<usize>,
    /// Why the last of them failed (empty when unknown).
    pub last_tracker_error: Note,
    /// For a while now, no connected peer has had a piece we still need
    /// (the only seeder left, or nobody is there).
    pub stalled: bool,
    /// Not a warning: nodes in the DHT's routing table (None: no DHT),
    /// carried here to the status line.
    pub dht_nodes: Option<usize>,
}

/// A short text that keeps [`Warnings`] `Copy`: at most [`Note::CAP`]
/// bytes, cut at a character boundary (with `…`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Note {
    len: u8,
    buf: [u8; Note::CAP],
}

impl Note {
    pub const CAP: usize = 96;

    pub fn new(s: &str) -> Note {
        let mut n = Note::default();
        let mut end = s.len();
        if end > Note::CAP {
            // Room for the ellipsis (3 bytes).
            end = Note::CAP - 3;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
        }
        let text = s.get(..end).unwrap_or_default().as_bytes();
        let ell = if end < s.len() { "…".as_bytes() } else { &[] };
        let mut len = 0;
        for &b in text.iter().chain(ell) {
            if let Some(slot) = n.buf.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
        n.len = len as u8;
        n
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Note {
    fn default() -> Note {
        Note {
            len: 0,
            buf: [0; Note::CAP],
        }
    }
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The kinds of warning, for logging each kind once.
const KINDS: usize = 4;

impl Warnings {
    pub fn is_empty(&self) -> bool {
        *self == Warnings::default()
    }

    /// What to tell the user, most useful first, with the kind's index.
    /// `downloading`: pieces are still wanted (else only the warnings that
    /// matter to a seeder are given). `peers`: connected peers. Nothing is
    /// said while data flows: only a download that is stalled, or a
    /// session without peers, is waiting for something.
    pub fn messages(&self, downloading: bool, peers: usize) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let waiting = peers == 0 || (downloading && self.stalled);
        if !waiting {
            return out;
        }
        if let Some((addr, refused)) = self.unreachable_peer {
            let mut m = if refused {
                format!("peer {addr} refuses connections")
            } else {
                format!("cannot connect to peer {addr}")
            };
            if self.more_unreachable > 0 {
                let _ = write!(m, " (and {} more)", self.more_unreachable);
            }
            m.push_str("; retrying");
            out.push((0, m));
        }
        if let Some(n) = self.trackers_failing {
            let mut m = if n == 1 {
                "tracker failing".to_string()
            } else {
                format!("trackers: all {n} failing")
            };
            if !self.last_tracker_error.is_empty() {
                let _ = write!(m, " (last: {})", self.last_tracker_error.as_str());
            }
            m.push_str("; retrying");
            out.push((1, m));
        }
        if self.no_peer_source && downloading {
            out.push((
                2,
                "no tracker and no --peer: waiting for peers to connect to us".to_string(),
            ));
        }
        if self.stalled && downloading && out.is_empty() {
            out.push((
                3,
                match peers {
                    0 => "no peers connected; waiting for peers".to_string(),
                    1 => "the connected peer has none of the missing pieces; waiting for a seeder"
                        .to_string(),
                    n => format!(
                        "none of the {n} connected peers has the missing pieces; waiting for a seeder"
                    ),
                },
            ));
        }
        out
    }
}

/// What the status line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Verifying the data already on disk, at start.
    Checking,
    /// Pieces are missing and wanted (or the download just finished).
    Downloading,
    /// Serving what we have.
    Seeding,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::Downloading => "downloading",
            Phase::Seeding => "seeding",
        }
    }
}

/// Everything a status line or a JSON object shows.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub phase: Phase,
    /// Bytes verified (while checking: bytes checked so far).
    pub done: u64,
    pub total: u64,
    pub have: u32,
    pub num_pieces: u32,
    /// Rates over the last few seconds.
    pub down_rate: u64,
    pub up_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub seeds: usize,
    pub elapsed: Duration,
    /// `--seed-ratio`.
    pub ratio_goal: Option<f64>,
    pub warnings: Vec<String>,
    /// Nodes in the DHT's routing table (None: no DHT).
    pub dht_nodes: Option<usize>,
    /// While a magnet link's metadata is fetched: pieces of it received,
    /// of all, and peers offering it.
    pub metadata: Option<(u32, u32, usize)>,
}

impl View {
    fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.done as f64 / self.total as f64
        }
    }

    /// Seconds to go at the current rate (`None`: no rate).
    fn eta(&self) -> Option<u64> {
        let left = self.total.saturating_sub(self.done);
        if left == 0 {
            Some(0)
        } else {
            left.checked_div(self.down_rate).map(|s| s.max(1))
        }
    }

    /// Uploaded bytes per byte of the torrent.
    fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.uploaded as f64 / self.total as f64
        }
    }
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

/// `45s`, `3m05s`, `2h07m`.
pub fn human_duration(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// `1 peer`, `3 peers`, `0 seeds`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `TAG have num_pieces downloaded uploaded down_rate up_rate peers`: the
/// `--machine` line.
pub fn machine_line(tag: &str, s: &Status, down_rate: u64, up_rate: u64) -> String {
    format!(
        "{tag} {} {} {} {} {down_rate} {up_rate} {}",
        s.have, s.num_pieces, s.totals.downloaded, s.totals.uploaded, s.peers
    )
}

/// Widest progress bar drawn, inside its brackets.
const BAR_MAX: usize = 30;
/// Narrowest bar worth drawing.
const BAR_MIN: usize = 10;

/// One status line (no newline). With a `width`, the line fits in
/// `width - 3` columns (see below):
/// the least useful parts are left out first, a progress bar is added
/// when there is room for one, and the warning is cut last. Without a
/// width (a log file, a pipe) everything is shown and no bar.
pub fn render(v: &View, width: Option<usize>) -> String {
    // (priority: 0 never left out, higher left out first; text)
    let mut parts: Vec<(u8, String)> = Vec::new();
    let pct = format!("{:5.1}%", v.percent());
    let bytes = format!("{}/{}", human_bytes(v.done), human_bytes(v.total));
    let elapsed = format!("elapsed {}", human_duration(v.elapsed.as_secs()));
    match v.phase {
        Phase::Checking => {
            parts.push((0, "checking".into()));
            parts.push((0, pct));
            parts.push((1, bytes));
            parts.push((3, elapsed));
        }
        Phase::Downloading if v.metadata.is_some() && v.total == 0 => {
            let (got, all, offering) = v.metadata.unwrap_or_default();
            parts.push((0, "fetching metadata".into()));
            if all > 0 {
                parts.push((0, format!("{got}/{all} pieces")));
            }
            parts.push((1, count(offering, "peer offers it", "peers offer it")));
            parts.push((2, peers_text(v)));
            parts.push((3, elapsed));
        }
        Phase::Downloading => {
            parts.push((0, pct));
            parts.push((2, bytes));
            parts.push((0, format!("down {}/s", human_bytes(v.down_rate))));
            parts.push((3, format!("up {}/s", human_bytes(v.up_rate))));
            parts.push((1, peers_text(v)));
            if let Some(n) = v.dht_nodes {
                parts.push((3, format!("dht {n}")));
            }
            parts.push((4, elapsed));
            parts.push((
                0,
                match v.eta() {
                    Some(0) => "done".to_string(),
                    Some(s) => format!("eta {}", human_duration(s)),
                    None => "eta -".to_string(),
                },
            ));
        }
        Phase::Seeding => {
            parts.push((0, "seeding".into()));
            if v.done < v.total {
                parts.push((1, pct));
            }
            parts.push((0, format!("up {}/s", human_bytes(v.up_rate))));
            parts.push((2, format!("uploaded {}", human_bytes(v.uploaded))));
            parts.push((
                1,
                match v.ratio_goal {
                    Some(goal) => format!("ratio {:.2} of {goal:.2}", v.ratio()),
                    None => format!("ratio {:.2}", v.ratio()),
                },
            ));
            parts.push((1, count(v.peers, "peer", "peers")));
            if let Some(n) = v.dht_nodes {
                parts.push((3, format!("dht {n}")));
            }
            parts.push((4, elapsed));
        }
    }
    let warning = (!v.warnings.is_empty()).then(|| format!("! {}", v.warnings.join("; ")));
    let Some(width) = width else {
        let mut line = join(&parts);
        if let Some(w) = warning {
            line.push_str("  ");
            line.push_str(&w);
        }
        return line;
    };
    // The last column would make some terminals wrap, and a Ctrl-C echoes
    // `^C` after the line: both must stay on the line to be cleared.
    let room = width.saturating_sub(3);
    let len = |parts: &[(u8, String)]| {
        parts.iter().map(|p| p.1.chars().count()).sum::<usize>() + 2 * parts.len().saturating_sub(1)
    };
    // The warning needs some room: leave parts out for at least 30 columns of it.
    let warn_room = warning
        .as_ref()
        .map_or(0, |w| w.chars().count().min(30) + 2);
    while len(&parts) + warn_room > room {
        let Some(i) = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.0 > 0)
            .max_by_key(|(i, p)| (p.0, *i))
            .map(|(i, _)| i)
        else {
            break;
        };
        parts.remove(i);
    }
    // A bar after the first numbers, when it fits.
    let spare =
        room.saturating_sub(len(&parts) + warning.as_ref().map_or(0, |w| w.chars().count() + 2));
    if v.phase != Phase::Seeding && spare >= BAR_MIN + 4 {
        let inner = (spare - 4).min(BAR_MAX);
        let filled = ((v.percent() / 100.0) * inner as f64).floor() as usize;
        let filled = filled.min(inner);
        let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(inner - filled));
        let at = if v.phase == Phase::Checking { 2 } else { 1 };
        parts.insert(at.min(parts.len()), (0, bar));
    }
    let mut line = join(&parts);
    if let Some(w) = warning {
        line.push_str("  ");
        line.push_str(&w);
    }
    fit(&line, room)
}

fn peers_text(v: &View) -> String {
    format!(
        "{} ({})",
        count(v.peers, "peer", "peers"),
        count(v.seeds, "seed", "seeds")
    )
}

fn join(parts: &[(u8, String)]) -> String {
    parts
        .iter()
        .map(|p| p.1.as_str())
        .collect::<Vec<_>>()
        .join("  ")
}

/// `line` cut to `room` columns, ending in `…` when cut.
pub fn fit(line: &str, room: usize) -> String {
    if line.chars().count() <= room {
        return line.to_string();
    }
    let mut out: String = line.chars().take(room.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One JSON object (one line, no newline) for `--json`: `event` is
/// `"status"` for the periodic objects and `"done"` for the last one, which
/// adds the `extra` fields. The fields are listed in the README.
pub fn json_object(event: &str, v: &View, extra: &[(&str, String)]) -> String {
    let mut o = String::with_capacity(400);
    let _ = write!(
        o,
        "{{\"event\":{},\"state\":{},\"elapsed\":{:.1},\"percent\":{:.1},\
         \"bytes_done\":{},\"bytes_total\":{},\"pieces_done\":{},\"pieces_total\":{},\
         \"downloaded\":{},\"uploaded\":{},\"down_rate\":{},\"up_rate\":{},\
         \"peers\":{},\"seeds\":{},\"ratio\":{:.3},\"eta\":{}",
        json_string(event),
        json_string(v.phase.name()),
        v.elapsed.as_secs_f64(),
        v.percent(),
        v.done,
        v.total,
        v.have,
        v.num_pieces,
        v.downloaded,
        v.uploaded,
        v.down_rate,
        v.up_rate,
        v.peers,
        v.seeds,
        v.ratio(),
        match v.eta() {
            Some(s) if v.phase != Phase::Seeding => s.to_string(),
            _ => "null".to_string(),
        }
    );
    match v.dht_nodes {
        Some(n) => {
            let _ = write!(o, ",\"dht_nodes\":{n}");
        }
        None => o.push_str(",\"dht_nodes\":null"),
    }
    o.push_str(",\"warnings\":[");
    for (i, w) in v.warnings.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&json_string(w));
    }
    o.push(']');
    for (k, val) in extra {
        let _ = write!(o, ",{}:{val}", json_string(k));
    }
    o.push('}');
    o
}

/// Shows progress: decides when a line is due, keeps the rate window and
/// the warnings already logged, and draws on stderr (terminal or plain
/// lines) or stdout (`--json`, `--machine`).
pub struct Progress {
    mode: ProgressMode,
    tty: bool,
    last: Option<Instant>,
    start: Option<Instant>,
    rates: RateWindow,
    ratio_goal: Option<f64>,
    /// A `seed` session: nothing is downloaded, missing pieces included.
    seeding_only: bool,
    /// Warning kinds logged already (each is logged once).
    logged: [bool; KINDS],
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            tty: std::io::stderr().is_terminal(),
            last: None,
            start: None,
            rates: RateWindow::default(),
            ratio_goal: None,
            seeding_only: false,
            logged: [false; KINDS],
        }
    }

    /// Show the ratio against this `--seed-ratio` goal while seeding.
    pub fn with_ratio_goal(mut self, goal: Option<f64>) -> Progress {
        self.ratio_goal = goal;
        self
    }

    /// A `seed` session: shown as seeding throughout, and missing pieces
    /// are not waited for.
    pub fn seeding_only(mut self, yes: bool) -> Progress {
        self.seeding_only = yes;
        self
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn interval(&self) -> Duration {
        match (self.mode, self.tty) {
            (ProgressMode::Machine, _) => Duration::from_millis(500),
            (ProgressMode::Json, _) => Duration::from_secs(1),
            (_, true) => Duration::from_millis(250),
            (_, false) => Duration::from_secs(5),
        }
    }

    /// Is a line due now? Lets the caller skip building a [`Status`] (an
    /// O(pieces) walk) on the many loop turns that print nothing.
    pub fn due(&self, now: Instant) -> bool {
        self.mode != ProgressMode::Off
            && self
                .last
                .is_none_or(|t| now.duration_since(t) >= self.interval())
    }

    /// When the next line is due (None when progress is off): the loop
    /// wakes for it.
    pub fn next_due(&self) -> Option<Instant> {
        if self.mode == ProgressMode::Off {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |t| t + self.interval()))
    }

    fn elapsed(&mut self, now: Instant) -> Duration {
        now.duration_since(*self.start.get_or_insert(now))
    }

    /// Show how far the start-up check of the data on disk is: `done` of
    /// `total` bytes checked. Call when [`due`](Self::due).
    pub fn checking(&mut self, done: u64, total: u64, num_pieces: u32, now: Instant) {
        if self.mode == ProgressMode::Machine {
            return;
        }
        self.last = Some(now);
        let elapsed = self.elapsed(now);
        if done == 0 && !(self.mode == ProgressMode::Auto && self.tty) {
            // Plain lines and JSON only for a check that takes a while.
            return;
        }
        let view = View {
            phase: Phase::Checking,
            done,
            total,
            have: 0,
            num_pieces,
            down_rate: 0,
            up_rate: 0,
            downloaded: 0,
            uploaded: 0,
            peers: 0,
            seeds: 0,
            elapsed,
            ratio_goal: None,
            warnings: Vec::new(),
            dht_nodes: None,
            metadata: None,
        };
        self.show(&view);
    }

    /// The view of a session's status now (feeds the rate window).
    pub fn view(&mut self, s: &Status, now: Instant, last: bool) -> View {
        self.rates.add(now, s.totals.received, s.totals.uploaded);
        let downloading = s.left > 0 && !self.seeding_only;
        let (down_rate, up_rate) = self.rates.rates();
        // The last line of a download is the download's (100 % when done).
        let phase = if downloading || (last && !self.seeding_only) {
            Phase::Downloading
        } else {
            Phase::Seeding
        };
        let messages = s.warnings.messages(downloading, s.peers);
        for (kind, m) in &messages {
            if let Some(seen) = self.logged.get_mut(*kind)
                && !*seen
            {
                *seen = true;
                log::warn!("{m}");
            }
        }
        View {
            phase,
            done: s.total_len.saturating_sub(s.left),
            total: s.total_len,
            have: s.have,
            num_pieces: s.num_pieces,
            down_rate,
            up_rate,
            downloaded: s.totals.downloaded,
            uploaded: s.totals.uploaded,
            peers: s.peers,
            seeds: s.seeds,
            elapsed: self.elapsed(now),
            ratio_goal: self.ratio_goal,
            warnings: messages.into_iter().map(|(_, m)| m).collect(),
            dht_nodes: s.warnings.dht_nodes,
            metadata: s.fetching,
        }
    }

    /// Show `s`. Call when [`due`](Self::due).
    pub fn update(&mut self, s: &Status, now: Instant) {
        self.last = Some(now);
        if self.mode == ProgressMode::Machine {
            self.rates.add(now, s.totals.received, s.totals.uploaded);
            let (down, up) = self.rates.rates();
            crate::outln!("{}", machine_line("@status", s, down, up));
            return;
        }
        if let Some((done, pieces)) = s.checking
            && pieces > 0
        {
            // A torrent added while running is checking its data.
            let bytes = s.total_len / u64::from(pieces) * u64::from(done);
            self.checking(bytes, s.total_len, pieces, now);
            return;
        }
        let view = self.view(s, now, false);
        self.show(&view);
    }

    fn show(&mut self, view: &View) {
        match self.mode {
            ProgressMode::Off | ProgressMode::Machine => {}
            ProgressMode::Json => crate::outln!("{}", json_object("status", view, &[])),
            ProgressMode::Auto if self.tty => {
                let width = crate::output::terminal_width(2).unwrap_or(80);
                crate::output::live_draw(&render(view, Some(width)));
            }
            ProgressMode::Auto => crate::errln!("{}", render(view, None)),
        }
    }

    /// The session ended: draw the final state (100 % after a finished
    /// download) and end the live line, so that the summary starts on a
    /// line of its own.
    pub fn finish(&mut self, s: Option<&Status>, now: Instant) {
        if self.mode == ProgressMode::Auto
            && let Some(s) = s
        {
            let view = self.view(s, now, true);
            self.show(&view);
        }
        crate::output::live_end();
    }

    /// The rates of the window now (for the final `--machine` line).
    pub fn rates(&self) -> (u64, u64) {
        self.rates.rates()
    }
}

#[cfg(test)]
mod tests;
