//! Tests of the paged KV cache and attention: exact layout, the kernels against dense f64
//! attention over a scattered block table, and the AVX-512 kernel against the portable one.

use super::*;

/// Dense causal attention in f64: `q [len, nh, hd]`, `k`/`v` `[len, hd]` (one KV head).
fn dense(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    nh: usize,
    hd: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0f64; len * nh * hd];
    for t in 0..len {
        for h in 0..nh {
            let qv = &q[(t * nh + h) * hd..][..hd];
            let sc: Vec<f64> = (0..=t)
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
                out[(t * nh + h) * hd + d] =
                    (0..=t).map(|p| e[p] / z * f64::from(v[p * hd + d])).sum();
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
    for &(hd, nh, bs, len) in &[
        (4usize, 2usize, 2usize, 5usize),
        (64, 3, 16, 37),
        (128, 2, 32, 40),
    ] {
        let mut cache = CpuKvCache::new(1, 8, bs, 1, hd);
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
        paged_attention(&cache, 0, &q, nh, &seqs, scale, &mut out);
        let want = dense(&q, &k, &v, len, nh, hd, f64::from(scale));
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() < 2e-5,
                "hd {hd} at {i}: {g} vs {w}"
            );
        }
    }
}

/// The AVX-512 kernel agrees with the portable one on every head count it groups (1..7
/// heads of one KV head) and at chunk edges.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_matches_portable() {
    for hd in [64usize, 128] {
        let (nkv, bs) = (2, 16);
        if !avx512::supports(hd, bs) {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        let blocks = 6;
        let kc = wave(blocks * nkv * hd * bs, 7919, 1000);
        let vc = wave(blocks * nkv * hd * bs, 104_729, 1000);
        let table = [3u32, 1, 4, 5];
        for g in 1..=7 {
            let qg: Vec<f32> = (0..g * hd).map(|i| (i as f32 * 0.37).sin()).collect();
            for n in [1, 15, 16, 17, 40, 64] {
                let c = ItemCtx {
                    kc: &kc,
                    vc: &vc,
                    table: &table,
                    n,
                    kvh: 1,
                    nkv,
                    bs,
                    hd,
                    scale: 0.125,
                };
                let (mut a, mut b) = (vec![f32::NAN; g * hd], vec![f32::NAN; g * hd]);
                // SAFETY: supported shape; positions < n map to blocks 3, 1, 4, 5 < 6.
                unsafe { avx512::attend(&qg, &c, &mut a) };
                attend_generic(&qg, &c, &mut b);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-5, "hd {hd} g {g} n {n}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn cache_layout_and_copy_block() {
    // bs 2, one KV head, hd 2: K tiles are [hd][bs], V tiles [bs][hd].
    let mut c = CpuKvCache::new(2, 3, 2, 1, 2);
    c.reshape_and_cache(1, &[1.0, 2.0, 5.0, 6.0], &[3.0, 4.0, 7.0, 8.0], &[2, 3]);
    assert_eq!(&c.layer(1).0[4..8], &[1.0, 5.0, 2.0, 6.0]);
    assert_eq!(&c.layer(1).1[4..8], &[3.0, 4.0, 7.0, 8.0]);
    c.copy_block(1, 2);
    assert_eq!(&c.layer(1).0[8..12], &[1.0, 5.0, 2.0, 6.0]);
    assert_eq!(&c.layer(1).1[8..12], &[3.0, 4.0, 7.0, 8.0]);
    assert!(
        c.layer(0).0.iter().all(|&x| x == 0.0),
        "other layers untouched"
    );
}
