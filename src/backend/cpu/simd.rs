//! Vector helpers for the element-wise CPU ops: a branch-free `exp` the compiler can
//! vectorize, and a runtime switch that runs a loop body compiled with AVX2+FMA+F16C when the
//! CPU has them (the crate itself targets baseline x86-64, so plain loops get SSE2 only).

/// `exp(x)` to ~1 ulp for x in [-87, 88] (clamped outside): x = n ln2 + r, |r| <= ln2/2,
/// exp(r) by its degree-7 Taylor polynomial (truncation error < 2e-8 relative), times 2^n.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// True when F16C (half-precision conversions; implies AVX) can be used (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_f16c() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("f16c"))
}

/// True when AVX2, FMA and F16C can be used (checked once; every AVX2 CPU has F16C).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when AVX-512F can be used (checked once; `PONDER_CPU_ISA=avx2` says no, to measure
/// or test the AVX2 paths on an AVX-512 machine).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var("PONDER_CPU_ISA").map_or(true, |v| v != "avx2")
                && is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`exp`] on 16 lanes (same reduction and polynomial, with FMAs).
///
/// # Safety
/// AVX-512F enabled by the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F enabled by the caller.
    unsafe {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        );
        let n =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for k in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(k));
        }
        let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)))
    }
}

/// `(max, first index of max, has NaN or +inf)` over `x` (the sampler's scan of the logits;
/// `(-inf, 0, false)` for an empty or all -inf slice). AVX-512: one vector pass for the max
/// and the bad values, one for the first index holding the max.
pub fn max_argmax(x: &[f32]) -> (f32, usize, bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F present (checked); reads stay inside x.
        return unsafe { max_argmax_avx512(x) };
    }
    max_argmax_scalar(x)
}

fn max_argmax_scalar(x: &[f32]) -> (f32, usize, bool) {
    let (mut max, mut arg, mut bad) = (f32::NEG_INFINITY, 0, false);
    for (i, &v) in x.iter().enumerate() {
        bad |= v.is_nan() || v == f32::INFINITY;
        if v > max {
            (max, arg) = (v, i);
        }
    }
    (max, arg, bad)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_argmax_avx512(x: &[f32]) -> (f32, usize, bool) {
    use std::arch::x86_64::*;
    let full = x.len() / 16 * 16;
    let inf = _mm512_set1_ps(f32::INFINITY);
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut bad: __mmask16 = 0;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= x.len().
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        bad |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) | _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, inf);
        m = _mm512_max_ps(m, v);
    }
    let (tmax, targ, tbad) = max_argmax_scalar(&x[full..]);
    if bad != 0 || tbad {
        return (f32::NAN, 0, true);
    }
    let max = _mm512_reduce_max_ps(m).max(tmax);
    if max == f32::NEG_INFINITY {
        return (max, 0, false);
    }
    let mv = _mm512_set1_ps(max);
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= x.len().
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, mv);
        if hit != 0 {
            return (max, i + hit.trailing_zeros() as usize, false);
        }
    }
    (max, full + targ, false)
}

/// `sum_i exp(x_i - max)` in f64, with [`exp`]'s arithmetic (16 lanes of [`exp16`] on
/// AVX-512; partial sums in 8 f64 lanes, then a fixed tree: the same value every call).
/// The softmax normalizer of the sampler: one pass over the vocabulary per token.
pub fn sum_exp(x: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F present (checked); reads stay inside x.
        return unsafe { sum_exp_avx512(x, max) };
    }
    let mut lanes = [0f64; 4];
    let chunks = x.chunks_exact(4);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(exp(v - max)))
        .sum();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += f64::from(exp(v - max));
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + rest
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_exp_avx512(x: &[f32], max: f32) -> f64 {
    use std::arch::x86_64::*;
    let full = x.len() / 16 * 16;
    let m = _mm512_set1_ps(max);
    let (mut a, mut b) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= x.len().
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x.as_ptr().add(i)), m));
            a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)));
            b = _mm512_add_pd(b, _mm512_cvtps_pd(hi));
        }
    }
    let rest: f64 = x[full..].iter().map(|&v| f64::from(exp(v - max))).sum();
    let mut lanes = [0f64; 8];
    // SAFETY: 8 doubles.
    unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), _mm512_add_pd(a, b)) };
    let l = |i: usize| lanes[i] + lanes[i + 4];
    (l(0) + l(1)) + (l(2) + l(3)) + rest
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX2+FMA when available and
/// for the baseline target otherwise. The body must be safe code.
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident : $t:ty),*) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn fast($($a: $t),*) $(-> $r)? { body($($a),*) }
            #[cfg(target_arch = "x86_64")]
            if $crate::backend::cpu::simd::has_avx2() {
                // SAFETY: AVX2, FMA and F16C are present (checked at run time).
                return unsafe { fast($($a),*) };
            }
            body($($a),*)
        }
    };
}

/// `[body(0), .., body(N - 1)]` with `$i` bound to the index, the body written out in the
/// caller. For vector code: `std::array::from_fn` and `<[T; N]>::map` take a closure, and
/// when LLVM inlines that closure into the generic `from_fn` rather than into the caller, the
/// body is compiled without the caller's `#[target_feature]`s and every intrinsic in it
/// becomes a function call (profiled: the AVX-512 activation quantizer's lane reductions
/// cost 2% of a serving run that way). Two forms: `unrolled!(|i| body; 0 1 2 3)` writes one
/// copy of the body per listed index (a literal `i` in each, so arrays of vectors stay in
/// registers); `unrolled!([init; N], |i| body)` loops (for a const-generic `N`; `init` is any
/// value of the element type).
#[macro_export]
macro_rules! unrolled {
    (|$i:ident| $body:expr; $($n:literal)*) => {
        [$({
            let $i: usize = $n;
            $body
        }),*]
    };
    ([$init:expr; $n:expr], |$i:ident| $body:expr) => {{
        let mut out = [$init; $n];
        let mut $i = 0usize;
        while $i < $n {
            out[$i] = $body;
            $i += 1;
        }
        out
    }};
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp16_is_accurate() {
        use std::arch::x86_64::*;
        if !super::has_avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        let xs: Vec<f32> = (0..16 * 800).map(|i| -90.0 + i as f32 * 0.0141).collect();
        let mut worst = 0f64;
        for c in xs.chunks_exact(16) {
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F present (checked); 16 floats in and out.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), super::exp16(_mm512_loadu_ps(c.as_ptr())))
            };
            for (&x, &got) in c.iter().zip(&out) {
                let want = f64::from(x.clamp(-87.0, 88.0)).exp();
                worst = worst.max(((f64::from(got) - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "max relative error {worst}");
    }

    #[test]
    fn max_argmax_finds_the_first_maximum_and_bad_values() {
        let mut x: Vec<f32> = (0..1003)
            .map(|i| ((i * 7919) % 1000) as f32 / 10.0 - 50.0)
            .collect();
        x[517] = 99.0;
        x[900] = 99.0; // a tie later: the first index wins
        assert_eq!(super::max_argmax(&x), (99.0, 517, false));
        assert_eq!(super::max_argmax_scalar(&x), (99.0, 517, false));
        x[1001] = 100.0; // in the 16-lane tail
        assert_eq!(super::max_argmax(&x), (100.0, 1001, false));
        let all_masked = vec![f32::NEG_INFINITY; 40];
        assert_eq!(
            super::max_argmax(&all_masked),
            (f32::NEG_INFINITY, 0, false)
        );
        for bad in [f32::NAN, f32::INFINITY] {
            let mut y = x.clone();
            y[33] = bad;
            assert!(super::max_argmax(&y).2, "{bad} flagged");
            assert!(super::max_argmax_scalar(&y).2);
        }
        assert!(!super::max_argmax(&[f32::NEG_INFINITY, 1.0]).2);
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = super::exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.01237;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(-1000.0) < 1e-37);
    }
}
