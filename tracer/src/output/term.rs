//! What the terminal allows: table width, colour, and a live status line.
//!
//! - Width: `$COLUMNS`, else the terminal's width when stdout is one (120 if
//!   it cannot be read); `None` — the full table — for `-o wide` and for
//!   pipes and files without `$COLUMNS`, so scripts see every column.
//! - Colour: only when stdout is a terminal and `$NO_COLOR` is unset or empty
//!   (<https://no-color.org>) and `$TERM` is not `dumb`.
//! - The status line: one line on stderr, redrawn in place at most once a
//!   second, only when stderr is a terminal.

use std::{
    io::{IsTerminal as _, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// Width used when stdout is a terminal whose size cannot be read.
pub const DEFAULT_WIDTH: usize = 120;

/// The width tables are fitted to, or `None` for the full table (see the module docs).
#[must_use]
pub fn table_width(wide: bool) -> Option<usize> {
    if wide {
        return None;
    }
    width_from(std::env::var("COLUMNS").ok().as_deref(), std::io::stdout().is_terminal(), || tty_columns(1))
}

fn width_from(columns: Option<&str>, is_tty: bool, tty: impl FnOnce() -> Option<usize>) -> Option<usize> {
    if let Some(c) = columns.and_then(|c| c.trim().parse::<usize>().ok()).filter(|&c| c > 0) {
        return Some(c);
    }
    is_tty.then(|| tty().unwrap_or(DEFAULT_WIDTH))
}

/// The column count of the terminal on `fd`, if it is one and says.
#[must_use]
pub fn tty_columns(fd: i32) -> Option<usize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &raw mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// Whether stdout gets colour.
#[must_use]
pub fn colour_stdout() -> bool {
    colour_from(std::env::var_os("NO_COLOR").as_deref(), std::env::var("TERM").ok().as_deref(), || {
        std::io::stdout().is_terminal()
    })
}

fn colour_from(no_color: Option<&std::ffi::OsStr>, term: Option<&str>, is_tty: impl FnOnce() -> bool) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) || term == Some("dumb") {
        return false;
    }
    is_tty()
}

/// `1.5 MiB`, `512 B`.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `1:05` (minutes:seconds) or `1:02:05`.
#[must_use]
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `1 event`, `3 events`.
#[must_use]
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line of live status on stderr (see the module docs). Output written
/// to the same terminal through [`StatusLine::guard`] erases it first; the
/// next [`StatusLine::tick`] draws it again.
pub struct StatusLine {
    on: bool,
    start: Instant,
    last: Option<Instant>,
    visible: Arc<AtomicBool>,
    /// Erase before stdout writes: only when stdout is the same terminal.
    stdout_tty: bool,
    prefix: String,
    duration: Option<Duration>,
}

impl StatusLine {
    /// A status line for `what` (`ktrace record`), drawn only when stderr is
    /// a terminal; `duration` (if the run has one) is shown next to the elapsed time.
    #[must_use]
    pub fn new(what: &str, duration: Option<Duration>) -> Self {
        Self::with_terminal(what, duration, std::io::stderr().is_terminal())
    }

    /// A status line that never draws.
    #[must_use]
    pub fn off() -> Self {
        Self::with_terminal("", None, false)
    }

    fn with_terminal(what: &str, duration: Option<Duration>, on: bool) -> Self {
        Self {
            on,
            start: Instant::now(),
            last: None,
            visible: Arc::new(AtomicBool::new(false)),
            stdout_tty: std::io::stdout().is_terminal(),
            prefix: what.to_owned(),
            duration,
        }
    }

    /// Whether it draws at all.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Time since the run started.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Draws `text()` when a second has passed since the last draw, or the
    /// line was erased by output since. `text` is only called then.
    pub fn tick(&mut self, text: impl FnOnce() -> String) {
        if !self.on {
            return;
        }
        // The first draw after a second: short runs never show one.
        let due = self.last.map_or(self.start.elapsed(), |t| t.elapsed()) >= Duration::from_secs(1);
        let erased = self.last.is_some() && !self.visible.load(Ordering::Relaxed);
        if !(due || erased) {
            return;
        }
        if due {
            self.last = Some(Instant::now());
        }
        let el = self.start.elapsed();
        let time = match self.duration {
            Some(d) => format!("{} of {}", clock(el), clock(d)),
            None => clock(el),
        };
        let mut line = format!("{}: {time} · {}", self.prefix, text());
        let width = tty_columns(2).unwrap_or(DEFAULT_WIDTH).saturating_sub(1);
        if line.chars().count() > width {
            line = line.chars().take(width).collect();
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{line}");
        let _ = e.flush();
        self.visible.store(true, Ordering::Relaxed);
    }

    /// Erases the line (before a final summary).
    pub fn clear(&self) {
        erase(&self.visible);
    }

    /// `w` (stdout), erasing the status line before anything is written to it.
    pub fn guard<W: Write>(&self, w: W) -> Guarded<W> {
        Guarded { inner: w, visible: (self.on && self.stdout_tty).then(|| Arc::clone(&self.visible)) }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}

fn erase(visible: &AtomicBool) {
    if visible.swap(false, Ordering::Relaxed) {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K");
        let _ = e.flush();
    }
}

/// A writer that erases the status line before writing (see [`StatusLine::guard`]).
pub struct Guarded<W> {
    inner: W,
    visible: Option<Arc<AtomicBool>>,
}

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(v) = &self.visible {
            erase(v);
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_rules() {
        assert_eq!(width_from(Some("90"), false, || None), Some(90), "COLUMNS wins, even on a pipe");
        assert_eq!(width_from(Some("90"), true, || Some(200)), Some(90));
        assert_eq!(width_from(None, true, || Some(200)), Some(200), "the tty's width");
        assert_eq!(width_from(None, true, || None), Some(DEFAULT_WIDTH));
        assert_eq!(width_from(None, false, || Some(200)), None, "pipes get the full table");
        assert_eq!(width_from(Some("junk"), false, || None), None);
        assert_eq!(width_from(Some("0"), true, || Some(70)), Some(70));
    }

    #[test]
    fn colour_rules() {
        use std::ffi::OsStr;
        assert!(colour_from(None, Some("xterm"), || true));
        assert!(!colour_from(None, Some("xterm"), || false), "not a terminal");
        assert!(!colour_from(Some(OsStr::new("1")), Some("xterm"), || true), "NO_COLOR");
        assert!(colour_from(Some(OsStr::new("")), Some("xterm"), || true), "empty NO_COLOR does not count");
        assert!(!colour_from(None, Some("dumb"), || true));
    }

    #[test]
    fn plain_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(count(1, "event", "events"), "1 event");
        assert_eq!(count(0, "event", "events"), "0 events");
    }

    #[test]
    fn off_never_draws_or_erases() {
        let mut s = StatusLine::off();
        s.tick(|| unreachable!("not drawn"));
        let mut g = s.guard(Vec::new());
        g.write_all(b"x").unwrap();
        assert!(g.visible.is_none());
    }
}
