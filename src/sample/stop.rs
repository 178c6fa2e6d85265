//! Stop conditions: `FinishReason`, the per-token check (`finish_on_token`)
//! and `StopChecker` for stop strings over incrementally detokenized text.
//!
//! ```text
//!  text so far:  "The answer is 4.\n\nUs"        stop = ["\n\nUser:"]
//!                 |<-- stream_until -->|<hold>|   hold = longest suffix that is
//!                                                 a proper prefix of a stop string
//!  next:         "The answer is 4.\n\nUser:"
//!                 |<-- truncate_at -->|           Stopped: final text = text[..truncate_at]
//! ```
//!
//! Invariants (`StopChecker`, for append-only text):
//! - `stream_until` never decreases between calls, and a `Stopped` call's
//!   `truncate_at` is >= every earlier `stream_until`: text that was streamed
//!   never has to be taken back, and no byte of a stop string is streamed.
//! - `Stopped` reports the earliest occurrence (lowest start byte, then the
//!   lowest stop index) of any stop string in the whole text.
//! - `stream_until` and `truncate_at` are UTF-8 char boundaries.
//! - Each call costs O((new bytes + longest stop) x stops), not O(text).

use super::params::SamplingParams;

/// Why a sample ended; `as_str` is the OpenAI `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// EOS, a stop token id or a stop string.
    Stop,
    /// `max_tokens` (or the context length) reached.
    Length,
    /// Cancelled by the client or the engine (not an OpenAI value; vLLM's).
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether appending `token` ends the sample. `num_output_tokens` counts
/// `token` itself. EOS (unless `ignore_eos`) and `stop_token_ids` give `Stop`
/// once at least `min_tokens` tokens precede them (the sampler masks them
/// before that, so this is a second line of defense); otherwise reaching
/// `max_tokens` gives `Length`. `Stop` wins when both hold. The stop token's
/// text is not part of the output.
pub fn finish_on_token(
    params: &SamplingParams,
    eos_token_ids: &[u32],
    token: u32,
    num_output_tokens: usize,
) -> Option<FinishReason> {
    let is_stop_token = params.stop_token_ids.contains(&token)
        || (!params.ignore_eos && eos_token_ids.contains(&token));
    if is_stop_token && num_output_tokens > params.min_tokens as usize {
        Some(FinishReason::Stop)
    } else if num_output_tokens >= params.max_tokens as usize {
        Some(FinishReason::Length)
    } else {
        None
    }
}

/// Result of one `StopChecker::check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStatus {
    /// No stop string yet. `text[..stream_until]` may be sent to the client;
    /// the rest is held back because it could begin a stop string.
    Continue { stream_until: usize },
    /// `stop[stop_index]` occurs at byte `truncate_at`; the final text is
    /// `text[..truncate_at]` and the sample finishes with `Stop`.
    Stopped {
        stop_index: usize,
        truncate_at: usize,
    },
}

/// Per-sequence stop-string state. Feed it the whole text generated so far
/// after each detokenized token; the text must only grow (append-only).
#[derive(Debug, Clone)]
pub struct StopChecker {
    stops: Vec<String>,
    /// Longest stop string in bytes (0 when there are none).
    max_len: usize,
    /// Text length at the previous call: no stop string ends inside it.
    scanned: usize,
}

impl StopChecker {
    /// `stops` as validated in `SamplingParams` (non-empty strings).
    pub fn new(stops: &[String]) -> Self {
        debug_assert!(stops.iter().all(|s| !s.is_empty()));
        Self {
            max_len: stops.iter().map(String::len).max().unwrap_or(0),
            stops: stops.to_vec(),
            scanned: 0,
        }
    }

    /// Bytes that may be held back at most (longest stop string - 1).
    pub fn max_holdback(&self) -> usize {
        self.max_len.saturating_sub(1)
    }

    /// Check the text generated so far (all of it, not just the new piece).
    pub fn check(&mut self, text: &str) -> StopStatus {
        debug_assert!(text.len() >= self.scanned, "text must be append-only");
        if self.stops.is_empty() {
            self.scanned = text.len();
            return StopStatus::Continue {
                stream_until: text.len(),
            };
        }
        // A new match ends after `scanned`, so it starts at or after
        // `scanned - (max_len - 1)`; back up to a char boundary for `find`.
        let mut from = self.scanned.saturating_sub(self.max_len - 1);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        self.scanned = text.len();
        let window = &text[from..];
        let earliest = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| window.find(s.as_str()).map(|at| (from + at, i)))
            .min();
        if let Some((truncate_at, stop_index)) = earliest {
            return StopStatus::Stopped {
                stop_index,
                truncate_at,
            };
        }
        let hold = self
            .stops
            .iter()
            .map(|s| suffix_prefix_overlap(text.as_bytes(), s.as_bytes()))
            .max()
            .unwrap_or(0);
        StopStatus::Continue {
            stream_until: text.len() - hold,
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
/// Such a suffix starts with `stop`'s first byte, a UTF-8 lead byte, so
/// `text.len() - overlap` is a char boundary. O(len(stop)^2) worst case,
/// usually O(len(stop)) thanks to the last-byte test.
fn suffix_prefix_overlap(text: &[u8], stop: &[u8]) -> usize {
    let Some(&last) = text.last() else {
        return 0;
    };
    let longest = (stop.len() - 1).min(text.len());
    (1..=longest)
        .rev()
        .find(|&k| stop[k - 1] == last && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::RawSamplingParams;
    use proptest::prelude::*;

    fn checker(stops: &[&str]) -> StopChecker {
        StopChecker::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn cont(stream_until: usize) -> StopStatus {
        StopStatus::Continue { stream_until }
    }

    fn stopped(stop_index: usize, truncate_at: usize) -> StopStatus {
        StopStatus::Stopped {
            stop_index,
            truncate_at,
        }
    }

    #[test]
    fn finish_reason_strings() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.to_string(), "length");
        assert_eq!(FinishReason::Abort.as_str(), "abort");
        assert_eq!(
            serde_json::to_string(&FinishReason::Length).unwrap(),
            "\"length\""
        );
    }

    #[test]
    fn finish_on_token_rules() {
        let eos = [2];
        let p = RawSamplingParams {
            max_tokens: 5,
            min_tokens: 2,
            stop_token_ids: vec![9],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(finish_on_token(&p, &eos, 7, 1), None);
        // EOS / stop id as the 1st or 2nd token: min_tokens=2 not reached.
        assert_eq!(finish_on_token(&p, &eos, 2, 2), None);
        assert_eq!(finish_on_token(&p, &eos, 9, 1), None);
        assert_eq!(finish_on_token(&p, &eos, 2, 3), Some(FinishReason::Stop));
        assert_eq!(finish_on_token(&p, &eos, 9, 3), Some(FinishReason::Stop));
        assert_eq!(finish_on_token(&p, &eos, 7, 5), Some(FinishReason::Length));
        // Stop wins over Length on the last allowed token.
        assert_eq!(finish_on_token(&p, &eos, 2, 5), Some(FinishReason::Stop));
        let ignore = RawSamplingParams {
            ignore_eos: true,
            stop_token_ids: vec![9],
            ..Default::default()
        };
        let ignore = ignore.validate().unwrap();
        assert_eq!(finish_on_token(&ignore, &eos, 2, 1), None);
        assert_eq!(
            finish_on_token(&ignore, &eos, 9, 1),
            Some(FinishReason::Stop)
        );
    }

    #[test]
    fn no_stops_streams_everything() {
        let mut c = checker(&[]);
        assert_eq!(c.check("abc"), cont(3));
        assert_eq!(c.max_holdback(), 0);
    }

    #[test]
    fn holdback_then_truncate_within_one_token() {
        let mut c = checker(&["END"]);
        assert_eq!(c.max_holdback(), 2);
        assert_eq!(c.check("Hello "), cont(6));
        assert_eq!(c.check("Hello EN"), cont(6));
        assert_eq!(c.check("Hello END!"), stopped(0, 6));
    }

    #[test]
    fn stop_split_across_tokens() {
        let mut c = checker(&["\n\nUser:"]);
        let pieces = ["The answer", " is 4.", "\n", "\nUs", "er", ":", " more"];
        let mut text = String::new();
        let mut got = Vec::new();
        for p in pieces {
            text.push_str(p);
            let s = c.check(&text);
            got.push(s);
            if matches!(s, StopStatus::Stopped { .. }) {
                break;
            }
        }
        assert_eq!(
            got,
            vec![
                cont(10),
                cont(16),
                cont(16),
                cont(16),
                cont(16),
                stopped(0, 16)
            ]
        );
        assert_eq!(&text[..16], "The answer is 4.");
    }

    #[test]
    fn false_alarm_is_released() {
        let mut c = checker(&["abc"]);
        assert_eq!(c.check("xab"), cont(1));
        assert_eq!(c.check("xabd"), cont(4));
        // Overlapping candidates: "aab" with text ending "aa" holds 2 bytes.
        let mut c = checker(&["aab"]);
        assert_eq!(c.check("xaa"), cont(1));
        assert_eq!(c.check("xaaa"), cont(2));
        assert_eq!(c.check("xaaab"), stopped(0, 2));
    }

    #[test]
    fn earliest_match_wins() {
        // Both match in one step; "bcde" starts first.
        let mut c = checker(&["cd", "bcde"]);
        assert_eq!(c.check("abcdef"), stopped(1, 1));
        // Same start: the lower index wins.
        let mut c = checker(&["ab", "a"]);
        assert_eq!(c.check("xab"), stopped(0, 1));
        // A later stop string cannot beat one that was already held back.
        let mut c = checker(&["abcd", "c"]);
        assert_eq!(c.check("ab"), cont(0));
        assert_eq!(c.check("abcd"), stopped(0, 0));
    }

    #[test]
    fn unicode_holdback_and_truncation() {
        // "世界" is 6 bytes; after "你好世" the 3 bytes of 世 are held back.
        let mut c = checker(&["世界"]);
        assert_eq!(c.check("你好"), cont(6));
        assert_eq!(c.check("你好世"), cont(6));
        assert_eq!(c.check("你好世界。"), stopped(0, 6));
        // A stop string whose prefix ends inside a multi-byte char of it.
        let mut c = checker(&["é!"]);
        assert_eq!(c.check("café"), cont(3));
        assert_eq!(c.check("café?"), cont(6));
        // The scan window starts mid-char (3 x 'é' = 6 bytes, window from 5).
        let mut c = checker(&["ab"]);
        assert_eq!(c.check("ééé"), cont(6));
        assert_eq!(c.check("éééab"), stopped(0, 6));
        // Emoji (4 bytes) split over two checks.
        let mut c = checker(&["🛑 stop"]);
        assert_eq!(c.check("go 🛑"), cont(3));
        assert_eq!(c.check("go 🛑 st"), cont(3));
        assert_eq!(c.check("go 🛑 stop"), stopped(0, 3));
    }

    /// Reference: the first occurrence of any stop string in `text`.
    fn naive_first(text: &str, stops: &[String]) -> Option<(usize, usize)> {
        stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| text.find(s.as_str()).map(|at| (at, i)))
            .min()
    }

    proptest! {
        #[test]
        fn streaming_never_leaks_a_stop_string(
            pieces in proptest::collection::vec("[abé]{0,4}", 1..12),
            stops in proptest::collection::vec("[abé]{1,4}", 1..4),
        ) {
            let mut c = StopChecker::new(&stops);
            let mut text = String::new();
            let mut streamed = 0;
            let mut result = None;
            for p in &pieces {
                text.push_str(p);
                match c.check(&text) {
                    StopStatus::Continue { stream_until } => {
                        prop_assert!(stream_until >= streamed && stream_until <= text.len());
                        prop_assert!(text.is_char_boundary(stream_until));
                        streamed = stream_until;
                        // Nothing streamed contains or could still grow into a stop string:
                        // the held-back tail is exactly the longest pending prefix.
                        prop_assert_eq!(naive_first(&text, &stops), None);
                    }
                    StopStatus::Stopped { stop_index, truncate_at } => {
                        prop_assert!(truncate_at >= streamed);
                        result = Some((truncate_at, stop_index));
                        break;
                    }
                }
            }
            prop_assert_eq!(result, naive_first(&text, &stops));
            if result.is_none() {
                // Every held-back suffix really is a prefix of some stop string.
                let held = &text[streamed..];
                prop_assert!(held.is_empty() || stops.iter().any(|s| s.starts_with(held)));
            }
        }
    }
}
