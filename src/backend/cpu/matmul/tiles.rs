//! The tile walk shared by the SIMD GEMM kernels (AVX-512 f32, AVX-512 VNNI and AVX2
//! integer): activation rows in groups of up to [`T_MAX`], weight rows in groups of 4 (one
//! activation row, decode) or 2 (several rows), remainders one by one; each tile's outputs
//! get the bias and land in `y`. A kernel only says how to compute one `R x T` tile, so the
//! order in which one output is summed is the kernel's alone and never depends on the tile
//! shape (batch invariance).

/// Activation rows per tile: 4 rows x 2 weight rows keeps the accumulators in registers.
pub const T_MAX: usize = 4;

/// One GEMM kernel bound to its operands.
pub trait Tiles {
    /// `out[rr][tt]` = dot(weight row `r + rr`, activation row `i + tt`), without bias.
    ///
    /// # Safety
    /// Weight rows `r..r + R` and activation rows `i..i + T` exist; the kernel's target
    /// features are enabled in the caller.
    unsafe fn tile<const R: usize, const T: usize>(&self, i: usize, r: usize) -> [[f32; T]; R];
}

/// `y[i, r] = tile(i, r) + bias[r]` for activation rows `0..m` and weight rows `r0..r1`.
///
/// # Safety
/// `k` covers `m` activation rows and weight rows `r0..r1 <= n`; `y` has `m * n` floats and
/// no other thread writes columns `r0..r1`; the kernel's target features are enabled in the
/// caller (this function is inlined into it).
#[inline(always)]
pub unsafe fn walk<K: Tiles>(
    k: &K,
    m: usize,
    n: usize,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    let mut i = 0;
    while i < m {
        let t = (m - i).min(T_MAX);
        let mut r = r0;
        while r < r1 {
            macro_rules! go {
                ($R:literal, $T:literal) => {{
                    // SAFETY: rows r..r+R are < r1 <= n and rows i..i+T < m exist (the match
                    // below picks R <= r1 - r and T == t); column r + rr of y is the caller's.
                    unsafe {
                        let v = k.tile::<$R, $T>(i, r);
                        for (rr, row) in v.iter().enumerate() {
                            let b = bias.map_or(0.0, |b| b[r + rr]);
                            for (tt, s) in row.iter().enumerate() {
                                *y.add((i + tt) * n + r + rr) = s + b;
                            }
                        }
                    }
                    r += $R;
                }};
            }
            let left = r1 - r;
            match (t, left >= 4, left >= 2) {
                (1, true, _) => go!(4, 1),
                (2, _, true) => go!(2, 2),
                (3, _, true) => go!(2, 3),
                (4, _, true) => go!(2, 4),
                (4, _, _) => go!(1, 4),
                (3, _, _) => go!(1, 3),
                (2, _, _) => go!(1, 2),
                _ => go!(1, 1),
            }
        }
        i += t;
    }
}
