//! Printing that never panics. `println!` panics when stdout is a closed
//! pipe (`piecemeal info T | head -1`) and `eprintln!` when stderr is
//! closed; every output path of the program goes through [`outln!`] and
//! [`errln!`] instead, which drop what cannot be written and remember that
//! stdout is gone ([`stdout_closed`]).
//!
//! The live status line is drawn here too ([`live_draw`]): everything else
//! written to the terminal — `outln!`, `errln!`, and every log line (the
//! logger is wrapped in [`LiveLineLogger`]) — first lifts the live line off
//! (`\r` and erase-line) and puts it back after, so a log line never lands
//! on the status line and the status line always stays the last one.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// The live line on stderr: its text, and whether it is on screen now.
struct Live {
    text: String,
    shown: bool,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    text: String::new(),
    shown: false,
});

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Carriage return, then erase to the end of the line.
const CLEAR_LINE: &str = "\r\x1b[K";

/// Draw `text` (one line, no newline, already fitted to the terminal's
/// width) as the live status line on stderr, replacing the one shown.
pub fn live_draw(text: &str) {
    let mut l = live();
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{CLEAR_LINE}{text}").and_then(|()| e.flush());
    l.text.clear();
    l.text.push_str(text);
    l.shown = true;
}

/// Leave the live line on screen as an ordinary line (end it with a
/// newline): what is written next starts below it.
pub fn live_end() {
    let mut l = live();
    if l.shown {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e).and_then(|()| e.flush());
        l.shown = false;
        l.text.clear();
    }
}

/// Run `write` (which writes whole lines to the terminal) with the live line
/// lifted off first and drawn again after. `write` must not print through
/// this module (the live line's lock is held).
pub fn around_live<T>(write: impl FnOnce() -> T) -> T {
    let l = live();
    if l.shown {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "{CLEAR_LINE}").and_then(|()| e.flush());
    }
    let r = write();
    if l.shown {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "{}", l.text).and_then(|()| e.flush());
    }
    r
}

/// Write `args` to stdout (and flush); errors are swallowed and recorded.
pub fn out(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    around_live(|| {
        let mut o = std::io::stdout().lock();
        if o.write_fmt(args).and_then(|()| o.flush()).is_err() {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    });
}

/// Write `args` to stderr; errors are swallowed.
pub fn err(args: std::fmt::Arguments<'_>) {
    around_live(|| {
        let mut e = std::io::stderr().lock();
        let _ = e.write_fmt(args).and_then(|()| e.flush());
    });
}

/// The width of the terminal on file descriptor `fd` (`TIOCGWINSZ`), or
/// `None` when it is not a terminal or does not say.
pub fn terminal_width(fd: i32) -> Option<usize> {
    // SAFETY: an all-zero winsize is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ only writes the winsize we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// An OS error in plain words: "No such file or directory (os error 2)"
/// becomes "no such file or folder". Kinds people meet get their own
/// wording; others keep the system's text without the `(os error N)` tail.
pub fn plain_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    if e.raw_os_error().is_none() {
        // Made by this program, with its own words.
        return e.to_string();
    }
    let plain = match e.kind() {
        K::NotFound => "no such file or folder",
        K::PermissionDenied => "permission denied",
        K::AlreadyExists => "already exists",
        K::AddrInUse => "the port is in use by another program",
        K::AddrNotAvailable => "that address is not one of this machine's",
        K::NotADirectory => "not a folder",
        K::IsADirectory => "is a folder",
        K::StorageFull => "no space left on the disk",
        K::ReadOnlyFilesystem => "the file system is read-only",
        K::ConnectionRefused => "connection refused",
        _ => return strip_os_error(&e.to_string()),
    };
    plain.to_string()
}

/// `text` without the " (os error N)" tails that `std::io::Error` adds.
pub fn strip_os_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail[digits..].starts_with(')') {
            rest = &tail[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// A write to stdout failed (the reader went away): further output is
/// dropped.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` that cannot panic.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` that cannot panic.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::out(format_args!($($t)*)) };
}

/// `eprintln!` that cannot panic.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::output::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// `s` with control characters (C0, DEL, C1: ESC, BEL, CR, LF…) and bidi
/// overrides escaped (`\u{1b}`), so text from outside — a torrent's name, a
/// tracker's message, a peer id — can neither drive the terminal nor forge
/// log lines. Tabs are kept.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A logger that escapes control characters in every message before the
/// inner logger (simplelog's) writes it: log lines quote peers and
/// trackers, and no byte they send may reach the terminal raw. It also
/// drops the " (os error N)" tails of system errors.
pub struct EscapingLogger<L: log::Log>(pub L);

impl<L: log::Log> log::Log for EscapingLogger<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        let mut text = record.args().to_string();
        if text.contains(" (os error ") {
            text = strip_os_error(&text);
        }
        let safe = escape_controls(&text);
        self.0.log(
            &log::Record::builder()
                .args(format_args!("{safe}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// A terminal logger that lifts the live status line off before each log
/// line and puts it back after (see [`around_live`]).
pub struct LiveLineLogger<L>(pub Box<L>);

impl<L: simplelog::SharedLogger> log::Log for LiveLineLogger<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.0.enabled(record.metadata()) {
            around_live(|| self.0.log(record));
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

impl<L: simplelog::SharedLogger + 'static> simplelog::SharedLogger for LiveLineLogger<L> {
    fn level(&self) -> log::LevelFilter {
        self.0.level()
    }

    fn config(&self) -> Option<&simplelog::Config> {
        self.0.config()
    }

    fn as_log(self: Box<Self>) -> Box<dyn log::Log> {
        Box::new(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(
            escape_controls("plain name.iso"),
            Cow::Borrowed(_)
        ));
        let evil = "a\u{1b}[2Jb\u{7}c\nd\u{9b}e\u{202e}f\tg";
        let safe = escape_controls(evil);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\t'), "{safe}");
        assert_eq!(safe, "a\\u{1b}[2Jb\\u{7}c\\nd\\u{9b}e\\u{202e}f\tg");
    }

    #[test]
    fn os_error_tails_are_dropped() {
        assert_eq!(
            strip_os_error("open /x: No such file or directory (os error 2)"),
            "open /x: No such file or directory"
        );
        assert_eq!(strip_os_error("a (os error 98) b (os error 1)"), "a b");
        assert_eq!(strip_os_error("kept (os error x)"), "kept (os error x)");
        let e = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(plain_io(&e), "the port is in use by another program");
        let e = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(!plain_io(&e).contains("os error"), "{}", plain_io(&e));
    }
}
