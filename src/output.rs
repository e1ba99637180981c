//! Printing that never panics. `println!` panics when stdout is a closed
//! pipe (`piecemeal info T | head -1`) and `eprintln!` when stderr is
//! closed; every output path of the program goes through [`outln!`] and
//! [`errln!`] instead, which drop what cannot be written and remember that
//! stdout is gone ([`stdout_closed`]).

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
