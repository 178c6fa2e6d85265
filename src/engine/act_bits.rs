//! `--activation-bits auto|8|12`: the CPU integer GEMM's activation precision, fixed by the
//! operator or chosen per model at load by a measurement (`auto`, the default).
//!
//! 8-bit activations halve the GEMM's multiplies (prefill ~1.4x faster, `matmul::q8`), but how
//! far they move a model's outputs depends on the model: on Qwen2.5-Coder-0.5B every greedy
//! golden holds, on SmolLM2-135M five of six change. `auto` measures it: a teacher-forced pass
//! over a fixed built-in conversation (rendered with the model's own template; ~290 tokens)
//! at 12 and at 8 bits, each with its own KV cache of the server's element type, and the mean
//! over positions of KL(p12 || p8) between the two next-token distributions. 8 bits are chosen
//! when that mean is at most [`AUTO_MAX_KL`] nats per token, 12 otherwise.
//!
//! Measured on the calibration text (f16 cache): Qwen2.5-Coder-0.5B Q4_K_M 0.00031 nats per
//! position (8 chosen; the most likely next token equal on 288 of 291 positions),
//! SmolLM2-135M Q4_1 0.0029 (12 kept; 290 of 297). For scale, rounding the KV cache to f16
//! instead of f32 costs 0.00002 (SmolLM2) and 0.000004 (Qwen) on a similar text. The
//! threshold sits between the two models, a factor of ~3 from each.
//!
//! Every CPU kernel agrees bitwise with the portable definition, so the measurement, and the
//! choice, are the same on every machine for a given model file and cache type.
//!
//! Cost, paid once at load (logged): two prefills of the text plus its LM-head rows. Memory is
//! bounded by running both precisions in lock-step over chunks of [`CHUNK`] positions: two
//! `[CHUNK, vocab]` f32 logit buffers (39 MB at Qwen2.5's vocabulary of 151,936) and two KV
//! caches of `ceil(tokens / 16) + 1` blocks.

use std::fmt;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::backend::cpu::backend::CpuBackend;
use crate::backend::cpu::matmul::q8::ActBits;
use crate::backend::types::Batch;
use crate::backend::KvDtype;
use crate::model::template::ChatMessage;
use crate::model::LoadedModel;

/// Largest mean KL(p12 || p8), nats per position, at which `auto` picks 8 bits.
pub const AUTO_MAX_KL: f64 = 1e-3;

/// Positions per lock-step chunk (bounds the two logit buffers).
const CHUNK: usize = 32;

/// KV block size of the calibration caches (any size gives the same numbers).
const BLOCK: usize = 16;

/// The calibration conversation: user and assistant turns only (templates differ in what
/// else they accept), prose, arithmetic and code, with the answers written out so the
/// measured positions are the model's own kind of output.
const CONVERSATION: &[(&str, &str)] = &[
    (
        "user",
        "Maria buys 3 boxes of pencils. Each box holds 12 pencils. She gives 7 pencils to her \
         brother and then buys 5 more. Her friend Tom, who is 11 years old, has 20 pencils. \
         How many pencils does Maria have now? Think step by step.",
    ),
    (
        "assistant",
        "Maria buys 3 boxes with 12 pencils each, so she has 3 * 12 = 36 pencils. She gives 7 \
         to her brother: 36 - 7 = 29. Then she buys 5 more: 29 + 5 = 34. Tom's pencils and age \
         do not matter. The answer is 34.",
    ),
    (
        "user",
        "Write a Python function that returns the largest even number in a list, or None.",
    ),
    (
        "assistant",
        "def largest_even(xs):\n    evens = [x for x in xs if x % 2 == 0]\n    return \
         max(evens) if evens else None",
    ),
    (
        "user",
        "What is the capital of France, and what river runs through it?",
    ),
    (
        "assistant",
        "The capital of France is Paris, and the Seine runs through it. Paris is known for \
         the Eiffel Tower, the Louvre and its cafes.",
    ),
];

/// `--activation-bits`: a fixed precision, or `auto` (measured at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationBits {
    #[default]
    Auto,
    Fixed(ActBits),
}

impl ActivationBits {
    /// `auto` / `8` / `12` (the flag's values).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ActivationBits::Auto),
            other => ActBits::parse(other)
                .map(ActivationBits::Fixed)
                .map_err(|_| {
                    format!("unsupported activation bits `{other}` (supported: auto, 8, 12)")
                }),
        }
    }
}

impl fmt::Display for ActivationBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationBits::Auto => f.write_str("auto"),
            ActivationBits::Fixed(b) => write!(f, "{b}"),
        }
    }
}

/// What `auto` measured and chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Positions compared (the calibration text's tokens).
    pub tokens: usize,
    /// Mean and largest KL(p12 || p8) over the positions, nats.
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Positions whose most likely next token is the same at both precisions.
    pub top1_agree: usize,
    pub chosen: ActBits,
    pub elapsed: Duration,
}

/// The precision `auto` picks for a measured mean KL.
pub fn choose(mean_kl: f64) -> ActBits {
    if mean_kl <= AUTO_MAX_KL {
        ActBits::Eight
    } else {
        ActBits::Twelve
    }
}

/// KL(p || q) in nats between the softmax distributions of two logit rows, and whether
/// their arg-maxes (first index on ties) agree. Computed in f64.
pub fn kl_row(p: &[f32], q: &[f32]) -> (f64, bool) {
    let (lp, ap) = log_softmax(p);
    let (lq, aq) = log_softmax(q);
    let kl = lp
        .iter()
        .zip(&lq)
        .map(|(&a, &b)| {
            if a.is_finite() {
                a.exp() * (a - b)
            } else {
                0.0
            }
        })
        .sum::<f64>();
    (kl.max(0.0), ap == aq)
}

/// `(log_softmax(v), argmax(v))` in f64.
fn log_softmax(v: &[f32]) -> (Vec<f64>, usize) {
    let (mut arg, mut max) = (0, f64::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if (x as f64) > max {
            (arg, max) = (i, x as f64);
        }
    }
    let lse = max + v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    (v.iter().map(|&x| x as f64 - lse).collect(), arg)
}

/// The calibration text's token ids for `model` (its template; a plain transcript when the
/// template refuses the conversation), at most the model's context length.
fn calibration_ids(model: &LoadedModel) -> Result<Vec<u32>, String> {
    let msgs: Vec<ChatMessage> = CONVERSATION
        .iter()
        .map(|(role, text)| ChatMessage::new(role, text))
        .collect();
    let text = model.template.render(&msgs, false).unwrap_or_else(|_| {
        CONVERSATION
            .iter()
            .map(|(role, text)| format!("{role}: {text}\n"))
            .collect()
    });
    let mut ids = model
        .tokenizer
        .encode(&text, model.tokenizer.add_bos)
        .map_err(|e| format!("calibration text: {e}"))?;
    ids.truncate(model.model.cfg.max_position.max(2));
    if ids.len() < 2 {
        return Err("calibration text has fewer than 2 tokens".into());
    }
    Ok(ids)
}

/// Runs the measurement on `model` with KV caches of `kv_dtype` and picks the precision.
pub fn calibrate(model: &LoadedModel, kv_dtype: KvDtype) -> Result<Calibration, String> {
    let start = Instant::now();
    let ids = calibration_ids(model)?;
    let n = ids.len();
    let blocks = n.div_ceil(BLOCK) + 1;
    let table: Vec<u32> = (1..blocks as u32).collect();
    let m = &model.model;
    let mut runs = [ActBits::Twelve, ActBits::Eight].map(|bits| {
        (
            CpuBackend::with_activation_bits(bits),
            m.new_kv_cache_dtype(blocks, BLOCK, kv_dtype),
            Vec::new(),
        )
    });
    let (mut sum, mut max, mut agree) = (0f64, 0f64, 0usize);
    for s in (0..n).step_by(CHUNK) {
        let e = (s + CHUNK).min(n);
        let mut batch = Batch::single(&ids[s..e], s, &table, BLOCK);
        batch.logits_rows = (0..e - s).collect();
        for (backend, kv, logits) in runs.iter_mut() {
            m.forward(backend, &batch, kv, logits);
        }
        let vocab = runs[0].2.len() / (e - s);
        let rows: Vec<(f64, bool)> = (0..e - s)
            .into_par_iter()
            .map(|r| {
                let row = r * vocab..(r + 1) * vocab;
                kl_row(&runs[0].2[row.clone()], &runs[1].2[row])
            })
            .collect();
        for (kl, same) in rows {
            sum += kl;
            max = max.max(kl);
            agree += same as usize;
        }
    }
    let mean_kl = sum / n as f64;
    Ok(Calibration {
        tokens: n,
        mean_kl,
        max_kl: max,
        top1_agree: agree,
        chosen: choose(mean_kl),
        elapsed: start.elapsed(),
    })
}

/// The precision for `cfg`: the fixed one, or `auto`'s measurement on `model` (logged).
pub fn resolve(
    bits: ActivationBits,
    model: &LoadedModel,
    kv_dtype: KvDtype,
) -> Result<ActBits, String> {
    match bits {
        ActivationBits::Fixed(b) => Ok(b),
        ActivationBits::Auto => {
            let c = calibrate(model, kv_dtype)?;
            tracing::info!(
                tokens = c.tokens,
                mean_kl = c.mean_kl,
                max_kl = c.max_kl,
                threshold = AUTO_MAX_KL,
                top1_agree = c.top1_agree,
                chosen = %c.chosen,
                ms = c.elapsed.as_millis() as u64,
                "--activation-bits auto: 8-bit against 12-bit activations on the calibration text"
            );
            Ok(c.chosen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_values() {
        assert_eq!(ActivationBits::parse("auto"), Ok(ActivationBits::Auto));
        assert_eq!(
            ActivationBits::parse("8"),
            Ok(ActivationBits::Fixed(ActBits::Eight))
        );
        assert_eq!(
            ActivationBits::parse("12"),
            Ok(ActivationBits::Fixed(ActBits::Twelve))
        );
        assert_eq!(
            ActivationBits::parse("16").unwrap_err(),
            "unsupported activation bits `16` (supported: auto, 8, 12)"
        );
        assert_eq!(ActivationBits::Auto.to_string(), "auto");
        assert_eq!(ActivationBits::Fixed(ActBits::Eight).to_string(), "8");
    }

    #[test]
    fn kl_of_equal_rows_is_zero_and_shifts_do_not_matter() {
        let p = [1.0f32, -2.0, 0.5, 3.0];
        let shifted: Vec<f32> = p.iter().map(|x| x + 10.0).collect();
        let (kl, same) = kl_row(&p, &shifted);
        assert!(kl < 1e-12, "{kl}");
        assert!(same);
    }

    #[test]
    fn kl_matches_the_closed_form() {
        // p = softmax(0, 0) = (1/2, 1/2), q = softmax(ln 3, 0) = (3/4, 1/4):
        // KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
        let (kl, same) = kl_row(&[0.0, 0.0], &[3f32.ln(), 0.0]);
        assert!((kl - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-7, "{kl}");
        assert!(same, "ties take the first index");
        let (_, same) = kl_row(&[0.0, 1.0], &[1.0, 0.0]);
        assert!(!same);
        // A position p rules out costs nothing, whatever q says of it.
        let (kl, _) = kl_row(&[0.0, f32::NEG_INFINITY], &[0.0, 5.0]);
        assert!((kl - (1.0 + 5f64.exp()).ln()).abs() < 1e-9, "{kl}");
    }

    #[test]
    fn threshold_is_inclusive() {
        assert_eq!(choose(AUTO_MAX_KL), ActBits::Eight);
        assert_eq!(choose(0.0), ActBits::Eight);
        assert_eq!(choose(AUTO_MAX_KL * 1.0001), ActBits::Twelve);
        assert_eq!(choose(f64::NAN), ActBits::Twelve);
    }
}
