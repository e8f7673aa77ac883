//! Text as the terminal shows it: cleaned of control characters, measured
//! in columns, wrapped and cut to fit.
//!
//! Cutting and wrapping go by grapheme clusters, never inside one: an
//! emoji with a skin tone (👍🏽, two code points) or a family joined with
//! ZWJs stays whole, measured as the terminal draws it.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Replaces control characters (escape sequences from a hostile peer would
/// otherwise reach the terminal) with U+FFFD; tabs become spaces.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
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
            assert_eq!(joined, text, "nothing lost or split at {max} columns");
        }
        assert_eq!(
            fit(&format!("ok {thumbs}{thumbs}"), 6),
            format!("ok {thumbs}…")
        );
        assert_eq!(clean(thumbs), thumbs);
    }

    #[test]
    fn fitting_cuts_with_an_ellipsis() {
        assert_eq!(fit("alice, bob, carol", 10), "alice, bo…");
        assert_eq!(fit("alice", 10), "alice");
    }
}
