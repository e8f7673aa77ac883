//! Text as the terminal shows it: cleaned of control characters, measured
//! in columns, wrapped and cut to fit.
//!
//! Cutting and wrapping go by grapheme clusters, never inside one: an
//! emoji with a skin tone (👍🏽, two code points) or a family joined with
//! ZWJs stays whole.
//!
//! Terminals disagree on how wide such an emoji is: most draw 👍🏽 in two
//! columns, tmux (3.3) in four, the tone in the two after the hand (a
//! family joined with ZWJs or a flag it draws in two), where
//! the next character written would erase it. The client asks the
//! terminal once ([`set_joined_wide`]); where joined emoji are wider,
//! [`clean`] reserves the extra columns after each one with placeholders
//! that [`mark_reserved`] keeps from ever being drawn over it.

use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::buffer::Buffer;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Whether the terminal gives a joined emoji the width of its parts.
static JOINED_WIDE: AtomicBool = AtomicBool::new(false);

/// What reserves a column after a wide joined emoji (never a line break).
const PLACEHOLDER: &str = "\u{a0}";

/// Tells how wide the terminal draws joined emoji (see the module doc).
pub fn set_joined_wide(wide: bool) {
    JOINED_WIDE.store(wide, Ordering::Relaxed);
}

/// Columns the terminal gives `grapheme` beyond what it is measured as:
/// tmux draws each skin-tone modifier (U+1F3FB to U+1F3FF) after a
/// hand or face as a character of its own, two columns wide (ZWJ
/// sequences and flags it draws in two columns, as measured).
fn extra(grapheme: &str, joined_wide: bool) -> usize {
    if !joined_wide || grapheme.chars().nth(1).is_none() {
        return 0;
    }
    let tones = grapheme
        .chars()
        .skip(1)
        .filter(|c| ('\u{1f3fb}'..='\u{1f3ff}').contains(c))
        .count();
    tones * 2
}

/// Replaces control characters (escape sequences from a hostile peer would
/// otherwise reach the terminal) with U+FFFD; tabs become spaces. Where
/// the terminal needs it, reserves columns after joined emoji.
pub fn clean(text: &str) -> String {
    clean_for(text, JOINED_WIDE.load(Ordering::Relaxed))
}

fn clean_for(text: &str, joined_wide: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut graphemes = text.graphemes(true).peekable();
    while let Some(grapheme) = graphemes.next() {
        for c in grapheme.chars() {
            out.push(match c {
                '\t' => ' ',
                c if c.is_control() => '\u{fffd}',
                c => c,
            });
        }
        let reserve = extra(grapheme, joined_wide);
        // Cleaning twice reserves once.
        let mut have = 0;
        while have < reserve && graphemes.next_if_eq(&PLACEHOLDER).is_some() {
            have += 1;
        }
        out.push_str(&PLACEHOLDER.repeat(reserve));
    }
    out
}

/// Keeps the columns reserved after joined emoji from being drawn: the
/// terminal shows the rest of the emoji there.
pub fn mark_reserved(buffer: &mut Buffer) {
    mark_reserved_for(buffer, JOINED_WIDE.load(Ordering::Relaxed));
}

fn mark_reserved_for(buffer: &mut Buffer, joined_wide: bool) {
    if !joined_wide {
        return;
    }
    let area = buffer.area;
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            let symbol = buffer[(x, y)].symbol();
            let reserve = extra(symbol, true);
            let from = x + width(symbol) as u16;
            for column in from..(from + reserve as u16).min(area.right()) {
                if buffer[(column, y)].symbol() == PLACEHOLDER {
                    buffer[(column, y)].set_skip(true);
                }
            }
        }
    }
}

pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// Cuts `text` to at most `max` columns, ending with `…` when cut.
pub fn fit(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in text.graphemes(true) {
        let w = width(g);
        if used + w + 1 > max {
            break;
        }
        out.push_str(g);
        used += w;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// Wraps `text` into lines of at most `max` columns: at spaces where it
/// can, inside words longer than a line where it must. Line breaks in the
/// text are kept.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut used = 0;
        for word in clean(paragraph).split(' ') {
            let w = width(word);
            if used > 0 && used + 1 + w <= max {
                line.push(' ');
                line.push_str(word);
                used += 1 + w;
                continue;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            for g in word.graphemes(true) {
                let gw = width(g);
                if used + gw > max && used > 0 {
                    lines.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push_str(g);
                used += gw;
            }
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_breaks_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("the quick brown fox", 10), ["the quick", "brown fox"]);
        assert_eq!(wrap("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        assert_eq!(wrap("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrap("", 10), [""]);
    }

    #[test]
    fn wide_characters_count_as_two_columns() {
        assert_eq!(wrap("日本語です", 4), ["日本", "語で", "す"]);
        assert_eq!(fit("日本語です", 5), "日本…");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\tc"), "a\u{fffd}[2Jb c");
        assert!(wrap("x\u{7}y", 10)[0].chars().all(|c| !c.is_control()));
    }

    #[test]
    fn skin_tones_and_joined_emoji_stay_whole() {
        let thumbs = "👍🏽";
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(width(thumbs), 2, "one emoji, two columns");
        let text = format!("{thumbs}{thumbs}{family}{thumbs}");
        for max in 2..7 {
            for line in wrap(&text, max) {
                assert!(width(&line) <= max, "{line:?} wider than {max}");
                let rebuilt: String = line.graphemes(true).collect();
                assert_eq!(rebuilt, line);
            }
            let joined: String = wrap(&text, max).concat();
            assert_eq!(joined, text, "nothing lost at {max} columns");
            let pieces: Vec<String> = wrap(&text, max)
                .iter()
                .flat_map(|line| line.graphemes(true).map(str::to_string).collect::<Vec<_>>())
                .collect();
            let whole: Vec<&str> = text.graphemes(true).collect();
            assert_eq!(
                pieces, whole,
                "an emoji split across lines at {max} columns"
            );
        }
        assert_eq!(
            fit(&format!("ok {thumbs}{thumbs}"), 6),
            format!("ok {thumbs}…")
        );
        assert_eq!(clean_for(thumbs, false), thumbs);
    }

    #[test]
    fn where_the_terminal_draws_a_tone_apart_its_columns_are_kept_free() {
        // tmux: 👍 in two columns, the tone in the next two.
        let cleaned = clean_for("a👍🏽b", true);
        assert_eq!(cleaned, "a👍🏽\u{a0}\u{a0}b");
        assert_eq!(clean_for(&cleaned, true), cleaned, "reserved once");
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(clean_for(family, true), family, "two columns in tmux too");
        let mut buffer = Buffer::empty(ratatui::layout::Rect::new(0, 0, 8, 1));
        buffer.set_string(0, 0, &cleaned, ratatui::style::Style::new());
        mark_reserved_for(&mut buffer, true);
        let skipped: Vec<bool> = (0..7).map(|x| buffer[(x, 0)].skip).collect();
        assert_eq!(skipped, [false, false, false, true, true, false, false]);
        assert_eq!(buffer[(5, 0)].symbol(), "b");
    }

    #[test]
    fn fitting_cuts_with_an_ellipsis() {
        assert_eq!(fit("alice, bob, carol", 10), "alice, bo…");
        assert_eq!(fit("alice", 10), "alice");
    }
}
