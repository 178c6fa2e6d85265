//! Probes of running or finished samples, on forks of their KV (`Scheduler::add_probe`):
//! the prompts a model family answers them with, and the state of each probe in flight.
//!
//! ```text
//!  Answer (certaindex)  sample tokens + answer suffix  -> greedy decode <= max_new tokens
//!                       (ends early at EOS or a newline after some text) -> its text
//!  Verify (scorer)      sample tokens + verify suffix  -> one row of logits
//!                       -> score = P(yes tokens) / (P(yes tokens) + P(no tokens))
//! ```
//!
//! Probes are batched with the regular rows of a step, never streamed, and draw nothing from
//! the sample's random stream (greedy), so a probed sample's tokens are those it would have
//! produced unprobed. Their tokens (the rows they compute) are counted as `probe` tokens.
//! Memory: a probe holds a fork of its sample's block table (shared blocks; a copy only of
//! the partial block it writes) plus at most `max_new` token ids.

use serde::Deserialize;

use crate::budget::ProbeKind;
use crate::model::tokenizer::Tokenizer;

/// The probe prompts of a model family, as text (`--probe-prompts` reads them from JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTexts {
    /// Appended to a thinking sample: asks it for its final answer so far.
    pub answer: String,
    /// Appended to a sample that ended with its end-of-turn token: asks whether the answer
    /// is correct.
    pub verify: String,
    /// The same for a sample that did not end its turn (cut at its token limit).
    pub verify_open: String,
    /// Words whose first tokens mean yes / no as the first token of the verdict.
    pub yes: Vec<String>,
    pub no: Vec<String>,
}

impl ProbeTexts {
    /// Defaults for a chat template: ChatML turns (`<|im_start|>`, Qwen, SmolLM2) or plain
    /// text.
    pub fn for_template(template: &str) -> Self {
        let answer = "\n\nOh, I suddenly got the answer to the whole problem. **Final Answer:** ";
        let words = |w: [&str; 3]| w.iter().map(|s| s.to_string()).collect();
        if template.contains("<|im_start|>") {
            let ask = "\n<|im_start|>user\nIs the answer above correct? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n";
            ProbeTexts {
                answer: answer.into(),
                verify: ask.into(),
                verify_open: format!("<|im_end|>{ask}"),
                yes: words(["Yes", " Yes", "yes"]),
                no: words(["No", " No", "no"]),
            }
        } else {
            let ask = "\n\nQuestion: Is the answer above correct? Answer Yes or No.\nAnswer:";
            ProbeTexts {
                answer: answer.into(),
                verify: ask.into(),
                verify_open: ask.into(),
                yes: words([" Yes", "Yes", " yes"]),
                no: words([" No", "No", " no"]),
            }
        }
    }

    /// Reads a JSON object with every field.
    pub fn from_json(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("probe prompts: {e}"))
    }
}

/// The probe prompts as token ids.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbePrompts {
    pub answer: Vec<u32>,
    pub verify: Vec<u32>,
    pub verify_open: Vec<u32>,
    /// First tokens of the yes / no words (deduplicated, disjoint).
    pub yes: Vec<u32>,
    pub no: Vec<u32>,
}

impl ProbePrompts {
    /// Tokenizes `t` (special tokens in the text are recognised).
    pub fn new(t: &ProbeTexts, tok: &Tokenizer) -> Result<Self, String> {
        let enc = |s: &str| {
            tok.encode(s, false)
                .map_err(|e| format!("probe prompt {s:?}: {e}"))
        };
        let first = |words: &[String]| -> Result<Vec<u32>, String> {
            let mut ids = Vec::new();
            for w in words {
                if let Some(&id) = enc(w)?.first() {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        };
        let (yes, no) = (first(&t.yes)?, first(&t.no)?);
        let answer = enc(&t.answer)?;
        if yes.is_empty() || no.is_empty() || yes.iter().any(|y| no.contains(y)) {
            // A vocabulary where yes and no cannot be told apart by their first token: no
            // verification (its probes are reported as dropped), answer probes still run.
            tracing::warn!(
                yes = ?t.yes,
                no = ?t.no,
                "probe prompts: the yes and no words share first tokens; self-verification is off"
            );
            return Ok(ProbePrompts {
                answer,
                ..ProbePrompts::default()
            });
        }
        Ok(ProbePrompts {
            answer,
            verify: enc(&t.verify)?,
            verify_open: enc(&t.verify_open)?,
            yes,
            no,
        })
    }
}

/// A probe in flight.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub rid: u64,
    pub sample: usize,
    pub kind: ProbeKind,
    /// Tokens decoded so far (answer probes).
    pub out: Vec<u32>,
    pub max_new: usize,
    /// Tokens its rows computed so far.
    pub tokens: usize,
}

/// `P(yes) / (P(yes) + P(no))` from one row of logits (log-sum-exp over each set; 0.5 when
/// both are 0, NaN logits count as -inf).
pub fn yes_share(logits: &[f32], yes: &[u32], no: &[u32]) -> f64 {
    let at = |i: &u32| {
        let v = f64::from(logits[*i as usize]);
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            v
        }
    };
    let lse = |ids: &[u32]| {
        let m = ids.iter().map(at).fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            return m;
        }
        m + ids.iter().map(|i| (at(i) - m).exp()).sum::<f64>().ln()
    };
    let (y, n) = (lse(yes), lse(no));
    if y == f64::NEG_INFINITY && n == f64::NEG_INFINITY {
        return 0.5;
    }
    // sigmoid(y - n), stable on both sides
    let d = y - n;
    if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    }
}

/// Greedy choice: the highest logit, ties to the lowest id (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_share_is_the_normalised_probability() {
        let mut l = vec![0f32; 8];
        l[1] = 2.0; // yes
        l[2] = 2.0; // yes
        l[3] = 1.0; // no
        let want = (2.0 * 2f64.exp()) / (2.0 * 2f64.exp() + 1f64.exp());
        assert!((yes_share(&l, &[1, 2], &[3]) - want).abs() < 1e-12);
        assert!((yes_share(&l, &[3], &[1, 2]) - (1.0 - want)).abs() < 1e-12);
        l[5] = f32::NEG_INFINITY;
        l[6] = f32::NAN;
        assert_eq!(yes_share(&l, &[5], &[6]), 0.5);
        assert_eq!(yes_share(&l, &[1], &[6]), 1.0);
        // far apart: no overflow
        l[4] = -1000.0;
        assert_eq!(yes_share(&l, &[4], &[1]), 0.0);
    }

    #[test]
    fn argmax_ties_go_to_the_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), 1);
    }

    #[test]
    fn chatml_defaults_close_an_open_turn() {
        let t = ProbeTexts::for_template("{{'<|im_start|>' + role}}");
        assert!(t.verify.starts_with("\n<|im_start|>user\n"));
        assert_eq!(t.verify_open, format!("<|im_end|>{}", t.verify));
        let plain = ProbeTexts::for_template("{{ messages }}");
        assert!(plain.verify.ends_with("Answer:"));
        let e = ProbeTexts::from_json(r#"{"answer": "x"}"#).unwrap_err();
        assert!(e.starts_with("probe prompts: missing field"), "{e}");
    }
}
