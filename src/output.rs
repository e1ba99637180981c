//! Printing that never panics. `println!` panics when stdout is a closed
//! pipe (`piecemeal info T | head -1`) and `eprintln!` when stderr is
//! closed; every output path of the program goes through [`outln!`] and
//! [`errln!`] instead, which drop what cannot be written and remember that
//! stdout is gone ([`stdout_closed`]).

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `args` to stdout (and flush); errors are swallowed and recorded.
pub fn out(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_fmt(args).and_then(|()| o.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Write `args` to stderr; errors are swallowed.
pub fn err(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.flush());
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
/// trackers, and no byte they send may reach the terminal raw.
pub struct EscapingLogger<L: log::Log>(pub L);

impl<L: log::Log> log::Log for EscapingLogger<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
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
}
