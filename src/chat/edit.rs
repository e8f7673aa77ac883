//! Editing what is typed: the input line (which may hold several lines:
//! a paste, or a line break typed with Alt-Enter / Ctrl-J) and the recall
//! of earlier inputs with ↑ / ↓.
//!
//! The cursor counts characters, not bytes, so that it can never land
//! inside a UTF-8 sequence.

use std::collections::VecDeque;

/// Earlier inputs kept for ↑ / ↓.
pub const RECALL: usize = 100;

/// The input: text and a cursor (in characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputLine {
    pub text: String,
    pub cursor: usize,
}

impl InputLine {
    /// An input holding `text`, the cursor at its end.
    pub fn with(text: String) -> InputLine {
        let cursor = text.chars().count();
        InputLine { text, cursor }
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    pub fn insert(&mut self, c: char) {
        self.text.insert(byte_at(&self.text, self.cursor), c);
        self.cursor += 1;
    }

    pub fn insert_str(&mut self, text: &str) {
        self.text.insert_str(byte_at(&self.text, self.cursor), text);
        self.cursor += text.chars().count();
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.text.remove(byte_at(&self.text, self.cursor));
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.len() {
            self.text.remove(byte_at(&self.text, self.cursor));
        }
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.len());
    }

    /// To the start of the line the cursor is on.
    pub fn home(&mut self) {
        let chars: Vec<char> = self.text.chars().collect();
        while self.cursor > 0 && chars[self.cursor - 1] != '\n' {
            self.cursor -= 1;
        }
    }

    /// To the end of the line the cursor is on.
    pub fn end(&mut self) {
        let chars: Vec<char> = self.text.chars().collect();
        while self.cursor < chars.len() && chars[self.cursor] != '\n' {
            self.cursor += 1;
        }
    }

    /// Ctrl-W: deletes the word before the cursor (and the spaces after it).
    pub fn delete_word(&mut self) {
        let chars: Vec<char> = self.text.chars().collect();
        let mut start = self.cursor.min(chars.len());
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let from = byte_at(&self.text, start);
        let to = byte_at(&self.text, self.cursor);
        self.text.replace_range(from..to, "");
        self.cursor = start;
    }

    /// How many lines the input holds.
    pub fn lines(&self) -> usize {
        self.text.split('\n').count()
    }

    /// The line and column (in characters) of the cursor.
    pub fn position(&self) -> (usize, usize) {
        let before: String = self.text.chars().take(self.cursor).collect();
        let line = before.matches('\n').count();
        let column = before
            .rsplit('\n')
            .next()
            .map_or(0, |last| last.chars().count());
        (line, column)
    }
}

/// The byte offset of character `index` in `text`.
fn byte_at(text: &str, index: usize) -> usize {
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(at, _)| at)
}

/// Earlier inputs, newest last, and where ↑ / ↓ are among them.
#[derive(Debug, Clone, Default)]
pub struct Recall {
    entries: VecDeque<String>,
    /// The entry shown now; `None` while editing a new input.
    at: Option<usize>,
    /// What was being typed before ↑, given back by ↓ past the newest.
    draft: String,
}

impl Recall {
    /// Remembers a submitted input (not twice in a row).
    pub fn push(&mut self, line: &str) {
        self.at = None;
        if line.trim().is_empty() || self.entries.back().is_some_and(|last| last == line) {
            return;
        }
        if self.entries.len() == RECALL {
            self.entries.pop_front();
        }
        self.entries.push_back(line.to_string());
    }

    /// ↑: the previous input, given what is typed now.
    pub fn older(&mut self, current: &str) -> Option<String> {
        let next = match self.at {
            None if self.entries.is_empty() => return None,
            None => {
                self.draft = current.to_string();
                self.entries.len() - 1
            }
            Some(0) => return None,
            Some(i) => i - 1,
        };
        self.at = Some(next);
        Some(self.entries[next].clone())
    }

    /// ↓: the next input, and past the newest what was being typed.
    pub fn newer(&mut self) -> Option<String> {
        let i = self.at?;
        if i + 1 < self.entries.len() {
            self.at = Some(i + 1);
            return Some(self.entries[i + 1].clone());
        }
        self.at = None;
        Some(std::mem::take(&mut self.draft))
    }

    /// Typing leaves the recalled entry: it is now a new input.
    pub fn edited(&mut self) {
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_w_deletes_the_word_before_the_cursor() {
        let mut input = InputLine::with("see you  at five".into());
        input.delete_word();
        assert_eq!(input.text, "see you  at ");
        input.delete_word();
        assert_eq!(input.text, "see you  ");
        input.delete_word();
        assert_eq!(input.text, "see ");
        input.cursor = 2;
        input.delete_word();
        assert_eq!((input.text.as_str(), input.cursor), ("e ", 0));
        input.delete_word();
        assert_eq!(input.text, "e ");
    }

    #[test]
    fn home_and_end_move_within_the_cursor_line() {
        let mut input = InputLine::with("first\nsecond".into());
        input.home();
        assert_eq!(input.position(), (1, 0));
        input.left();
        assert_eq!(input.position(), (0, 5));
        input.home();
        assert_eq!(input.cursor, 0);
        input.end();
        assert_eq!(input.cursor, 5);
        input.insert('!');
        assert_eq!(input.text, "first!\nsecond");
    }

    #[test]
    fn recall_walks_back_and_returns_to_the_draft() {
        let mut recall = Recall::default();
        assert_eq!(recall.older("x"), None);
        recall.push("one");
        recall.push("two");
        recall.push("two");
        assert_eq!(recall.older("draft").as_deref(), Some("two"));
        assert_eq!(recall.older("two").as_deref(), Some("one"));
        assert_eq!(recall.older("one"), None, "nothing older");
        assert_eq!(recall.newer().as_deref(), Some("two"));
        assert_eq!(recall.newer().as_deref(), Some("draft"));
        assert_eq!(recall.newer(), None);
    }
}
