//! `Sampler`: one sequence's logits -> `SampledToken`, using reusable scratch.
//!
//! Pipeline (order fixed; HF `generate` order for the truncations):
//!
//! ```text
//!  logits (vocab,) --copy--> x
//!  x[t] for t seen in prompt+output : x > 0 ? x / rep : x * rep   (repetition)
//!  x[t] for t in output             : x -= freq * count; x -= presence
//!  output_len < min_tokens          : x[eos], x[stop ids] = -inf
//!  not greedy                       : x /= temperature
//!  ---- logprobs = log_softmax(x) here (greedy: temperature 1) ----
//!  pool = top_k(x)                   sorted by (x desc, id asc)
//!  pool = { t in pool : p_t >= min_p * p_max }      (keeps a prefix)
//!  pool = shortest prefix of pool whose mass >= top_p * mass(top_k set)
//!  token = inverse CDF of u = uniform(seq_seed, step) over pool
//! ```
//!
//! Logprob choice: `logprob` and `top_logprobs` describe the distribution the
//! sampler actually drew from *before truncation*: after penalties, the
//! `min_tokens` mask and temperature, but not renormalized over the top-k /
//! top-p / min-p set. (vLLM's default is the raw model distribution; ours
//! reflects penalties and temperature, which the budget controller's
//! confidence signals need, and never reports log(1) = 0 for a top_k=1 draw.)
//! Greedy requests report the distribution at temperature 1.
//!
//! Invariants:
//! - Greedy ties go to the lowest token id; truncation orders candidates by
//!   (logit desc, id asc), so every candidate set is a function of the logits.
//! - The only randomness is `uniform(seq_seed, step)`; the scratch buffers
//!   carry no state between calls.
//! - Softmax: max subtraction, f32 `exp` per token, f64 accumulation.
//! - No per-step allocation except the returned `top_logprobs` (<= 20 pairs).
//!   Full sorts never happen: top-k and top-p use partial selection.

use std::cmp::Ordering;

use super::history::TokenHistory;
use super::params::SamplingParams;
use super::rng::uniform;

/// First prefix size tried when top-p runs without top-k; grown 4x per round.
const TOP_P_FIRST_PREFIX: usize = 64;

/// A logits row the sampler cannot use. The engine aborts the sequence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("logits must have {expected} entries (the vocabulary size), given {given}")]
    WrongVocabSize { expected: usize, given: usize },
    #[error("logit of token {token} must be finite or -inf, given {value}")]
    NonFiniteLogit { token: u32, value: f32 },
    #[error("no token can be sampled: all {vocab} logits are -inf after masking")]
    NothingToSample { vocab: usize },
}

/// One sampled position.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// Log-probability of `token` (see the module doc for which distribution).
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens, by (logprob desc, id asc);
    /// empty unless requested. Masked tokens may appear with -inf.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Reusable sampling state for one vocabulary. Cost: 8 bytes per vocab entry
/// (1.2 MB at 150k), allocated once in `new`.
#[derive(Debug, Clone)]
pub struct Sampler {
    vocab: usize,
    eos_token_ids: Vec<u32>,
    /// (vocab,) f32: the working copy of the logits, penalized and scaled.
    x: Vec<f32>,
    /// (<= vocab,) u32: candidate ids, partially ordered in place.
    ids: Vec<u32>,
}

/// Softmax summary of `x`: p_t = exp(x_t - max) / sum.
#[derive(Debug, Clone, Copy)]
struct Dist {
    max: f32,
    argmax: u32,
    sum: f64,
    ln_sum: f64,
}

impl Dist {
    fn weight(&self, x: f32) -> f64 {
        f64::from((x - self.max).exp())
    }

    fn logprob(&self, x: f32) -> f32 {
        (f64::from(x - self.max) - self.ln_sum) as f32
    }
}

/// (logit desc, id asc). `x` holds no NaN once `Dist` is built.
fn by_logit_desc(x: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    |a, b| {
        let (xa, xb) = (x[*a as usize], x[*b as usize]);
        xb.partial_cmp(&xa)
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(b))
    }
}

/// Make `ids[..n]` the `n` greatest of `ids` under `by_logit_desc`, sorted.
/// O(len + n log n).
fn select_sorted(ids: &mut [u32], n: usize, x: &[f32]) {
    let n = n.min(ids.len());
    if n == 0 {
        return;
    }
    let cmp = by_logit_desc(x);
    if n < ids.len() {
        ids.select_nth_unstable_by(n - 1, &cmp);
    }
    ids[..n].sort_unstable_by(&cmp);
}

/// Penalties in place (see the module diagram). Ids outside `x` are ignored.
/// O(distinct output), plus O(distinct prompt) when the repetition penalty is on.
pub(crate) fn apply_penalties(x: &mut [f32], params: &SamplingParams, history: &TokenHistory) {
    let rep = params.repetition_penalty;
    let (freq, presence) = (params.frequency_penalty, params.presence_penalty);
    let penalize = |v: &mut f32| {
        if *v > 0.0 {
            *v /= rep;
        } else {
            *v *= rep;
        }
    };
    if rep != 1.0 {
        for &t in history.prompt_distinct() {
            if let Some(v) = x.get_mut(t as usize) {
                penalize(v);
            }
        }
    }
    if rep == 1.0 && freq == 0.0 && presence == 0.0 {
        return;
    }
    for c in history.output_counts() {
        let Some(v) = x.get_mut(c.token as usize) else {
            continue;
        };
        if rep != 1.0 && !c.in_prompt {
            penalize(v);
        }
        *v -= freq * c.count as f32;
        *v -= presence;
    }
}

impl Sampler {
    /// `eos_token_ids`: the model's end-of-sequence ids (several for some
    /// models); they end a sample unless `ignore_eos`, and are masked before
    /// `min_tokens`.
    pub fn new(vocab_size: usize, eos_token_ids: &[u32]) -> Self {
        Self {
            vocab: vocab_size,
            eos_token_ids: eos_token_ids.to_vec(),
            x: vec![0.0; vocab_size],
            ids: Vec::with_capacity(vocab_size),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Sample output position `step` (normally `history.output_len()`) of the
    /// sequence seeded `seq_seed` from one row of logits.
    pub fn sample(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
        history: &TokenHistory,
        seq_seed: u64,
        step: u32,
    ) -> Result<SampledToken, SampleError> {
        let dist = self.prepare(logits, params, history)?;
        let (token, sorted) = if params.is_greedy() {
            (dist.argmax, 0)
        } else {
            self.draw(params, &dist, uniform(seq_seed, step))
        };
        let logprob = dist.logprob(self.x[token as usize]);
        let n_top = params.num_top_logprobs();
        let top_logprobs = if n_top > 0 {
            self.top_logprobs(n_top, sorted, &dist)
        } else {
            Vec::new()
        };
        Ok(SampledToken {
            token,
            logprob,
            top_logprobs,
        })
    }

    /// Copy, penalize, mask, scale; then the softmax summary. Three O(vocab)
    /// passes (copy, max, sum of exp) plus O(history) for penalties.
    fn prepare(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
        history: &TokenHistory,
    ) -> Result<Dist, SampleError> {
        if logits.len() != self.vocab {
            return Err(SampleError::WrongVocabSize {
                expected: self.vocab,
                given: logits.len(),
            });
        }
        let x = &mut self.x;
        x.copy_from_slice(logits);
        apply_penalties(x, params, history);
        if (history.output_len() as u64) < u64::from(params.min_tokens) {
            let eos: &[u32] = if params.ignore_eos {
                &[]
            } else {
                &self.eos_token_ids
            };
            for &t in eos.iter().chain(&params.stop_token_ids) {
                if let Some(v) = x.get_mut(t as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if !params.is_greedy() && params.temperature != 1.0 {
            let t = params.temperature;
            x.iter_mut().for_each(|v| *v /= t);
        }
        let (mut max, mut argmax) = (f32::NEG_INFINITY, 0u32);
        for (i, &v) in x.iter().enumerate() {
            if v.is_nan() || v == f32::INFINITY {
                return Err(SampleError::NonFiniteLogit {
                    token: i as u32,
                    value: logits[i],
                });
            }
            if v > max {
                (max, argmax) = (v, i as u32);
            }
        }
        if max == f32::NEG_INFINITY {
            return Err(SampleError::NothingToSample { vocab: self.vocab });
        }
        let mut dist = Dist {
            max,
            argmax,
            sum: 0.0,
            ln_sum: 0.0,
        };
        dist.sum = x.iter().map(|&v| dist.weight(v)).sum();
        dist.ln_sum = dist.sum.ln();
        Ok(dist)
    }

    /// Truncate and draw. Returns the token and how long a prefix of `ids` is
    /// the globally sorted top of the vocabulary (reused for top_logprobs).
    fn draw(&mut self, params: &SamplingParams, dist: &Dist, u: f64) -> (u32, usize) {
        let top_k = params.top_k_limit().filter(|&k| k < self.vocab);
        let top_p = (params.top_p < 1.0).then_some(f64::from(params.top_p));
        let min_p = (params.min_p > 0.0).then_some(f64::from(params.min_p));
        if top_k.is_none() && top_p.is_none() && min_p.is_none() {
            return (self.draw_full(dist, u), 0);
        }
        let (len, sorted) = self.truncate(top_k, top_p, min_p, dist);
        let (x, pool) = (&self.x, &self.ids[..len]);
        let total: f64 = pool.iter().map(|&t| dist.weight(x[t as usize])).sum();
        (
            inverse_cdf(
                pool.iter().copied(),
                |t| dist.weight(x[t as usize]),
                u * total,
            ),
            sorted,
        )
    }

    /// No truncation: inverse CDF over the whole vocabulary in id order, with
    /// the same summation order as `Dist::sum`. No sort, no index buffer.
    fn draw_full(&self, dist: &Dist, u: f64) -> u32 {
        let x = &self.x;
        inverse_cdf(
            0..self.vocab as u32,
            |t| dist.weight(x[t as usize]),
            u * dist.sum,
        )
    }

    /// Leave the candidate set in `ids[..len]` and return `(len, sorted)`:
    /// `ids[..sorted]` is the global top-`sorted`, in order.
    ///
    /// The three filters each keep a prefix of the sorted order, so the result
    /// is the shortest of the three prefixes. min_p is applied before the
    /// top-p walk only to shrink the walk; top-p still normalizes by the mass
    /// of the top-k set (HF order: top_k, top_p, min_p).
    fn truncate(
        &mut self,
        top_k: Option<usize>,
        top_p: Option<f64>,
        min_p: Option<f64>,
        dist: &Dist,
    ) -> (usize, usize) {
        let (x, ids) = (&self.x, &mut self.ids);
        ids.clear();
        ids.extend(0..self.vocab as u32);
        let (mut len, mut sorted, mut mass) = (self.vocab, 0, dist.sum);
        if let Some(k) = top_k {
            select_sorted(ids, k, x);
            (len, sorted) = (k, k);
            mass = ids[..k].iter().map(|&t| dist.weight(x[t as usize])).sum();
        }
        if let Some(m) = min_p {
            // p_t >= m * p_max  <=>  exp(x_t - max) >= m. Order-preserving
            // compaction: the survivors of the sorted prefix stay a prefix.
            let mut kept = 0;
            for i in 0..len {
                let t = ids[i];
                if dist.weight(x[t as usize]) >= m {
                    ids[kept] = t;
                    kept += 1;
                } else if i < sorted {
                    sorted = kept;
                }
            }
            sorted = sorted.min(kept);
            len = kept;
        }
        if let Some(p) = top_p {
            // Keep token i (in sorted order) while the mass before it < p * mass.
            let target = p * mass;
            let (mut cum, mut i) = (0.0, 0);
            while i < len {
                if i == sorted {
                    let grow = (sorted * 4).max(TOP_P_FIRST_PREFIX).min(len);
                    select_sorted(&mut ids[sorted..len], grow - sorted, x);
                    sorted = grow;
                }
                if i > 0 && cum >= target {
                    break;
                }
                cum += dist.weight(x[ids[i] as usize]);
                i += 1;
            }
            len = i;
        }
        (len, sorted)
    }

    /// Top `n` logprobs by (logprob desc, id asc); reuses the sorted prefix
    /// that truncation left in `ids` when it is long enough.
    fn top_logprobs(&mut self, n: usize, sorted: usize, dist: &Dist) -> Vec<(u32, f32)> {
        let n = n.min(self.vocab);
        if sorted < n {
            self.ids.clear();
            self.ids.extend(0..self.vocab as u32);
            select_sorted(&mut self.ids, n, &self.x);
        }
        let x = &self.x;
        self.ids[..n]
            .iter()
            .map(|&t| (t, dist.logprob(x[t as usize])))
            .collect()
    }
}

/// First token whose cumulative weight exceeds `target`; zero-weight tokens
/// are never chosen. If rounding leaves `target` at the total, the last token
/// with positive weight is chosen. `tokens` holds at least one such token.
fn inverse_cdf(tokens: impl Iterator<Item = u32>, weight: impl Fn(u32) -> f64, target: f64) -> u32 {
    let (mut cum, mut last) = (0.0, None);
    for t in tokens {
        let w = weight(t);
        if w > 0.0 {
            cum += w;
            last = Some(t);
            if cum > target {
                return t;
            }
        }
    }
    last.expect("the argmax has weight 1, so some token has positive weight")
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
