//! `Splitter`: a sample's text, as it streams, -> reasoning text and content text, with the
//! markers removed.
//!
//! ```text
//!  Start ----output (after leading whitespace) begins with `<think>`----> Thinking
//!    |   \---diverges from `<think>`: implicit_start ? Thinking : Content
//!  Thinking --`</think>` seen--> Content (leading whitespace of the content dropped)
//! ```
//!
//! Invariants: every input byte ends up in exactly one of reasoning, content, or a removed
//! marker (or leading whitespace right after a marker); text is held back only while it could
//! still be the start of a marker (at most `marker.len() - 1` bytes), so `finish` releases
//! what is left. Markers are ASCII, so holdback cuts never split a character.

use super::ReasoningFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet known whether the output opens with the start marker.
    Start,
    Thinking,
    /// After thinking (or without it); `started` once non-whitespace content was emitted.
    Content {
        after_think: bool,
        started: bool,
    },
}

/// What one `push` released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct Splitter {
    state: State,
    /// Received, not yet classified (a possible marker prefix, or undecided start).
    pending: String,
    start: String,
    end: String,
    implicit_start: bool,
    /// Thinking was entered at some point (stays true after `</think>`).
    thought: bool,
}

impl Splitter {
    /// A splitter for one sample. `fmt = None`: everything is content. `in_thinking`: the
    /// prompt already opened thinking.
    pub fn new(fmt: Option<&ReasoningFormat>, in_thinking: bool) -> Self {
        let (state, start, end, implicit) = match fmt {
            None => (
                State::Content {
                    after_think: false,
                    started: true,
                },
                String::new(),
                String::new(),
                false,
            ),
            Some(f) => (
                if in_thinking {
                    State::Thinking
                } else {
                    State::Start
                },
                f.start.clone(),
                f.end.clone(),
                f.implicit_start,
            ),
        };
        Splitter {
            thought: state == State::Thinking,
            state,
            pending: String::new(),
            start,
            end,
            implicit_start: implicit,
        }
    }

    /// True while the sample is thinking (the end marker has not been seen).
    pub fn in_thinking(&self) -> bool {
        self.state == State::Thinking
    }

    /// True once thinking was entered (also after it ended).
    pub fn thought(&self) -> bool {
        self.thought
    }

    /// True until the splitter knows whether the output opens with the start marker.
    pub fn undecided(&self) -> bool {
        self.state == State::Start
    }

    /// Feeds newly decoded text; returns what can be classified now.
    pub fn push(&mut self, text: &str) -> Split {
        self.pending.push_str(text);
        let mut out = Split::default();
        self.drain(&mut out, false);
        out
    }

    /// The sample ended: everything held back is released as what it was being read as.
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        self.drain(&mut out, true);
        out
    }

    fn drain(&mut self, out: &mut Split, flush: bool) {
        loop {
            match self.state {
                State::Start => {
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(self.start.as_str()) {
                        self.pending = rest.to_string();
                        self.state = State::Thinking;
                        self.thought = true;
                    } else if self.start.starts_with(t) && !flush {
                        return; // still possibly the marker
                    } else {
                        self.thought = self.implicit_start;
                        self.state = if self.implicit_start {
                            State::Thinking
                        } else {
                            State::Content {
                                after_think: false,
                                started: true,
                            }
                        };
                    }
                }
                State::Thinking => {
                    if let Some(i) = self.pending.find(self.end.as_str()) {
                        out.reasoning.push_str(&self.pending[..i]);
                        self.pending.drain(..i + self.end.len());
                        self.state = State::Content {
                            after_think: true,
                            started: false,
                        };
                        continue;
                    }
                    let keep = if flush {
                        0
                    } else {
                        marker_prefix_suffix(&self.pending, &self.end)
                    };
                    let cut = self.pending.len() - keep;
                    out.reasoning.push_str(&self.pending[..cut]);
                    self.pending.drain(..cut);
                    return;
                }
                State::Content {
                    after_think,
                    started,
                } => {
                    if !started {
                        let t = self.pending.trim_start();
                        if t.is_empty() {
                            self.pending.clear();
                            return;
                        }
                        let skip = self.pending.len() - t.len();
                        self.pending.drain(..skip);
                        self.state = State::Content {
                            after_think,
                            started: true,
                        };
                    }
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// Length of the longest proper suffix of `text` that is a prefix of `marker`.
fn marker_prefix_suffix(text: &str, marker: &str) -> usize {
    let max = marker.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && marker.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(implicit: bool) -> ReasoningFormat {
        ReasoningFormat {
            parser: super::super::ReasoningParser::Qwen3,
            start: "<think>".into(),
            end: "</think>".into(),
            implicit_start: implicit,
            force_end_ids: vec![],
            after_end_ids: vec![],
            wait_ids: vec![],
            end_first_id: None,
        }
    }

    /// Feeds `pieces` one by one; returns (reasoning, content) concatenated.
    fn run(s: &mut Splitter, pieces: &[&str]) -> (String, String) {
        let (mut r, mut c) = (String::new(), String::new());
        for p in pieces {
            let o = s.push(p);
            r += &o.reasoning;
            c += &o.content;
        }
        let o = s.finish();
        (r + &o.reasoning, c + &o.content)
    }

    #[test]
    fn splits_across_piece_boundaries() {
        let f = fmt(false);
        let mut s = Splitter::new(Some(&f), true);
        let o = s.push("Let me th");
        assert_eq!(o.reasoning, "Let me th");
        let o = s.push("ink.</th");
        assert_eq!(o.reasoning, "ink.");
        assert!(s.in_thinking());
        let o = s.push("ink>\n\nThe answer");
        assert_eq!(o.reasoning, "");
        assert_eq!(o.content, "The answer");
        assert!(!s.in_thinking());
        assert_eq!(s.push(" is 4.").content, " is 4.");
    }

    #[test]
    fn start_marker_in_output_or_none() {
        let f = fmt(false);
        let mut s = Splitter::new(Some(&f), false);
        assert_eq!(
            run(&mut s, &["\n<th", "ink>why", "</think>", "so"]),
            ("why".into(), "so".into())
        );
        let mut s = Splitter::new(Some(&f), false);
        assert_eq!(run(&mut s, &["<", "b>hi"]), ("".into(), "<b>hi".into()));
        // deepseek_r1: no opening marker still means thinking.
        let f = fmt(true);
        let mut s = Splitter::new(Some(&f), false);
        assert_eq!(
            run(&mut s, &["hmm", "</think>ok"]),
            ("hmm".into(), "ok".into())
        );
    }

    #[test]
    fn unfinished_marker_prefix_is_released_at_finish() {
        let f = fmt(false);
        let mut s = Splitter::new(Some(&f), true);
        assert_eq!(run(&mut s, &["a </thi"]), ("a </thi".into(), "".into()));
        let mut s = Splitter::new(None, false);
        assert_eq!(
            run(&mut s, &["  <think>x</think>"]),
            ("".into(), "  <think>x</think>".into())
        );
    }

    #[test]
    fn holdback_respects_char_boundaries() {
        assert_eq!(marker_prefix_suffix("é<", "</think>"), 1);
        assert_eq!(marker_prefix_suffix("é", "</think>"), 0);
        assert_eq!(marker_prefix_suffix("x</thin", "</think>"), 6);
    }
}
