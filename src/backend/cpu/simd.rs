//! Vector helpers for the element-wise CPU ops: a branch-free `exp` the compiler can
//! vectorize, and a runtime switch that runs a loop body compiled with AVX2+FMA when the
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

/// True when AVX2 and FMA can be used (checked once).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast($($a: $t),*) $(-> $r)? { body($($a),*) }
            #[cfg(target_arch = "x86_64")]
            if $crate::backend::cpu::simd::has_avx2() {
                // SAFETY: AVX2 and FMA are present (checked at run time).
                return unsafe { fast($($a),*) };
            }
            body($($a),*)
        }
    };
}

#[cfg(test)]
mod tests {
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
