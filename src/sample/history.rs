//! `TokenHistory`: the token counts that penalties need, kept incrementally.
//!
//! ```text
//!  prompt_distinct : [t0, t3, t9, ...]                 distinct prompt ids
//!  output          : [(t3, 2, in_prompt), (t5, 1, _)]  distinct output ids, counts
//!  slot            : token -> (index in output or NONE, in_prompt)
//! ```
//!
//! Invariants:
//! - `prompt_distinct` holds each prompt id once; `output` holds each output
//!   id once with its occurrence count (>= 1) and whether it is a prompt id.
//! - Pushing an output token is O(1) (one hash lookup); applying penalties
//!   walks `output` (O(distinct output)) and, only for the repetition
//!   penalty, `prompt_distinct`. Nothing is O(vocab).

use std::collections::HashMap;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Index into `output`, or `NONE`.
    output: u32,
    in_prompt: bool,
}

/// One distinct output token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputCount {
    pub token: u32,
    pub count: u32,
    pub in_prompt: bool,
}

/// Prompt and output token ids of one sequence, reduced to what penalties and
/// `min_tokens` need.
#[derive(Debug, Clone, Default)]
pub struct TokenHistory {
    prompt_distinct: Vec<u32>,
    output: Vec<OutputCount>,
    slot: HashMap<u32, Slot>,
    prompt_len: usize,
    output_len: usize,
}

impl TokenHistory {
    /// History of a sequence that has generated nothing yet.
    pub fn new(prompt: &[u32]) -> Self {
        let mut h = Self {
            prompt_len: prompt.len(),
            ..Self::default()
        };
        for &t in prompt {
            h.slot.entry(t).or_insert_with(|| {
                h.prompt_distinct.push(t);
                Slot {
                    output: NONE,
                    in_prompt: true,
                }
            });
        }
        h
    }

    /// Rebuild from token ids (after preemption the engine may re-create it).
    pub fn from_tokens(prompt: &[u32], output: &[u32]) -> Self {
        let mut h = Self::new(prompt);
        for &t in output {
            h.push_output(t);
        }
        h
    }

    /// Record one generated (or forced) output token.
    pub fn push_output(&mut self, token: u32) {
        self.output_len += 1;
        let slot = self.slot.entry(token).or_insert(Slot {
            output: NONE,
            in_prompt: false,
        });
        if slot.output == NONE {
            slot.output = self.output.len() as u32;
            self.output.push(OutputCount {
                token,
                count: 1,
                in_prompt: slot.in_prompt,
            });
        } else {
            self.output[slot.output as usize].count += 1;
        }
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Number of output tokens pushed so far (the next output step index).
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// How often `token` occurs in the output.
    pub fn output_count(&self, token: u32) -> u32 {
        match self.slot.get(&token) {
            Some(s) if s.output != NONE => self.output[s.output as usize].count,
            _ => 0,
        }
    }

    /// Whether `token` occurs in the prompt or the output.
    pub fn seen(&self, token: u32) -> bool {
        self.slot.contains_key(&token)
    }

    pub(crate) fn prompt_distinct(&self) -> &[u32] {
        &self.prompt_distinct
    }

    pub(crate) fn output_counts(&self) -> &[OutputCount] {
        &self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact() {
        let mut h = TokenHistory::new(&[5, 3, 5, 9]);
        assert_eq!(h.prompt_len(), 4);
        assert_eq!(h.prompt_distinct(), &[5, 3, 9]);
        for t in [3, 7, 7, 7, 3] {
            h.push_output(t);
        }
        assert_eq!(h.output_len(), 5);
        assert_eq!(
            h.output_counts(),
            &[
                OutputCount {
                    token: 3,
                    count: 2,
                    in_prompt: true
                },
                OutputCount {
                    token: 7,
                    count: 3,
                    in_prompt: false
                },
            ]
        );
        assert_eq!(h.output_count(7), 3);
        assert_eq!(h.output_count(5), 0);
        assert_eq!(h.output_count(1000), 0);
        assert!(h.seen(9) && h.seen(7) && !h.seen(4));
    }

    #[test]
    fn from_tokens_equals_incremental() {
        let mut a = TokenHistory::new(&[1, 2]);
        a.push_output(2);
        a.push_output(4);
        let b = TokenHistory::from_tokens(&[1, 2], &[2, 4]);
        assert_eq!(a.output_counts(), b.output_counts());
        assert_eq!(a.prompt_distinct(), b.prompt_distinct());
        assert_eq!((a.prompt_len(), a.output_len()), (2, 2));
        assert_eq!((b.prompt_len(), b.output_len()), (2, 2));
    }
}
