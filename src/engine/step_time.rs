//! Step-time target for prompt prefill (`--max-step-ms`): bounds the pause that running
//! streams see while new prompts are prefilled, by capping the prompt tokens of a step that
//! also decodes (`Scheduler::set_prefill_cap`).
//!
//! Cost model: a step of `t` tokens takes about `t x c` seconds, with `c` an exponential
//! average (weight 0.25 for the newest) of seconds per token over steps of at least
//! [`MIN_TOKENS`] tokens (smaller steps are dominated by reading the weights once, not by
//! the tokens, so they would overstate `c`). The cap is what fits the target after one
//! token per running sequence, never below [`MIN_CAP`] so prompts always progress. Before
//! the first measured step there is no cap. Results never change: only which step a
//! prompt token is computed in (batch invariance).

use std::time::Duration;

/// Steps smaller than this do not update the per-token cost.
pub const MIN_TOKENS: usize = 64;
/// The smallest prompt-token cap (one KV block's worth at the default block size).
pub const MIN_CAP: usize = 16;

/// The step-time target and the measured cost per token.
#[derive(Debug, Clone)]
pub struct StepClock {
    target_s: f64,
    per_token_s: Option<f64>,
}

impl StepClock {
    /// `None` for a target of 0 ms (off).
    pub fn new(target_ms: u32) -> Option<Self> {
        (target_ms > 0).then(|| StepClock {
            target_s: f64::from(target_ms) / 1e3,
            per_token_s: None,
        })
    }

    /// The prompt-token cap for a step with `running` sequences decoding.
    pub fn cap(&self, running: usize) -> Option<usize> {
        let c = self.per_token_s?;
        let fits = (self.target_s / c).floor() as usize;
        Some(fits.saturating_sub(running).max(MIN_CAP))
    }

    /// Records a step of `tokens` tokens that took `took`.
    pub fn observe(&mut self, tokens: usize, took: Duration) {
        if tokens < MIN_TOKENS {
            return;
        }
        let c = took.as_secs_f64() / tokens as f64;
        self.per_token_s = Some(match self.per_token_s {
            None => c,
            Some(old) => 0.75 * old + 0.25 * c,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_at_zero_and_uncapped_until_measured() {
        assert!(StepClock::new(0).is_none());
        let clock = StepClock::new(1000).unwrap();
        assert_eq!(clock.cap(4), None);
    }

    #[test]
    fn cap_fits_the_target_after_the_decodes() {
        let mut clock = StepClock::new(1000).unwrap();
        // 512 tokens in 2 s: 1/256 s per token; 1 s holds 256 tokens, 10 of them decodes.
        clock.observe(512, Duration::from_secs(2));
        assert_eq!(clock.cap(10), Some(246));
        // Small steps do not count (weight reads dominate them).
        clock.observe(8, Duration::from_secs(1));
        assert_eq!(clock.cap(10), Some(246));
        // Exponential average: 0.75 / 256 + 0.25 / 128 = 1.25 / 256 s per token -> 204.
        clock.observe(128, Duration::from_secs(1));
        assert_eq!(clock.cap(0), Some(204));
        // Never below the floor, however slow the steps or many the decodes.
        assert_eq!(clock.cap(500), Some(MIN_CAP));
    }
}
