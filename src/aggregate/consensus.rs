//! Early-stop signals the budget controller reads while samples run:
//! ESC-style window agreement, the DeepConf-style confidence threshold, and a
//! streaming sliding-window mean of token logprobs.
//!
//! ```text
//!  WindowMean (w = 3), ring buffer of the last w logprobs:
//!    push:   -1.0   -0.5   -1.5   -0.5   -4.0
//!    mean:   None   None   -1.0   -0.8333 -2.0
//!    min:    None   None   -1.0   -1.0   -2.0
//!
//!  confidence_threshold([-2, -1, -4, -3], 50):  sorted -4 -3 -2 -1
//!    rank = 50 * (4 - 1) / 100 = 1.5  ->  -3 + 0.5 * (-2 - -3) = -2.5
//! ```
//!
//! Invariants:
//! - `WindowMean` uses O(w) memory and O(1) time per push (amortized: the
//!   running sum is re-derived from the buffer every w pushes, so rounding
//!   cannot drift over long samples). Logprobs below `LOGPROB_FLOOR`, -inf and
//!   NaN count as `LOGPROB_FLOOR`, so one forced token cannot make a mean -inf.
//! - `confidence_threshold` is numpy's default ("linear") percentile.

use super::vote::Candidate;

/// The lowest logprob a `WindowMean` counts (e^-100 is 0 for every purpose).
pub const LOGPROB_FLOOR: f32 = -100.0;

/// ESC-style window: true when the last `w` candidates (in completion order as
/// given) all have an answer and the same key. False when `w` is 0 or fewer
/// than `w` candidates are given.
pub fn window_agrees(cands: &[Candidate], w: usize) -> bool {
    if w == 0 || cands.len() < w {
        return false;
    }
    let tail = &cands[cands.len() - w..];
    let Some(first) = &tail[0].key else {
        return false;
    };
    tail.iter().all(|c| c.key.as_ref() == Some(first))
}

/// DeepConf-style stop threshold: the `percentile`-th percentile (0..=100) of
/// the first wave's per-sample lowest sliding-window mean logprobs. Linear
/// interpolation between the sorted values (numpy's default):
///
/// ```text
/// v[0] <= .. <= v[n-1]      rank = percentile * (n - 1) / 100
/// result = v[floor(rank)] + (rank - floor(rank)) * (v[ceil(rank)] - v[floor(rank)])
/// ```
///
/// NaN values are ignored. `None` when no value remains or `percentile` is
/// outside 0..=100 (or NaN).
pub fn confidence_threshold(first_wave_min_window_means: &[f64], percentile: f64) -> Option<f64> {
    if !(0.0..=100.0).contains(&percentile) {
        return None;
    }
    let mut v: Vec<f64> = first_wave_min_window_means
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = percentile * (v.len() - 1) as f64 / 100.0;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    if lo == hi || frac == 0.0 {
        return Some(v[lo]);
    }
    Some(v[lo] + frac * (v[hi] - v[lo]))
}

/// A streaming sliding-window mean of token logprobs over the last `w` tokens,
/// and the minimum window mean seen so far.
#[derive(Debug, Clone)]
pub struct WindowMean {
    /// Ring buffer of the last `w` (floored) logprobs; `buf.len() == w`.
    buf: Vec<f32>,
    /// Next slot of `buf` to overwrite.
    next: usize,
    /// Tokens pushed so far.
    seen: u64,
    /// Sum of the values in `buf` that were pushed.
    sum: f64,
    min: Option<f64>,
}

impl WindowMean {
    /// A window of `w` tokens; `w` = 0 is taken as 1.
    pub fn new(w: usize) -> WindowMean {
        WindowMean {
            buf: vec![0.0; w.max(1)],
            next: 0,
            seen: 0,
            sum: 0.0,
            min: None,
        }
    }

    /// The window length.
    pub fn window(&self) -> usize {
        self.buf.len()
    }

    /// Adds one token's logprob; the mean of the last `w` logprobs once `w`
    /// tokens were seen, `None` before.
    pub fn push(&mut self, lp: f32) -> Option<f64> {
        let lp = if lp >= LOGPROB_FLOOR {
            lp
        } else {
            LOGPROB_FLOOR
        };
        let w = self.buf.len();
        self.sum += f64::from(lp) - f64::from(self.buf[self.next]);
        self.buf[self.next] = lp;
        self.next += 1;
        self.seen += 1;
        if self.next == w {
            self.next = 0;
            self.sum = self.buf.iter().map(|&x| f64::from(x)).sum();
        }
        if self.seen < w as u64 {
            return None;
        }
        let mean = self.sum / w as f64;
        self.min = Some(self.min.map_or(mean, |m| m.min(mean)));
        Some(mean)
    }

    /// The lowest window mean seen so far (`None` before `w` tokens).
    pub fn min(&self) -> Option<f64> {
        self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[Option<&str>]) -> Vec<Candidate> {
        ks.iter()
            .enumerate()
            .map(|(i, k)| Candidate {
                score: None,
                sample: i,
                key: k.map(str::to_string),
                mean_logprob: -1.0,
            })
            .collect()
    }

    #[test]
    fn window_agrees_on_the_tail_only() {
        let c = keys(&[Some("1"), Some("2"), Some("2"), Some("2")]);
        assert!(window_agrees(&c, 3));
        assert!(window_agrees(&c, 1));
        assert!(!window_agrees(&c, 4));
        assert!(!window_agrees(&c, 5));
        assert!(!window_agrees(&c, 0));
        assert!(!window_agrees(&[], 1));
        let c = keys(&[Some("2"), None, Some("2")]);
        assert!(!window_agrees(&c, 2));
        assert!(!window_agrees(&c, 3));
        let c = keys(&[None, None]);
        assert!(!window_agrees(&c, 2));
        assert!(!window_agrees(&c, 1));
    }

    #[test]
    fn threshold_percentiles() {
        let v = [-2.0, -1.0, -4.0, -3.0];
        assert_eq!(confidence_threshold(&v, 0.0), Some(-4.0));
        assert_eq!(confidence_threshold(&v, 100.0), Some(-1.0));
        assert_eq!(confidence_threshold(&v, 50.0), Some(-2.5));
        // rank = 10 * 3 / 100 = 0.3 -> -4 + 0.3 * 1
        assert_eq!(confidence_threshold(&v, 10.0), Some(-4.0 + 0.3));
        let five = [-0.5, -0.1, -0.9, -0.3, -0.7];
        // rank = 25 * 4 / 100 = 1 exactly -> sorted[1]
        assert_eq!(confidence_threshold(&five, 25.0), Some(-0.7));
        let ints = [0.0, -4.0, -1.0, -3.0, -2.0];
        // rank = 62.5 * 4 / 100 = 2.5 -> -2 + 0.5 * (-1 - -2)
        assert_eq!(confidence_threshold(&ints, 62.5), Some(-1.5));
        assert_eq!(confidence_threshold(&[-1.5], 10.0), Some(-1.5));
        assert_eq!(
            confidence_threshold(&[-1.0, f64::NAN, -3.0], 50.0),
            Some(-2.0)
        );
    }

    #[test]
    fn threshold_none_cases() {
        assert_eq!(confidence_threshold(&[], 10.0), None);
        assert_eq!(confidence_threshold(&[f64::NAN], 10.0), None);
        assert_eq!(confidence_threshold(&[-1.0], -0.1), None);
        assert_eq!(confidence_threshold(&[-1.0], 100.5), None);
        assert_eq!(confidence_threshold(&[-1.0], f64::NAN), None);
    }

    #[test]
    fn window_mean_example_from_the_docs() {
        let mut m = WindowMean::new(3);
        assert_eq!(m.window(), 3);
        assert_eq!(m.min(), None);
        assert_eq!(m.push(-1.0), None);
        assert_eq!(m.push(-0.5), None);
        assert_eq!(m.min(), None);
        assert_eq!(m.push(-1.5), Some(-1.0));
        assert_eq!(m.push(-0.5), Some(-2.5 / 3.0));
        assert_eq!(m.min(), Some(-1.0));
        assert_eq!(m.push(-4.0), Some(-2.0));
        assert_eq!(m.min(), Some(-2.0));
        assert_eq!(m.push(0.0), Some(-1.5));
        assert_eq!(m.min(), Some(-2.0));
    }

    #[test]
    fn window_mean_of_one_and_zero() {
        let mut m = WindowMean::new(0);
        assert_eq!(m.window(), 1);
        assert_eq!(m.push(-0.25), Some(-0.25));
        assert_eq!(m.push(-0.75), Some(-0.75));
        assert_eq!(m.push(-0.5), Some(-0.5));
        assert_eq!(m.min(), Some(-0.75));
    }

    #[test]
    fn window_mean_floors_non_finite_logprobs() {
        let mut m = WindowMean::new(2);
        assert_eq!(m.push(f32::NEG_INFINITY), None);
        assert_eq!(m.push(f32::NAN), Some(-100.0));
        assert_eq!(m.push(-1000.0), Some(-100.0));
        assert_eq!(m.push(-1.0), Some(-50.5));
        assert_eq!(m.push(-1.0), Some(-1.0));
        assert_eq!(m.min(), Some(-100.0));
    }

    #[test]
    fn window_mean_does_not_drift() {
        // 10,000 pushes of values with no exact binary sum.
        let mut m = WindowMean::new(16);
        let mut last = None;
        for i in 0..10_000u32 {
            last = m.push(-0.1 * (i % 7) as f32);
        }
        let tail: f64 = (10_000u32 - 16..10_000)
            .map(|i| f64::from(-0.1 * (i % 7) as f32))
            .sum();
        assert_eq!(last, Some(tail / 16.0));
    }
}
