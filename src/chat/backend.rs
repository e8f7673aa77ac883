//! A ratatui backend that keeps emoji whole in terminals such as tmux.
//!
//! ratatui skips the cell hidden behind a wide character and then moves
//! the cursor to the next cell it writes, even when the cursor is already
//! there. tmux joins an emoji and its skin-tone modifier (👍 + 🏽) only
//! when no cursor movement follows at once, so with the plain backend the
//! tone was lost. This wrapper hands the inner backend coordinates under
//! which the cell written right after a wide one counts as adjacent, so no
//! cursor movement is sent between them; and when the cell after such an
//! emoji is unchanged (so not in the update), it writes it again from a
//! copy of the screen, instead of moving the cursor over it. Every other
//! cursor movement is sent as before, to the real position.

use std::io;

use ratatui::backend::{Backend, ClearType, WindowSize};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Position, Rect, Size};
use unicode_width::UnicodeWidthStr;

pub struct Joined<B> {
    inner: B,
    /// What the screen shows, as far as this backend wrote it.
    shown: Buffer,
}

impl<B: Backend> Joined<B> {
    pub fn new(inner: B) -> Joined<B> {
        Joined {
            inner,
            shown: Buffer::empty(Rect::default()),
        }
    }

    /// A copy of the screen as big as the terminal (blank after a resize,
    /// which ratatui follows with a clear).
    fn fit_screen(&mut self) -> io::Result<()> {
        let size = self.inner.size()?;
        let area = Rect::new(0, 0, size.width, size.height);
        if self.shown.area != area {
            self.shown = Buffer::empty(area);
        }
        Ok(())
    }
}

/// An emoji of several code points (a skin tone, a ZWJ sequence, a flag):
/// the kind tmux loses part of when the cursor moves right after it.
fn is_joined_emoji(symbol: &str) -> bool {
    symbol.width() >= 2 && symbol.chars().count() > 1
}

/// The positions the inner backend is given: real ones, except that a
/// cell right after a wide one (where the terminal's cursor already is)
/// is labelled as right after the previous label.
fn labels<'a>(
    content: impl Iterator<Item = (u16, u16, &'a Cell)>,
) -> impl Iterator<Item = (u16, u16, &'a Cell)> {
    // (real end of the last cell written, its row, its label)
    let mut last: Option<(u16, u16, u16)> = None;
    content.map(move |(x, y, cell)| {
        let width = (cell.symbol().width() as u16).max(1);
        let label = match last {
            Some((end, row, label)) if row == y && end == x => label + 1,
            _ => x,
        };
        last = Some((x + width, y, label));
        (label, y, cell)
    })
}

impl<B: Backend> Backend for Joined<B> {
    fn draw<'a, I>(&mut self, content: I) -> io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.fit_screen()?;
        let updates: Vec<(u16, u16, Cell)> =
            content.map(|(x, y, cell)| (x, y, cell.clone())).collect();
        let area = self.shown.area;
        for (x, y, cell) in &updates {
            if area.contains(Position::new(*x, *y)) {
                self.shown[(*x, *y)] = cell.clone();
            }
        }
        let mut out: Vec<(u16, u16, Cell)> = Vec::with_capacity(updates.len());
        for (i, (x, y, cell)) in updates.iter().enumerate() {
            out.push((*x, *y, cell.clone()));
            if !is_joined_emoji(cell.symbol()) {
                continue;
            }
            let next = x + cell.symbol().width() as u16;
            let written_next = updates
                .get(i + 1)
                .is_some_and(|(x2, y2, _)| y2 == y && *x2 == next);
            if !written_next && area.contains(Position::new(next, *y)) {
                out.push((next, *y, self.shown[(next, *y)].clone()));
            }
        }
        self.inner
            .draw(labels(out.iter().map(|(x, y, cell)| (*x, *y, cell))))
    }

    fn append_lines(&mut self, n: u16) -> io::Result<()> {
        self.inner.append_lines(n)
    }

    fn hide_cursor(&mut self) -> io::Result<()> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> io::Result<()> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> io::Result<Position> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> io::Result<()> {
        self.inner.set_cursor_position(position)
    }

    fn clear(&mut self) -> io::Result<()> {
        self.shown.reset();
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> io::Result<()> {
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> io::Result<Size> {
        self.inner.size()
    }

    fn window_size(&mut self) -> io::Result<WindowSize> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::CrosstermBackend;

    use super::*;

    /// What the crossterm backend writes for a row holding an emoji with
    /// a skin tone, drawn over a blank screen.
    fn written(joined: bool) -> String {
        let area = Rect::new(0, 0, 12, 1);
        let before = Buffer::empty(area);
        let mut after = Buffer::empty(area);
        after.set_string(2, 0, "a👍🏽 b", ratatui::style::Style::new());
        let updates = before.diff(&after);
        let mut out = Vec::new();
        let backend = CrosstermBackend::new(&mut out);
        if joined {
            let mut joined = Joined {
                inner: backend,
                shown: Buffer::empty(area),
            };
            joined.draw(updates.into_iter()).unwrap();
        } else {
            let mut backend = backend;
            backend.draw(updates.into_iter()).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_cursor_movement_separates_an_emoji_from_what_follows() {
        assert!(
            written(false).contains("👍🏽\u{1b}["),
            "the plain backend moves the cursor right after the emoji: {:?}",
            written(false)
        );
        let out = written(true);
        assert!(
            out.contains("👍🏽 b"),
            "the blank after it written again: {out:?}"
        );
        // The first cell is still reached with a real cursor movement.
        assert!(out.starts_with("\u{1b}[1;3H"), "{out:?}");
    }
}
