//! `ThinkState`: one sample's token-level thinking control, layered on its `Splitter`.
//!
//! ```text
//!  before a step : forced_token()  -> a queued token (closing marker at the budget, or the
//!                                     rest of "Wait") instead of sampling
//!  after a draw  : filter(token)   -> s1: under min_thinking, EOS / the first token of `</think>`
//!                                     becomes "Wait" (its other tokens are queued)
//!  every token   : push(text)      -> Split, and the token counted as thinking or answer
//! ```
//!
//! Budget rule: when `thinking_tokens + len("\n</think>" tokens) >= budget`, the closing marker
//! is forced (then "\n\n"), so a sample's thinking tokens (markers included) never exceed
//! `max(budget, marker length)`; with the budget reached exactly when the marker completes.
//! Counting: a token is a thinking token if the sample was thinking when it arrived (the token
//! that completes `</think>` included); tokens read while the start was undecided are counted
//! once it is decided. Memory: the splitter's holdback (< marker length) plus <= a few queued ids.

use std::collections::VecDeque;

use super::split::{Split, Splitter};
use super::ReasoningFormat;

/// Per-request thinking limits (validated; shared by the request's samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThinkLimits {
    /// Most thinking tokens; `None` = unbounded.
    pub budget: Option<u32>,
    /// Below this many thinking tokens an end of thinking is replaced by "Wait" (s1).
    pub min_thinking: u32,
}

#[derive(Debug, Clone)]
pub struct ThinkState {
    splitter: Splitter,
    forced: VecDeque<u32>,
    /// The closing marker was forced (at most once per sample).
    closed_by_budget: bool,
    thinking_tokens: u32,
    answer_tokens: u32,
    undecided_tokens: u32,
}

impl ThinkState {
    pub fn new(fmt: Option<&ReasoningFormat>, in_thinking: bool) -> Self {
        ThinkState {
            splitter: Splitter::new(fmt, in_thinking),
            forced: VecDeque::new(),
            closed_by_budget: false,
            thinking_tokens: 0,
            answer_tokens: 0,
            undecided_tokens: 0,
        }
    }

    pub fn thinking_tokens(&self) -> u32 {
        self.thinking_tokens
    }

    pub fn answer_tokens(&self) -> u32 {
        self.answer_tokens
    }

    pub fn in_thinking(&self) -> bool {
        self.splitter.in_thinking()
    }

    /// Whether the budget forced the end of thinking.
    pub fn closed_by_budget(&self) -> bool {
        self.closed_by_budget
    }

    /// The token to emit this step instead of sampling, if any.
    pub fn forced_token(
        &mut self,
        fmt: Option<&ReasoningFormat>,
        limits: &ThinkLimits,
    ) -> Option<u32> {
        if let (Some(f), Some(budget)) = (fmt, limits.budget) {
            let marker = f.force_end_ids.len() as u32;
            if self.splitter.in_thinking()
                && !self.closed_by_budget
                && self.thinking_tokens + marker >= budget
            {
                self.closed_by_budget = true;
                // A pending "Wait" is dropped: the budget wins over the minimum.
                self.forced.clear();
                self.forced.extend(&f.force_end_ids);
                self.forced.extend(&f.after_end_ids);
            }
        }
        self.forced.pop_front()
    }

    /// Ends thinking now (a certaindex exit): the closing marker is forced next, as at the
    /// budget. False (nothing changes) when the sample is not thinking, is already closing,
    /// or the model has no markers.
    pub fn end_now(&mut self, fmt: Option<&ReasoningFormat>) -> bool {
        let Some(f) = fmt else { return false };
        if !self.splitter.in_thinking() || self.closed_by_budget {
            return false;
        }
        self.closed_by_budget = true;
        self.forced.clear();
        self.forced.extend(&f.force_end_ids);
        self.forced.extend(&f.after_end_ids);
        true
    }

    /// s1 budget forcing: a freely drawn `token` that would end thinking (EOS or the first
    /// token of the end marker) before `min_thinking` becomes the first token of "Wait".
    pub fn filter(
        &mut self,
        token: u32,
        fmt: Option<&ReasoningFormat>,
        limits: &ThinkLimits,
        eos_ids: &[u32],
    ) -> u32 {
        let Some(f) = fmt else { return token };
        let ends = eos_ids.contains(&token) || f.end_first_id == Some(token);
        if !self.splitter.in_thinking()
            || self.thinking_tokens >= limits.min_thinking
            || !ends
            || f.wait_ids.is_empty()
        {
            return token;
        }
        self.forced.extend(&f.wait_ids[1..]);
        f.wait_ids[0]
    }

    /// Accounts one token whose decoded text is `piece`; returns the classified text.
    pub fn push(&mut self, piece: &str) -> Split {
        let was_thinking = self.splitter.in_thinking();
        let was_undecided = self.splitter.undecided();
        let out = self.splitter.push(piece);
        if was_thinking {
            self.thinking_tokens += 1;
        } else if was_undecided {
            self.undecided_tokens += 1;
            self.settle();
        } else {
            self.answer_tokens += 1;
        }
        out
    }

    /// The sample ended: releases held-back text and settles the token counts.
    pub fn finish(&mut self) -> Split {
        let out = self.splitter.finish();
        self.settle();
        out
    }

    fn settle(&mut self) {
        if self.splitter.undecided() {
            return;
        }
        let k = std::mem::take(&mut self.undecided_tokens);
        if self.splitter.thought() {
            self.thinking_tokens += k;
        } else {
            self.answer_tokens += k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasoning::ReasoningParser;

    /// Token ids: 1 = "\n</think>", 2 = "\n\n", 3 = "\nWait", 7 = EOS, 9 = "</think>".
    fn fmt() -> ReasoningFormat {
        ReasoningFormat {
            parser: ReasoningParser::DeepseekR1,
            start: "<think>".into(),
            end: "</think>".into(),
            implicit_start: true,
            force_end_ids: vec![1],
            after_end_ids: vec![2],
            wait_ids: vec![3, 4],
            end_first_id: Some(9),
        }
    }

    fn text(t: u32) -> &'static str {
        match t {
            1 => "\n</think>",
            2 => "\n\n",
            3 => "\nWait",
            4 => ",",
            9 => "</think>",
            _ => " x",
        }
    }

    /// Runs a sample that would draw `draws` in order; returns (emitted ids, reasoning, content).
    fn run(limits: ThinkLimits, draws: &[u32]) -> (Vec<u32>, ThinkState, String, String) {
        let f = fmt();
        let mut s = ThinkState::new(Some(&f), true);
        let (mut ids, mut r, mut c) = (Vec::new(), String::new(), String::new());
        let mut draws = draws.iter().copied();
        loop {
            let t = match s.forced_token(Some(&f), &limits) {
                Some(t) => t,
                None => match draws.next() {
                    Some(d) => s.filter(d, Some(&f), &limits, &[7]),
                    None => break,
                },
            };
            if t == 7 {
                break;
            }
            ids.push(t);
            let o = s.push(text(t));
            r += &o.reasoning;
            c += &o.content;
        }
        let o = s.finish();
        (ids, s, r + &o.reasoning, c + &o.content)
    }

    #[test]
    fn budget_forces_the_closing_marker_exactly_at_the_budget() {
        let limits = ThinkLimits {
            budget: Some(4),
            min_thinking: 0,
        };
        let (ids, s, r, c) = run(limits, &[5, 5, 5, 5, 5, 5]);
        // 3 free thinking tokens + the forced marker = 4, then "\n\n" and the answer.
        assert_eq!(ids, vec![5, 5, 5, 1, 2, 5, 5, 5]);
        assert_eq!(s.thinking_tokens(), 4);
        assert_eq!(s.answer_tokens(), 4);
        assert!(s.closed_by_budget());
        assert_eq!(r, " x x x\n");
        assert_eq!(c, "x x x");
    }

    #[test]
    fn zero_budget_closes_thinking_at_once() {
        let limits = ThinkLimits {
            budget: Some(0),
            min_thinking: 0,
        };
        let (ids, s, r, c) = run(limits, &[5, 7]);
        assert_eq!(ids, vec![1, 2, 5]);
        assert_eq!((s.thinking_tokens(), s.answer_tokens()), (1, 2));
        assert_eq!((r.as_str(), c.as_str()), ("\n", "x"));
    }

    #[test]
    fn minimum_thinking_replaces_an_early_end_with_wait() {
        let limits = ThinkLimits {
            budget: None,
            min_thinking: 4,
        };
        // EOS at step 2 and `</think>` at step 4 come too early; the second `</think>` counts.
        let (ids, s, r, c) = run(limits, &[5, 7, 9, 5, 9, 5]);
        assert_eq!(ids, vec![5, 3, 4, 3, 4, 5, 9, 5]);
        assert_eq!(s.thinking_tokens(), 7);
        assert_eq!(r, " x\nWait,\nWait, x");
        assert_eq!(c, "x");
    }

    #[test]
    fn without_a_format_everything_is_answer() {
        let mut s = ThinkState::new(None, false);
        let limits = ThinkLimits {
            budget: Some(1),
            min_thinking: 9,
        };
        assert_eq!(s.forced_token(None, &limits), None);
        assert_eq!(s.filter(7, None, &limits, &[7]), 7);
        assert_eq!(s.push("hi").content, "hi");
        assert_eq!((s.thinking_tokens(), s.answer_tokens()), (0, 1));
    }

    #[test]
    fn undecided_tokens_are_counted_once_decided() {
        let mut f = fmt();
        f.implicit_start = false;
        let mut s = ThinkState::new(Some(&f), false);
        for p in ["<th", "ink>", "a", "</think>", "b"] {
            s.push(p);
        }
        assert_eq!((s.thinking_tokens(), s.answer_tokens()), (4, 1));
        let mut s = ThinkState::new(Some(&f), false);
        for p in ["<", "b>"] {
            s.push(p);
        }
        assert_eq!((s.thinking_tokens(), s.answer_tokens()), (0, 2));
    }
}
