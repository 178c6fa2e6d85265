//! A software tile unit with the exact semantics of the AMX instructions the kernel uses
//! (`LDTILECFG`, `TILEZERO`, `TILELOADD`, `TDPBSSD`, `TDPBSUD`, `TILESTORED`, as the Intel
//! SDM defines them), so the tests run every path of the AMX kernel (tile configuration,
//! B-tile unpacking, the step pipeline, the fold) on CPUs without AMX. What the hardware
//! adds is speed; the integers are the same.

use std::cell::RefCell;

use super::{Sums, TileConfig, Tiles, TILE_ROWS};
use crate::backend::cpu::matmul::q8::vnni::{
    dispatch, Fmt, Q2k, Q3k, Q4k, Q5k, Q6k, Q40, Q41, Q50, Q51, Q80,
};
use crate::backend::cpu::matmul::q8::{Out, QActs, LO};
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;

/// One tile register: rows x colsb bytes (at most 16 x 64).
#[derive(Clone, Copy)]
struct Tmm {
    rows: usize,
    colsb: usize,
    data: [[u8; 64]; 16],
}

const EMPTY: Tmm = Tmm {
    rows: 0,
    colsb: 0,
    data: [[0; 64]; 16],
};

thread_local! {
    static UNIT: RefCell<[Tmm; 8]> = const { RefCell::new([EMPTY; 8]) };
}

fn with<R>(f: impl FnOnce(&mut [Tmm; 8]) -> R) -> R {
    UNIT.with(|u| f(&mut u.borrow_mut()))
}

/// `TILELOADD tmm, [base + 64 * row]`.
///
/// # Safety
/// The configured rows x colsb bytes are readable at stride 64 from `base`.
unsafe fn load(t: usize, base: *const u8) {
    with(|u| {
        let tm = &mut u[t];
        for r in 0..tm.rows {
            for c in 0..tm.colsb {
                // SAFETY: caller's contract.
                tm.data[r][c] = unsafe { *base.add(r * 64 + c) };
            }
        }
    })
}

fn i32_at(row: &[u8; 64], n: usize) -> i32 {
    i32::from_le_bytes([row[4 * n], row[4 * n + 1], row[4 * n + 2], row[4 * n + 3]])
}

/// `TDPBSSD` / `TDPBSUD c, a, b`: `C[m][n] += sum_k sum_i A[m][4k+i] * B[k][4n+i]`, A signed,
/// B signed or unsigned, 32-bit wrapping accumulation.
fn dp(c: usize, a: usize, b: usize, b_signed: bool) {
    with(|u| {
        let (ta, tb) = (u[a], u[b]);
        let tc = &mut u[c];
        for m in 0..tc.rows {
            for n in 0..tc.colsb / 4 {
                let mut acc = i32_at(&tc.data[m], n);
                for k in 0..ta.colsb / 4 {
                    for i in 0..4 {
                        let x = i32::from(ta.data[m][4 * k + i] as i8);
                        let w = tb.data[k][4 * n + i];
                        let w = if b_signed {
                            i32::from(w as i8)
                        } else {
                            i32::from(w)
                        };
                        acc = acc.wrapping_add(x * w);
                    }
                }
                tc.data[m][4 * n..4 * n + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    })
}

fn zero(t: usize) {
    with(|u| u[t].data = [[0; 64]; 16]);
}

/// `TILESTORED [out + 64 * row], tmm`.
///
/// # Safety
/// rows x colsb bytes writable at stride 64 from `out`.
unsafe fn store_tile(t: usize, out: *mut u8) {
    with(|u| {
        let tm = &u[t];
        for r in 0..tm.rows {
            for c in 0..tm.colsb {
                // SAFETY: caller's contract.
                unsafe { *out.add(r * 64 + c) = tm.data[r][c] };
            }
        }
    })
}

/// The emulated tile unit.
pub(in crate::backend::cpu) struct Emu;

impl Tiles for Emu {
    unsafe fn config(cfg: &TileConfig) {
        with(|u| {
            for (t, tm) in u.iter_mut().enumerate() {
                *tm = Tmm {
                    rows: usize::from(cfg.0[48 + t]),
                    colsb: usize::from(u16::from_le_bytes([cfg.0[16 + 2 * t], cfg.0[17 + 2 * t]])),
                    data: [[0; 64]; 16],
                };
            }
        })
    }

    unsafe fn products<const FUSED: bool, const SET: usize>(a: *const i8, bt: *const u8) {
        let (c0, c1) = if SET == 0 { (0, 1) } else { (5, 6) };
        // SAFETY: the caller's contract (as the real instructions').
        unsafe {
            if FUSED {
                zero(c0);
                load(2, a as *const u8);
                load(4, bt);
                dp(c0, 2, 4, false);
            } else {
                zero(c0);
                zero(c1);
                load(2, a as *const u8);
                load(3, a.add(LO) as *const u8);
                load(4, bt);
                dp(c0, 2, 4, true);
                dp(c1, 3, 4, true);
            }
        }
    }

    unsafe fn store<const FUSED: bool, const SET: usize>(sums: &mut Sums) {
        let (c0, c1) = if SET == 0 { (0, 1) } else { (5, 6) };
        let out = sums.0.as_mut_ptr() as *mut u8;
        // SAFETY: `sums` holds 2 x 16 rows of 64 bytes.
        unsafe {
            store_tile(c0, out);
            if !FUSED {
                store_tile(c1, out.add(TILE_ROWS * 64));
            }
        }
    }

    unsafe fn release() {
        with(|u| *u = [EMPTY; 8]);
    }
}

unsafe fn rows_emu<F: Fmt>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    // SAFETY: forwarded contract; the emulated unit needs only AVX-512 for the fold.
    unsafe { super::rows_impl::<F, Emu>(acts, w, bias, y, g0, g1) }
}

/// The AMX kernel on the emulated tile unit (needs AVX-512 VNNI, as the kernel's fold).
///
/// # Safety
/// As `amx::rows`, with `vnni::available()` instead of AMX.
pub(in crate::backend::cpu) unsafe fn rows(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch!(w.ty, rows_emu, (acts, w, bias, y, g0, g1)) }
}
