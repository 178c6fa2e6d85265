//! Sampler tests: exact values for greedy, truncation sets, penalties and
//! logprobs; statistical checks with fixed seeds (deterministic, so they
//! cannot flake: each bound is wide enough that a correct sampler passes for
//! all but ~1e-6 of seeds, and the seeds are fixed).

use super::*;
use crate::sample::params::RawSamplingParams;
use crate::sample::rng::sample_seed;

mod stats;

const EOS: u32 = 3;

fn params(raw: RawSamplingParams) -> SamplingParams {
    raw.validate().unwrap()
}

fn sample(logits: &[f32], p: &SamplingParams, seed: u64, step: u32) -> SampledToken {
    let mut s = Sampler::new(logits.len(), &[EOS]);
    s.sample(logits, p, &TokenHistory::new(&[]), seed, step)
        .unwrap()
}

/// Candidate set after truncation, in the sampler's order.
fn candidates(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
    let mut s = Sampler::new(logits.len(), &[]);
    let dist = s.prepare(logits, p, &TokenHistory::new(&[]), None).unwrap();
    let top_k = p.top_k_limit().filter(|&k| k < logits.len());
    let top_p = (p.top_p < 1.0).then_some(f64::from(p.top_p));
    let min_p = (p.min_p > 0.0).then_some(f64::from(p.min_p));
    let (len, _) = s.truncate(top_k, top_p, min_p, &dist);
    s.cand[..len].iter().map(|c| c.1).collect()
}

fn ln(v: f64) -> f32 {
    v.ln() as f32
}

/// Reference log-softmax in f64 (max subtraction).
fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

const LOGITS: [f32; 5] = [0.5, 2.0, 1.5, -1.0, 1.0];

#[test]
fn greedy_argmax_lowest_id_on_ties() {
    let g = SamplingParams::greedy();
    assert_eq!(sample(&LOGITS, &g, 0, 0).token, 1);
    assert_eq!(sample(&[1.0, 3.0, -2.0, 3.0, 2.9], &g, 0, 0).token, 1);
    assert_eq!(sample(&[0.0; 6], &g, 0, 0).token, 0);
    assert_eq!(sample(&[f32::NEG_INFINITY, -5.0, -5.0], &g, 0, 0).token, 1);
    // Seed and step do not matter.
    for seed in 0..50 {
        assert_eq!(sample(&LOGITS, &g, seed, seed as u32).token, 1);
    }
}

#[test]
fn temperature_to_zero_equals_greedy() {
    // Below GREEDY_TEMPERATURE: the greedy path. At T = 0.01 the runner-up
    // (gap 0.5) has probability < exp(-50): the argmax for every seed.
    for t in [1e-6, 0.01] {
        let p = params(RawSamplingParams {
            temperature: t,
            ..Default::default()
        });
        for seed in 0..200 {
            assert_eq!(sample(&LOGITS, &p, seed, 0).token, 1, "T={t} seed={seed}");
        }
    }
}

#[test]
fn top_k_one_equals_greedy() {
    let p = params(RawSamplingParams {
        temperature: 1.5,
        top_k: 1,
        ..Default::default()
    });
    for seed in 0..200 {
        assert_eq!(sample(&LOGITS, &p, seed, 7).token, 1);
        assert_eq!(sample(&[3.0, 1.0, 3.0], &p, seed, 7).token, 0);
    }
}

#[test]
fn tiny_top_p_equals_greedy() {
    let p = params(RawSamplingParams {
        top_p: 1e-6,
        ..Default::default()
    });
    for seed in 0..200 {
        assert_eq!(sample(&LOGITS, &p, seed, 3).token, 1);
    }
    assert_eq!(candidates(&[3.0, 1.0, 3.0], &p), vec![0]);
}

#[test]
fn top_k_exact_set_with_ties() {
    let p = params(RawSamplingParams {
        top_k: 3,
        ..Default::default()
    });
    assert_eq!(
        candidates(&[1.0, 5.0, 3.0, 5.0, 3.0, 0.0], &p),
        vec![1, 3, 2]
    );
    // top_k >= vocab is off.
    let p = params(RawSamplingParams {
        top_k: 6,
        ..Default::default()
    });
    assert_eq!(sample(&[1.0, 5.0], &p, 1, 0).token, 1);
}

#[test]
fn top_p_exact_sets() {
    // p = [0.5, 0.25, 0.125, 0.125].
    let x = [ln(0.5), ln(0.25), ln(0.125), ln(0.125)];
    let set = |top_p, top_k| {
        candidates(
            &x,
            &params(RawSamplingParams {
                top_p,
                top_k,
                ..Default::default()
            }),
        )
    };
    assert_eq!(set(0.4, 0), vec![0]);
    assert_eq!(set(0.6, 0), vec![0, 1]);
    assert_eq!(set(0.8, 0), vec![0, 1, 2]);
    assert_eq!(set(0.9, 0), vec![0, 1, 2, 3]);
    // top_p renormalizes over the top-k set: {0, 1} has p = [2/3, 1/3].
    assert_eq!(set(0.6, 2), vec![0]);
    assert_eq!(set(0.7, 2), vec![0, 1]);
}

#[test]
fn min_p_exact_set() {
    // Relative weights 1, 0.5, 0.3, 0.1, 0.05 (ids permuted).
    let x = [ln(0.1), ln(1.0), ln(0.05), ln(0.3), ln(0.5)];
    let set = |min_p, top_k| {
        candidates(
            &x,
            &params(RawSamplingParams {
                min_p,
                top_k,
                ..Default::default()
            }),
        )
    };
    // min_p alone keeps id order (no sort needed).
    assert_eq!(set(0.2, 0), vec![1, 3, 4]);
    assert_eq!(set(0.4, 0), vec![1, 4]);
    assert_eq!(set(0.07, 0), vec![0, 1, 3, 4]);
    assert_eq!(set(1.0, 0), vec![1]);
    assert_eq!(set(0.2, 2), vec![1, 4]);
    // Draws stay inside the set and cover it.
    let p = params(RawSamplingParams {
        min_p: 0.2,
        ..Default::default()
    });
    let mut seen = [0u32; 5];
    for step in 0..2000 {
        seen[sample(&x, &p, 99, step).token as usize] += 1;
    }
    assert_eq!((seen[0], seen[2]), (0, 0));
    assert!(seen[1] > 0 && seen[3] > 0 && seen[4] > 0, "{seen:?}");
}

/// Truncation on a large, flat vocabulary (the top-p prefix grows several
/// times) equals a full-sort reference.
#[test]
fn truncation_matches_full_sort_reference() {
    let vocab = 5000;
    let x: Vec<f32> = (0..vocab).map(|i| (uniform(5, i) * 4.0) as f32).collect();
    for (top_k, top_p, min_p) in [
        (0, 0.9, 0.0),
        (0, 0.5, 0.0),
        (50, 1.0, 0.0),
        (300, 0.8, 0.0),
        (0, 0.95, 0.2),
        (0, 1.0, 0.5),
    ] {
        let p = params(RawSamplingParams {
            top_k,
            top_p,
            min_p,
            ..Default::default()
        });
        let mut order: Vec<u32> = (0..vocab).collect();
        order.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
        let max = x[order[0] as usize];
        let w = |t: u32| f64::from((x[t as usize] - max).exp());
        if top_k > 0 {
            order.truncate(top_k as usize);
        }
        let mass: f64 = order.iter().map(|&t| w(t)).sum();
        let mut expect = Vec::new();
        let mut cum = 0.0;
        for &t in &order {
            if (cum >= f64::from(top_p) * mass && !expect.is_empty()) || w(t) < f64::from(min_p) {
                break;
            }
            cum += w(t);
            expect.push(t);
        }
        let mut got = candidates(&x, &p);
        if top_k == 0 && top_p == 1.0 {
            got.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
        }
        assert!(expect.len() > 40, "degenerate case {top_k} {top_p} {min_p}");
        assert_eq!(got, expect, "top_k={top_k} top_p={top_p} min_p={min_p}");
    }
}

#[test]
fn penalties_exact() {
    let x = [2.0f32, -1.0, 0.5, 3.0, 1.0];
    let mut h = TokenHistory::new(&[0, 1, 0]);
    for t in [2, 2, 3, 9] {
        h.push_output(t); // 9 is outside the vocabulary: ignored
    }
    let run = |raw: RawSamplingParams| {
        let mut v = x;
        apply_penalties(&mut v, &params(raw), &h);
        v
    };
    // Repetition: prompt and output tokens, sign-aware, once per token.
    let rep = RawSamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    };
    assert_eq!(run(rep), [1.0, -2.0, 0.25, 1.5, 1.0]);
    // Frequency: output counts only (2 -> twice, 3 -> once).
    let freq = RawSamplingParams {
        frequency_penalty: 0.5,
        ..Default::default()
    };
    assert_eq!(run(freq), [2.0, -1.0, -0.5, 2.5, 1.0]);
    // Presence: once per distinct output token.
    let pres = RawSamplingParams {
        presence_penalty: 0.25,
        ..Default::default()
    };
    assert_eq!(run(pres), [2.0, -1.0, 0.25, 2.75, 1.0]);
    // Negative presence rewards; all three compose (repetition first).
    let all = RawSamplingParams {
        repetition_penalty: 2.0,
        frequency_penalty: 0.5,
        presence_penalty: -0.5,
        ..Default::default()
    };
    assert_eq!(run(all), [1.0, -2.0, -0.25, 1.5, 1.0]);
}

#[test]
fn penalties_change_the_greedy_choice() {
    let mut s = Sampler::new(3, &[]);
    let p = params(RawSamplingParams {
        temperature: 0.0,
        frequency_penalty: 1.0,
        ..Default::default()
    });
    let x = [1.0, 1.5, 0.0];
    let mut h = TokenHistory::new(&[]);
    let mut out = Vec::new();
    for step in 0..4 {
        let t = s.sample(&x, &p, &h, 0, step).unwrap().token;
        h.push_output(t);
        out.push(t);
    }
    // 1 (1.5) -> 0 (1.0 vs 0.5) -> 1 (0.0 vs 0.5) -> 0 (0.0 vs -0.5).
    assert_eq!(out, vec![1, 0, 1, 0]);
}

#[test]
fn logprobs_exact() {
    let x = [1.0f32, 2.0, 3.0];
    let expect = [
        -2.407_605_964_444_380_6,
        -1.407_605_964_444_380_6,
        -0.407_605_964_444_380_6,
    ];
    let p = params(RawSamplingParams {
        temperature: 0.0,
        logprobs: true,
        top_logprobs: 3,
        ..Default::default()
    });
    let s = sample(&x, &p, 0, 0);
    assert_eq!(s.token, 2);
    assert!((f64::from(s.logprob) - expect[2]).abs() < 1e-6);
    let ids: Vec<u32> = s.top_logprobs.iter().map(|e| e.0).collect();
    assert_eq!(ids, vec![2, 1, 0]);
    for (t, lp) in &s.top_logprobs {
        assert!(
            (f64::from(*lp) - expect[*t as usize]).abs() < 1e-6,
            "{t} {lp}"
        );
    }
    // Shift invariance: +100 on every logit changes nothing.
    let s2 = sample(&[101.0, 102.0, 103.0], &p, 0, 0);
    assert!((s2.logprob - s.logprob).abs() < 1e-6);
    // Temperature 0.5: log_softmax([2, 4, 6]).
    let p = params(RawSamplingParams {
        temperature: 0.5,
        logprobs: true,
        top_logprobs: 1,
        ..Default::default()
    });
    let s = sample(&x, &p, 4, 0);
    let expect = [
        -4.142_931_628_499_899,
        -2.142_931_628_499_899,
        -0.142_931_628_499_899_15,
    ];
    assert!((f64::from(s.logprob) - expect[s.token as usize]).abs() < 1e-6);
    assert_eq!(s.top_logprobs.len(), 1);
    assert_eq!(s.top_logprobs[0].0, 2);
    assert!((f64::from(s.top_logprobs[0].1) - expect[2]).abs() < 1e-6);
    // top_logprobs is not returned unless asked for.
    assert!(sample(&x, &SamplingParams::greedy(), 0, 0)
        .top_logprobs
        .is_empty());
}

#[test]
fn logprobs_are_before_truncation_and_after_penalties() {
    // top_k = 1 picks token 2 for sure, but its logprob is the untruncated one.
    let x = [1.0f32, 2.0, 3.0];
    let p = params(RawSamplingParams {
        top_k: 1,
        logprobs: true,
        top_logprobs: 2,
        ..Default::default()
    });
    let s = sample(&x, &p, 11, 0);
    assert_eq!(s.token, 2);
    assert!((f64::from(s.logprob) + 0.407_605_964_444_380_6).abs() < 1e-6);
    assert_eq!(
        s.top_logprobs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![2, 1]
    );
    // Repetition penalty 2 on the prompt token 2: logits become [1, 2, 1.5].
    let p = params(RawSamplingParams {
        temperature: 0.0,
        repetition_penalty: 2.0,
        ..Default::default()
    });
    let mut sampler = Sampler::new(3, &[]);
    let s = sampler
        .sample(&x, &p, &TokenHistory::new(&[2]), 0, 0)
        .unwrap();
    let expect = log_softmax(&[1.0, 2.0, 1.5]);
    assert_eq!(s.token, 1);
    assert!((f64::from(s.logprob) - expect[1]).abs() < 1e-6);
}

#[test]
fn min_tokens_masks_eos_and_stop_ids() {
    let x = [0.0f32, 1.0, 5.0, 10.0]; // EOS = 3
    let raw = RawSamplingParams {
        temperature: 0.0,
        min_tokens: 2,
        stop_token_ids: vec![2],
        logprobs: true,
        top_logprobs: 4,
        ..Default::default()
    };
    let mut s = Sampler::new(4, &[EOS]);
    let mut h = TokenHistory::new(&[7]);
    let p = params(raw.clone());
    let first = s.sample(&x, &p, &h, 0, 0).unwrap();
    assert_eq!(first.token, 1);
    assert_eq!(
        first.top_logprobs[2..]
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        [f32::NEG_INFINITY; 2]
    );
    h.push_output(1);
    assert_eq!(s.sample(&x, &p, &h, 0, 1).unwrap().token, 1);
    h.push_output(1);
    assert_eq!(s.sample(&x, &p, &h, 0, 2).unwrap().token, EOS);
    // ignore_eos: EOS is not a stop token, so it is not masked.
    let p = params(RawSamplingParams {
        ignore_eos: true,
        ..raw
    });
    let h = TokenHistory::new(&[]);
    assert_eq!(s.sample(&x, &p, &h, 0, 0).unwrap().token, EOS);
}

#[test]
fn logit_bias_is_added_after_penalties_and_before_temperature() {
    // +2 on token 0 (0.5 -> 2.5) beats token 1 (2.0); -100 on token 1 removes it in practice.
    let p = params(RawSamplingParams {
        temperature: 0.0,
        logit_bias: vec![(0, 2.0)],
        logprobs: true,
        ..Default::default()
    });
    assert_eq!(sample(&LOGITS, &p, 0, 0).token, 0);
    let p = params(RawSamplingParams {
        temperature: 0.5,
        logit_bias: vec![(1, -100.0), (2, 1.0)],
        logprobs: true,
        ..Default::default()
    });
    let t = sample(&LOGITS, &p, 0, 0);
    let biased = [0.5f64, -98.0, 2.5, -1.0, 1.0].map(|v| v / 0.5);
    let want = log_softmax(&biased);
    assert!((f64::from(t.logprob) - want[t.token as usize]).abs() < 1e-5);
    // Ids outside the vocabulary are ignored here (validate.rs rejects them first).
    let p = params(RawSamplingParams {
        temperature: 0.0,
        logit_bias: vec![(99, 100.0)],
        ..Default::default()
    });
    assert_eq!(sample(&LOGITS, &p, 0, 0).token, 1);
    let e = RawSamplingParams {
        logit_bias: vec![(4, 100.5)],
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        (e.to_string(), e.param()),
        (
            "`logit_bias` values must be in [-100, 100], given 100.5 for token 4".to_string(),
            "logit_bias"
        )
    );
    let e = RawSamplingParams {
        logit_bias: vec![(4, 1.0), (4, 2.0)],
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.to_string(), "`logit_bias` names token 4 twice");
}

#[test]
fn bad_logits_are_errors() {
    let mut s = Sampler::new(3, &[]);
    let (p, h) = (SamplingParams::default(), TokenHistory::new(&[]));
    let e = s.sample(&[0.0; 2], &p, &h, 0, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "logits must have 3 entries (the vocabulary size), given 2"
    );
    let e = s.sample(&[0.0, f32::NAN, 1.0], &p, &h, 0, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "logit of token 1 must be finite or -inf, given NaN"
    );
    let e = s
        .sample(&[0.0, 0.0, f32::INFINITY], &p, &h, 0, 0)
        .unwrap_err();
    assert_eq!(
        e,
        SampleError::NonFiniteLogit {
            token: 2,
            value: f32::INFINITY
        }
    );
    let e = s.sample(&[f32::NEG_INFINITY; 3], &p, &h, 0, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no token can be sampled: all 3 logits are -inf after masking"
    );
}
