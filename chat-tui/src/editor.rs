//! The input line: a cursor that moves by grapheme cluster (so é and 👩‍💻 are one step), word
//! jumps, Home/End, delete word, multi-line text, and a per-room history of sent lines.

use unicode_segmentation::UnicodeSegmentation;

/// Lines kept in each room's history.
const HISTORY: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct Editor {
    text: String,
    /// A byte offset into `text`, always on a grapheme boundary.
    cursor: usize,
    /// Sent lines, oldest first.
    history: Vec<String>,
    /// Position while browsing history (None: editing a fresh line, kept in `draft`).
    browsing: Option<usize>,
    draft: String,
}

impl Editor {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(self.cursor, |g| self.cursor + g.len())
    }

    pub fn insert(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
        self.browsing = None;
    }

    pub fn left(&mut self) {
        self.cursor = self.prev_boundary();
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    /// Start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    /// End of the current line.
    pub fn end(&mut self) {
        self.cursor = self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i);
    }

    /// Back to the start of the previous word.
    pub fn word_left(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(|c: char| !c.is_alphanumeric());
        self.cursor = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(0, |(i, c)| i + c.len_utf8());
    }

    /// Forward past the end of the next word.
    pub fn word_right(&mut self) {
        let after = &self.text[self.cursor..];
        let skip = after
            .char_indices()
            .find(|(_, c)| c.is_alphanumeric())
            .map_or(after.len(), |(i, _)| i);
        let word = after[skip..]
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(after.len() - skip, |(i, _)| i);
        self.cursor += skip + word;
    }

    pub fn backspace(&mut self) {
        let start = self.prev_boundary();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    pub fn delete(&mut self) {
        let end = self.next_boundary();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes back to the start of the previous word (Ctrl-W, Alt-Backspace).
    pub fn delete_word(&mut self) {
        let end = self.cursor;
        self.word_left();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes everything (Ctrl-U).
    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
    }

    /// Takes the text to send and remembers it in the history.
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        text
    }

    fn show(&mut self, text: String) {
        self.text = text;
        self.cursor = self.text.len();
    }

    /// Up: an older line from the history (the current draft is kept).
    pub fn history_up(&mut self) {
        let next = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        self.show(self.history[next].clone());
    }

    /// Down: a newer line, and finally the draft back.
    pub fn history_down(&mut self) {
        match self.browsing {
            None => {}
            Some(i) if i + 1 < self.history.len() => {
                self.browsing = Some(i + 1);
                self.show(self.history[i + 1].clone());
            }
            Some(_) => {
                self.browsing = None;
                let draft = std::mem::take(&mut self.draft);
                self.show(draft);
            }
        }
    }

    /// The word the cursor is at the end of, for completion: (start offset, word).
    pub fn word_at_cursor(&self) -> (usize, &str) {
        let before = &self.text[..self.cursor];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        (start, &before[start..])
    }

    /// Replaces `start..cursor` with `with`.
    pub fn replace_word(&mut self, start: usize, with: &str) {
        self.text.replace_range(start..self.cursor, with);
        self.cursor = start + with.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed(s: &str) -> Editor {
        let mut e = Editor::default();
        e.insert(s);
        e
    }

    #[test]
    fn cursor_moves_by_grapheme() {
        let mut e = ed("a👩‍💻é");
        e.left();
        assert_eq!(&e.text()[e.cursor()..], "é");
        e.left();
        assert_eq!(&e.text()[e.cursor()..], "👩‍💻é");
        e.backspace();
        assert_eq!(e.text(), "👩‍💻é");
        e.delete();
        assert_eq!(e.text(), "é");
        e.right();
        e.right();
        assert_eq!(e.cursor(), "é".len(), "stops at the end");
    }

    #[test]
    fn word_jumps_and_delete_word() {
        let mut e = ed("hello big  world");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "world");
        e.word_left();
        assert_eq!(&e.text()[e.cursor()..], "big  world");
        e.word_right();
        assert_eq!(&e.text()[e.cursor()..], "  world");
        e.end();
        e.delete_word();
        assert_eq!(e.text(), "hello big  ");
        e.delete_word();
        assert_eq!(e.text(), "hello ");
        e.home();
        assert_eq!(e.cursor(), 0);
    }

    #[test]
    fn home_and_end_work_per_line() {
        let mut e = ed("one\ntwo");
        e.home();
        assert_eq!(&e.text()[e.cursor()..], "two");
        e.left();
        e.home();
        assert_eq!(e.cursor(), 0);
        e.end();
        assert_eq!(e.cursor(), 3);
    }

    #[test]
    fn history_browses_and_keeps_the_draft() {
        let mut e = Editor::default();
        e.insert("first");
        assert_eq!(e.take(), "first");
        e.insert("second");
        e.take();
        e.insert("draft");
        e.history_up();
        assert_eq!(e.text(), "second");
        e.history_up();
        assert_eq!(e.text(), "first");
        e.history_up();
        assert_eq!(e.text(), "first");
        e.history_down();
        e.history_down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn completion_word() {
        let mut e = ed("hi @al");
        let (start, word) = e.word_at_cursor();
        assert_eq!((start, word), (3, "@al"));
        e.replace_word(start, "@alice ");
        assert_eq!(e.text(), "hi @alice ");
    }
}
