//! Tables that fit the terminal. Lines are printed as events arrive, so
//! column widths are chosen once, from the width alone: shrink the columns
//! that hold names towards a readable minimum, and when even that does not
//! fit, drop the column of least value and try again. Names longer than
//! their column lose their middle (`backend.cr…cluster.local`), where a
//! name carries the least.

use std::borrow::Cow;

/// Text alignment in a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left (numbers).
    Right,
}

/// One column of a table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// Width in the full table (`-o wide`, pipes), as it always was.
    pub full: usize,
    /// Width it gets when the terminal has room for it.
    pub natural: usize,
    /// Narrowest it is shrunk to before columns are dropped.
    pub min: usize,
    /// Order in which columns are dropped (1 first); 0 is never dropped.
    pub drop_rank: u8,
    /// Alignment.
    pub align: Align,
}

/// How columns are laid out: the full table, or fitted to a width.
#[derive(Clone, Debug)]
pub struct Layout {
    /// (column index, width) of the columns shown, in order.
    shown: Vec<(usize, usize)>,
    /// Whether cells are cut to their width (fitted) or may overflow (full).
    cut: bool,
}

impl Layout {
    /// Every column at its full width; cells overflow rather than lose text.
    #[must_use]
    pub fn full(cols: &[Column]) -> Self {
        Self { shown: cols.iter().enumerate().map(|(i, c)| (i, c.full)).collect(), cut: false }
    }

    /// `full` when `width` is `None`, else [`Self::fit`].
    #[must_use]
    pub fn new(cols: &[Column], width: Option<usize>) -> Self {
        width.map_or_else(|| Self::full(cols), |w| Self::fit(cols, w))
    }

    /// Columns fitted into `width` characters (see the module docs). When
    /// even the columns that are never dropped do not fit at their minimum,
    /// lines are wider than `width`.
    #[must_use]
    pub fn fit(cols: &[Column], width: usize) -> Self {
        let mut active: Vec<usize> = (0..cols.len()).collect();
        loop {
            let gaps = active.len().saturating_sub(1);
            let natural: usize = active.iter().map(|&i| cols[i].natural).sum::<usize>() + gaps;
            if natural <= width {
                return Self { shown: active.iter().map(|&i| (i, cols[i].natural)).collect(), cut: true };
            }
            let mins: usize = active.iter().map(|&i| cols[i].min).sum::<usize>() + gaps;
            if mins <= width {
                return Self { shown: distribute(cols, &active, width - mins), cut: true };
            }
            let victim = active
                .iter()
                .enumerate()
                .filter(|&(_, &i)| cols[i].drop_rank > 0)
                .min_by_key(|&(_, &i)| cols[i].drop_rank)
                .map(|(pos, _)| pos);
            match victim {
                Some(pos) => {
                    active.remove(pos);
                }
                None => return Self { shown: active.iter().map(|&i| (i, cols[i].min)).collect(), cut: true },
            }
        }
    }

    /// Whether column `i` is shown.
    #[must_use]
    pub fn shows(&self, i: usize) -> bool {
        self.shown.iter().any(|&(c, _)| c == i)
    }

    /// The header line.
    #[must_use]
    pub fn header(&self, cols: &[Column]) -> String {
        let cells: Vec<Cell<'_>> = cols.iter().map(|c| Cell::plain(c.header)).collect();
        self.line(cols, &cells)
    }

    /// One line of `cells` (one per column, shown or not), without a newline.
    #[must_use]
    pub fn line(&self, cols: &[Column], cells: &[Cell<'_>]) -> String {
        let mut out = String::with_capacity(self.shown.iter().map(|&(_, w)| w + 1).sum());
        for (n, &(i, w)) in self.shown.iter().enumerate() {
            if n > 0 {
                out.push(' ');
            }
            let cell = &cells[i];
            let text = match (self.cut, cell.alt) {
                (false, _) => Cow::Borrowed(cell.text),
                (true, Some(alt)) if cell.text.chars().count() > w => ellipsize_middle(alt, w),
                (true, _) => ellipsize_middle(cell.text, w),
            };
            let len = text.chars().count();
            let pad = w.saturating_sub(len);
            let last = n + 1 == self.shown.len();
            if cols[i].align == Align::Right {
                push_spaces(&mut out, pad);
            }
            match cell.style {
                Some(s) => {
                    out.push_str(s.start());
                    out.push_str(&text);
                    out.push_str(RESET);
                }
                None => out.push_str(&text),
            }
            if cols[i].align == Align::Left && !last {
                push_spaces(&mut out, pad);
            }
        }
        out
    }
}

fn push_spaces(s: &mut String, n: usize) {
    s.extend(std::iter::repeat_n(' ', n));
}

/// Widths for `active` columns: each its minimum plus a share of `extra`
/// in proportion to how much it wants beyond its minimum.
fn distribute(cols: &[Column], active: &[usize], extra: usize) -> Vec<(usize, usize)> {
    let want: usize = active.iter().map(|&i| cols[i].natural - cols[i].min).sum();
    let mut shown: Vec<(usize, usize)> = active
        .iter()
        .map(|&i| {
            let c = &cols[i];
            let share = (extra * (c.natural - c.min)).checked_div(want).unwrap_or(0);
            (i, (c.min + share).min(c.natural))
        })
        .collect();
    // Rounding leaves a few characters: give them out one by one.
    let mut left = extra - shown.iter().map(|&(i, w)| w - cols[i].min).sum::<usize>();
    while left > 0 {
        let Some(s) = shown.iter_mut().find(|(i, w)| *w < cols[*i].natural) else { break };
        s.1 += 1;
        left -= 1;
    }
    shown
}

/// A piece of a free-form line (the `drops` rows) for [`fit_line`].
#[derive(Clone, Debug)]
pub struct Seg {
    /// The text, spaces included.
    pub text: String,
    /// Order in which segments are left out (1 first); 0 stays.
    pub drop_rank: u8,
    /// Names: may lose their middle down to this many characters.
    pub shrink_to: Option<usize>,
}

impl Seg {
    /// Text that stays as it is.
    #[must_use]
    pub fn fixed(text: impl Into<String>) -> Self {
        Self { text: text.into(), drop_rank: 0, shrink_to: None }
    }
    /// A name that may lose its middle down to `min` characters.
    #[must_use]
    pub fn name(text: impl Into<String>, min: usize) -> Self {
        Self { text: text.into(), drop_rank: 0, shrink_to: Some(min) }
    }
    /// Text left out (rank 1 first) when the line does not fit.
    #[must_use]
    pub fn optional(text: impl Into<String>, rank: u8) -> Self {
        Self { text: text.into(), drop_rank: rank, shrink_to: None }
    }
}

/// `segs` joined; with a `width`, optional segments are left out (lowest
/// rank first) and then names shortened in the middle until the line fits.
#[must_use]
pub fn fit_line(mut segs: Vec<Seg>, width: Option<usize>) -> String {
    let len = |s: &[Seg]| s.iter().map(|x| x.text.chars().count()).sum::<usize>();
    if let Some(w) = width {
        while len(&segs) > w {
            let Some(pos) = segs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.drop_rank > 0)
                .min_by_key(|(_, s)| s.drop_rank)
                .map(|(i, _)| i)
            else {
                break;
            };
            segs.remove(pos);
        }
        let mut over = len(&segs).saturating_sub(w);
        // The longest names give first.
        while over > 0 {
            let Some(s) = segs
                .iter_mut()
                .filter(|s| s.shrink_to.is_some_and(|m| s.text.chars().count() > m))
                .max_by_key(|s| s.text.chars().count())
            else {
                break;
            };
            let n = s.text.chars().count();
            let target = n.saturating_sub(over).max(s.shrink_to.unwrap_or(n)).max(n.saturating_sub(n.div_ceil(2)));
            s.text = ellipsize_middle(&s.text, target).into_owned();
            over -= n - target;
        }
    }
    segs.into_iter().map(|s| s.text).collect()
}

/// A cell's text and its colour (none when colour is off).
#[derive(Clone, Copy, Debug)]
pub struct Cell<'a> {
    /// The text.
    pub text: &'a str,
    /// The colour, if any.
    pub style: Option<Style>,
    /// A shorter text to use when `text` does not fit a fitted column
    /// (`-> 10.96.0.10:53 (svc kube-system/kube-dns)` for client -> server).
    pub alt: Option<&'a str>,
}

impl<'a> Cell<'a> {
    /// Uncoloured text.
    #[must_use]
    pub fn plain(text: &'a str) -> Self {
        Self { text, style: None, alt: None }
    }

    /// `text`, or `alt` when it does not fit.
    #[must_use]
    pub fn or_shorter(text: &'a str, alt: &'a str) -> Self {
        Self { text, style: None, alt: Some(alt) }
    }
}

/// Terminal colours ktrace uses (SGR sequences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Failures: SERVFAIL, REFUSED, timeouts, finding titles.
    Bad,
    /// Worth a look: NXDOMAIN.
    Warn,
    /// Emphasis without alarm.
    Bold,
}

const RESET: &str = "\x1b[0m";

impl Style {
    /// The escape sequence that starts this style.
    #[must_use]
    pub fn start(self) -> &'static str {
        match self {
            Self::Bad => "\x1b[1;31m",
            Self::Warn => "\x1b[33m",
            Self::Bold => "\x1b[1m",
        }
    }

    /// `text` in this style.
    #[must_use]
    pub fn paint(self, text: &str) -> String {
        format!("{}{text}{RESET}", self.start())
    }
}

/// The colour of a response code in a table: none for success.
#[must_use]
pub fn rcode_style(rcode: &str) -> Option<Style> {
    match rcode {
        "NOERROR" | "-" | "" => None,
        "NXDOMAIN" => Some(Style::Warn),
        _ => Some(Style::Bad),
    }
}

/// `s` in at most `width` characters: when longer, its middle is replaced
/// by `…` (the start of a name says what it is, the end where it lives).
#[must_use]
pub fn ellipsize_middle(s: &str, width: usize) -> Cow<'_, str> {
    let n = s.chars().count();
    if n <= width {
        return Cow::Borrowed(s);
    }
    if width == 0 {
        return Cow::Borrowed("");
    }
    let keep = width - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn col(header: &'static str, natural: usize, min: usize, drop_rank: u8) -> Column {
        Column { header, full: natural, natural, min, drop_rank, align: Align::Left }
    }

    const COLS: [Column; 4] = [col("A", 10, 10, 0), col("NAME", 30, 10, 0), col("LOW", 8, 8, 1), col("MID", 12, 6, 2)];

    fn widths(l: &Layout) -> Vec<(usize, usize)> {
        l.shown.clone()
    }

    #[test]
    fn ellipsis_keeps_both_ends() {
        assert_eq!(ellipsize_middle("backend.critical-app.svc.cluster.local", 20), "backend.cr…ter.local");
        assert_eq!(ellipsize_middle("short", 20), "short");
        assert_eq!(ellipsize_middle("abcdef", 1), "…");
        assert_eq!(ellipsize_middle("abcdef", 0), "");
        assert_eq!(ellipsize_middle("ünïcödé-name", 6).chars().count(), 6);
    }

    #[test]
    fn room_enough_keeps_natural_widths() {
        assert_eq!(widths(&Layout::fit(&COLS, 200)), vec![(0, 10), (1, 30), (2, 8), (3, 12)]);
    }

    #[test]
    fn shrinks_names_before_dropping() {
        // Natural 63; minimums 34 + 3 gaps: 50 shrinks, drops nothing.
        let l = Layout::fit(&COLS, 50);
        assert_eq!(l.shown.len(), 4);
        assert_eq!(l.shown.iter().map(|&(_, w)| w).sum::<usize>() + 3, 50);
    }

    #[test]
    fn drops_low_value_columns_first() {
        // Minimums need 37: at 30 LOW goes first (rank 1), then the rest fits.
        let l = Layout::fit(&COLS, 30);
        assert!(!l.shows(2) && l.shows(3), "{l:?}");
        let l = Layout::fit(&COLS, 21);
        assert_eq!(widths(&l), vec![(0, 10), (1, 10)]);
        // Narrower than the never-dropped columns: they stay, at their minimum.
        let l = Layout::fit(&COLS, 5);
        assert_eq!(widths(&l), vec![(0, 10), (1, 10)]);
    }

    #[test]
    fn lines_fit_and_colour_does_not_count() {
        let l = Layout::fit(&COLS, 40);
        let cells = [
            Cell::plain("12:00:00"),
            Cell::plain("a-very-long-name.with.many.labels.example"),
            Cell::plain("x"),
            Cell { text: "NXDOMAIN", style: Some(Style::Warn), alt: None },
        ];
        let line = l.line(&COLS, &cells);
        let plain = line.replace("\x1b[33m", "").replace(RESET, "");
        assert!(plain.chars().count() <= 40, "{plain:?}");
        assert!(plain.contains('…'));
        assert!(line.contains("\x1b[33m"));
    }

    #[test]
    fn free_form_lines_drop_then_shorten() {
        let segs = || {
            vec![
                Seg::fixed("DROP  "),
                Seg::name("critical-app/client-7d9f8b6c4-x2x9z", 12),
                Seg::fixed(" -> "),
                Seg::name("critical-app/backend-5f7c9d8b7-abcde", 12),
                Seg::optional("  node=node-a", 2),
                Seg::optional(" dev=eth0", 1),
            ]
        };
        let full = fit_line(segs(), None);
        assert!(full.ends_with("node=node-a dev=eth0"));
        assert_eq!(fit_line(segs(), Some(200)), full);
        let l = fit_line(segs(), Some(95));
        assert!(l.contains("node=") && !l.contains("dev="), "{l}");
        let l = fit_line(segs(), Some(60));
        assert!(l.chars().count() <= 60 && l.contains('…') && !l.contains("node="), "{l}");
        // Cannot fit: names stop at their minimum.
        let l = fit_line(segs(), Some(10));
        assert!(l.starts_with("DROP  ") && l.contains(" -> "), "{l}");
    }

    #[test]
    fn shorter_text_when_the_full_one_does_not_fit() {
        let cols = [col("ENDS", 40, 20, 0)];
        let cells = [Cell::or_shorter("10.244.1.20:58089 -> 10.96.0.10:53", "-> 10.96.0.10:53")];
        assert_eq!(Layout::fit(&cols, 20).line(&cols, &cells), "-> 10.96.0.10:53");
        assert_eq!(Layout::fit(&cols, 40).line(&cols, &cells), "10.244.1.20:58089 -> 10.96.0.10:53");
        assert_eq!(Layout::full(&cols).line(&cols, &cells), "10.244.1.20:58089 -> 10.96.0.10:53");
    }

    #[test]
    fn full_layout_never_cuts() {
        let l = Layout::full(&COLS);
        let long = "x".repeat(50);
        let cells = [Cell::plain("a"), Cell::plain(&long), Cell::plain("b"), Cell::plain("c")];
        assert!(l.line(&COLS, &cells).contains(&long));
    }
}
