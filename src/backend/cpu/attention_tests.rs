//! Tests of the paged KV cache and attention: exact layout, the kernels against dense f64
//! attention over a scattered block table, and the AVX-512 kernel against the portable one.

use super::*;

/// `v` rounded to f16 and back: what the cache holds.
fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// Dense causal attention in f64: `q [len, nh, hd]`, `k`/`v` `[len, hd]` (one KV head);
/// with a `window`, token t attends to positions `t + 1 - window ..= t`.
#[allow(clippy::too_many_arguments)]
fn dense(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    nh: usize,
    hd: usize,
    scale: f64,
    window: Option<usize>,
) -> Vec<f64> {
    let mut out = vec![0f64; len * nh * hd];
    for t in 0..len {
        let first = window.map_or(0, |w| (t + 1).saturating_sub(w));
        for h in 0..nh {
            let qv = &q[(t * nh + h) * hd..][..hd];
            let sc: Vec<f64> = (first..=t)
                .map(|p| {
                    let d: f64 = qv
                        .iter()
                        .zip(&k[p * hd..][..hd])
                        .map(|(a, b)| f64::from(a * b))
                        .sum();
                    d * scale
                })
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                out[(t * nh + h) * hd + d] = (first..=t)
                    .map(|p| e[p - first] / z * f64::from(v[p * hd + d]))
                    .sum();
            }
        }
    }
    out
}

fn wave(n: usize, a: usize, b: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * a) % b) as f32 / b as f32 * 2.0 - 1.0)
        .collect()
}

/// Attention over a scattered block table equals dense causal attention, for a head dim
/// the AVX-512 kernel takes (64, block 16, prompt longer than two chunks) and one only the
/// portable kernel takes (4, block 2).
#[test]
fn paged_equals_dense() {
    let shapes = [
        (4usize, 2usize, 2usize, 5usize),
        (64, 3, 16, 37),
        (128, 2, 32, 40),
    ];
    let cases = shapes.iter().flat_map(|&s| {
        [
            (s, KvDtype::F16, None),
            (s, KvDtype::F32, None),
            // A sliding window shorter than the prompt (and one not a multiple of 16).
            (s, KvDtype::F32, Some(7)),
            (s, KvDtype::F16, Some(20)),
        ]
    });
    for ((hd, nh, bs, len), dtype, window) in cases {
        let mut cache = CpuKvCache::with_dtype(1, 8, bs, 1, hd, dtype);
        let k = wave(len * hd, 7919, 1000);
        let v = wave(len * hd, 104_729, 997);
        let table = [6u32, 2, 5, 7, 1];
        let slots: Vec<usize> = (0..len)
            .map(|p| table[p / bs] as usize * bs + p % bs)
            .collect();
        cache.reshape_and_cache(0, &k, &v, &slots);
        let q = wave(len * nh * hd, 31, 101);
        let mut out = vec![f32::NAN; len * nh * hd];
        let seqs = [AttnSeq {
            query_start: 0,
            query_len: len,
            context_len: len,
            block_table: &table,
        }];
        let scale = 1.0 / (hd as f32).sqrt();
        paged_attention(&cache, 0, &q, nh, &seqs, scale, window, &mut out);
        // The reference reads what the cache holds: f16-rounded or exact values.
        let (kr, vr) = match dtype {
            KvDtype::F16 => (f16_round(&k), f16_round(&v)),
            KvDtype::F32 => (k.clone(), v.clone()),
        };
        let want = dense(&q, &kr, &vr, len, nh, hd, f64::from(scale), window);
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() < 2e-5,
                "hd {hd} {dtype} window {window:?} at {i}: {g} vs {w}"
            );
        }
    }
}

/// The AVX-512 kernel agrees with the portable one on both element types, every head count
/// it groups (1..7 heads of one KV head) and at chunk edges.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_matches_portable() {
    fn check<T: Elem>(hd: usize, conv: fn(f32) -> T) {
        let (nkv, bs, blocks) = (2, 16, 6);
        let kc: Vec<T> = wave(blocks * nkv * hd * bs, 7919, 1000)
            .into_iter()
            .map(conv)
            .collect();
        let vc: Vec<T> = wave(blocks * nkv * hd * bs, 104_729, 1000)
            .into_iter()
            .map(conv)
            .collect();
        let table = [3u32, 1, 4, 5];
        for g in 1..=7 {
            let qg: Vec<f32> = (0..g * hd).map(|i| (i as f32 * 0.37).sin()).collect();
            for n in [1, 15, 16, 17, 40, 64] {
                let c = ItemCtx {
                    kc: &kc,
                    vc: &vc,
                    table: &table,
                    start: 0,
                    n,
                    kvh: 1,
                    nkv,
                    bs,
                    hd,
                    scale: 0.125,
                };
                let (mut a, mut b) = (vec![f32::NAN; g * hd], vec![f32::NAN; g * hd]);
                // SAFETY: supported shape (checked by the caller); positions < n map to
                // blocks 3, 1, 4, 5 < 6.
                unsafe { avx512::attend(&qg, &c, &mut a) };
                attend_portable(&qg, &c, &mut b);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-5, "hd {hd} g {g} n {n}: {x} vs {y}");
                }
            }
        }
    }
    for hd in [64usize, 128] {
        if !avx512::supports(hd, 16) {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        check::<f16>(hd, f16::from_f32);
        check::<f32>(hd, |x| x);
    }
}

#[test]
fn cache_layout_and_copy_block() {
    for dtype in [KvDtype::F16, KvDtype::F32] {
        // bs 2, one KV head, hd 2: K tiles are [hd][bs], V tiles [bs][hd].
        let mut c = CpuKvCache::with_dtype(2, 3, 2, 1, 2, dtype);
        c.reshape_and_cache(1, &[1.0, 2.0, 5.0, 6.0], &[3.0, 4.0, 7.0, 8.0], &[2, 3]);
        let (k, v) = c.layer_f32(1);
        assert_eq!(
            (&k[4..8], &v[4..8]),
            (&[1.0, 5.0, 2.0, 6.0][..], &[3.0, 4.0, 7.0, 8.0][..])
        );
        c.copy_block(1, 2);
        let (k, v) = c.layer_f32(1);
        assert_eq!(
            (&k[8..12], &v[8..12]),
            (&[1.0, 5.0, 2.0, 6.0][..], &[3.0, 4.0, 7.0, 8.0][..])
        );
        assert!(
            c.layer_f32(0).0.iter().all(|&x| x == 0.0),
            "other layers untouched"
        );
        // Slot order (the CUDA layout): slots 2, 3 (block 1) and their copies 4, 5.
        let (ks, vs) = c.slot_rows_f32(1);
        assert_eq!(&ks[4..12], &[1.0, 2.0, 5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        assert_eq!(&vs[4..12], &[3.0, 4.0, 7.0, 8.0, 3.0, 4.0, 7.0, 8.0]);
        // f16 rounds to nearest-even when written (1 + 2^-11 is a tie -> 1.0, 1 + 3 * 2^-11
        // rounds up to 1 + 2^-9); f32 keeps the values.
        let e = 2f32.powi(-11);
        c.reshape_and_cache(0, &[1.0 + e, 1.0 + 3.0 * e], &[0.0, 0.0], &[0]);
        let (k, _) = c.layer_f32(0);
        let want = match dtype {
            KvDtype::F16 => [1.0, 1.0 + 4.0 * e],
            KvDtype::F32 => [1.0 + e, 1.0 + 3.0 * e],
        };
        assert_eq!([k[0], k[2]], want, "{dtype}");
    }
    assert_eq!(
        CpuKvCache::bytes_per_block(30, 16, 3, 64, KvDtype::F16),
        368_640
    );
    assert_eq!(
        CpuKvCache::bytes_per_block(30, 16, 3, 64, KvDtype::F32),
        737_280
    );
    assert_eq!(KvDtype::parse("f32"), Ok(KvDtype::F32));
    assert!(KvDtype::parse("int8")
        .unwrap_err()
        .contains("supported: f16, f32"));
}
