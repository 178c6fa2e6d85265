//! AMX kernel of the integer GEMM (`matmul_q8.rs`) for batches (prefill chunks and batched
//! decode) on CPUs with AMX-INT8 (Intel Sapphire Rapids and later). Per tile of up to 16
//! activation rows and one Cg16 group (16 columns), for each block:
//!
//! ```text
//!  tmm2 = hi[rows, 32 bytes of block b]   tmm3 = lo[...]      (A tiles, stride k)
//!  tmm4 = the group-block's weight bytes as 8 rows x 64       (B tile: quad j = row j)
//!  tmm0 = tmm2 . tmm4  (tdpbssd)          tmm1 = tmm3 . tmm4  (exact i32 per row x column)
//!  -> stored to 2 KiB of scratch; per row: S = 256 C_hi + C_lo (- 8 s for Q4_0), then the
//!     header's float fold with AVX-512 (16 lanes = 16 columns), accumulators in registers.
//! ```
//!
//! The integers are the same as the VNNI kernel's, and the fold is the same, so results are
//! bitwise equal to it (tested). Q8_0 bytes are the B tile as stored; Q4 nibbles are
//! unpacked once per group into `nb x 512` bytes of scratch (24 KiB at k = 1536), reused by
//! every row tile. Rows are walked in blocks of 256 so one block's planes (2 x 256 x k
//! bytes) stay in L2 while all column groups pass over them.
//!
//! The instructions are written as inline assembly (the AMX intrinsics are not stable Rust).
//! Using AMX needs the kernel's permission once per process (`arch_prctl`); tiles are
//! configured per call and released at its end, so threads that are not computing carry no
//! tile state through context switches.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::vnni::{self, store, Fmt, Q40, Q41, Q80};
use super::{Out, QActs};
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{self, GROUP};
use crate::backend::tensor::QMatrix;

/// Rows per tile (AMX's maximum).
const TILE_ROWS: usize = 16;
/// Activation rows per L2 block.
const ROW_BLOCK: usize = 256;

/// Whether AMX-INT8 is usable: CPU support, OS support (XCR0 tile state), the process's
/// permission (requested here once), AVX-512 VNNI for the fold, and `PONDER_CPU_ISA` not
/// set to a lower level.
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        if super::isa_override().is_some_and(|v| v == "avx2" || v == "avx512") {
            return false;
        }
        if !vnni::available() {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        // OSXSAVE (leaf 1, ecx bit 27) guards xgetbv.
        let osxsave = __cpuid(1).ecx >> 27 & 1 == 1;
        if !(tile && int8 && osxsave) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so xgetbv(0) is valid.
        let xcr0 = unsafe { _xgetbv(0) };
        if xcr0 & (3 << 17) != 3 << 17 {
            return false;
        }
        request_permission()
    })
}

/// Asks Linux for permission to use the tile data state (`ARCH_REQ_XCOMP_PERM`).
fn request_permission() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes this process's permitted
        // xsave features; it reads and writes no user memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The 64-byte tile configuration for `t` activation rows (palette 1).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(t: usize) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        // (tile, rows, bytes per row): C_hi, C_lo, A_hi, A_lo, B.
        for (tmm, rows, colsb) in [(0, t, 64), (1, t, 64), (2, t, 32), (3, t, 32), (4, 8, 64)] {
            c[16 + 2 * tmm..18 + 2 * tmm].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + tmm] = rows as u8;
        }
        TileConfig(c)
    }
}

/// The two 16 x 16 i32 results of one block, as tile stores leave them.
#[repr(C, align(64))]
struct Sums([[i32; GROUP]; 2 * TILE_ROWS]);

/// `S` of block `b` for activation rows `i..i+t` into `sums` (rows 0..t: C_hi, 16..16+t: C_lo).
///
/// # Safety
/// Tiles are configured for `t` rows; `a_hi`/`a_lo` point at row `i`'s block `b` in planes
/// of stride `k`; `bt` at 512 bytes of B tile.
#[inline(always)]
unsafe fn block_sums(a_hi: *const i8, a_lo: *const i8, k: usize, bt: *const u8, sums: &mut Sums) {
    let out = sums.0.as_mut_ptr() as *mut u8;
    // SAFETY: the loads read t rows of 32 bytes at stride k and 8 rows of 64 bytes; the
    // stores write t rows of 64 bytes into each half of `sums` (caller's contract).
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tileloadd tmm2, [{ahi} + {k} * 1]",
            "tileloadd tmm3, [{alo} + {k} * 1]",
            "tileloadd tmm4, [{bt} + {s64} * 1]",
            "tdpbssd tmm0, tmm2, tmm4",
            "tdpbssd tmm1, tmm3, tmm4",
            "tilestored [{out} + {s64} * 1], tmm0",
            "tilestored [{out2} + {s64} * 1], tmm1",
            ahi = in(reg) a_hi,
            alo = in(reg) a_lo,
            k = in(reg) k,
            bt = in(reg) bt,
            s64 = in(reg) 64usize,
            out = in(reg) out,
            out2 = in(reg) out.add(TILE_ROWS * 64),
            options(nostack),
        );
    }
}

/// Q4 nibbles of group-block `p` as a B tile (8 rows x 64 bytes) at `dst`.
///
/// # Safety
/// A group-block of `F` at `p`, 512 writable bytes at `dst`; AVX-512 enabled by the caller.
#[inline(always)]
unsafe fn unpack_b<F: Fmt>(p: *const u8, dst: *mut u8) {
    // SAFETY: caller's contract.
    unsafe {
        for (j, v) in F::weights(p).iter().enumerate() {
            _mm512_storeu_si512(dst.add(j * 64) as *mut __m512i, *v);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn rows_impl<F: Fmt>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let nb = acts.k / 32;
    let gbytes = packed::group_block_bytes(F::TY).unwrap_or(0);
    let base = w.data.bytes().as_ptr();
    // B tiles of one group: nb x 512 bytes (Q4 only; Q8_0 bytes are used in place).
    let mut btiles = if F::TY == GgmlType::Q8_0 {
        Vec::new()
    } else {
        vec![0u8; nb * 512]
    };
    let mut sums = Sums([[0; GROUP]; 2 * TILE_ROWS]);
    let mut config_rows = 0;
    for i0 in (0..acts.m).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(acts.m);
        for g in g0..g1 {
            // SAFETY: group g has nb group-blocks.
            let gw = unsafe { base.add(g * nb * gbytes) };
            if F::TY != GgmlType::Q8_0 {
                for b in 0..nb {
                    // SAFETY: block b of group g; btiles has nb * 512 bytes.
                    unsafe { unpack_b::<F>(gw.add(b * gbytes), btiles.as_mut_ptr().add(b * 512)) };
                }
            }
            let mut i = i0;
            while i < i1 {
                let t = (i1 - i).min(TILE_ROWS);
                if t != config_rows {
                    let cfg = TileConfig::new(t);
                    // SAFETY: a valid palette-1 configuration (rows <= 16, bytes <= 64).
                    unsafe {
                        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly))
                    };
                    config_rows = t;
                }
                // SAFETY: rows i..i+t exist; columns of group g are the caller's.
                unsafe { row_tile::<F>(acts, gw, gbytes, &btiles, &mut sums, bias, y, g, i, t) };
                i += t;
            }
        }
    }
    if config_rows != 0 {
        // SAFETY: releases this thread's tile state (configured above).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// One tile of `t` rows from `i` against group `g`: all blocks, then the stores.
///
/// # Safety
/// Tiles configured for `t` rows; `gw` is group `g`'s first group-block; `btiles` holds
/// its unpacked B tiles (Q4); rows `i..i+t` exist; the columns of group `g` are the caller's.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row_tile<F: Fmt>(
    acts: &QActs,
    gw: *const u8,
    gbytes: usize,
    btiles: &[u8],
    sums: &mut Sums,
    bias: Option<&[f32]>,
    y: Out,
    g: usize,
    i: usize,
    t: usize,
) {
    let (k, nb) = (acts.k, acts.k / 32);
    // SAFETY (whole body): as the caller's contract; block offsets stay within the group.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); TILE_ROWS];
        for b in 0..nb {
            let p = gw.add(b * gbytes);
            let bt = if F::TY == GgmlType::Q8_0 {
                p.add(32)
            } else {
                btiles.as_ptr().add(b * 512)
            };
            let a = i * k + b * 32;
            block_sums(
                acts.hi.as_ptr().add(a),
                acts.lo.as_ptr().add(a),
                k,
                bt,
                sums,
            );
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
            let mw = if F::HAS_MIN {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i))
            } else {
                _mm512_setzero_ps()
            };
            for (r, a) in acc.iter_mut().enumerate() {
                if r >= t {
                    break;
                }
                let hi = _mm512_load_si512(sums.0[r].as_ptr() as *const __m512i);
                let lo = _mm512_load_si512(sums.0[TILE_ROWS + r].as_ptr() as *const __m512i);
                let mut s = _mm512_add_epi32(_mm512_slli_epi32(hi, 8), lo);
                let blk = (i + r) * nb + b;
                // The B tile is signed: only Q4_0's nibble offset needs correcting.
                if F::TY == GgmlType::Q4_0 {
                    s = _mm512_sub_epi32(s, _mm512_set1_epi32(acts.s[blk] << 3));
                }
                let sc = _mm512_mul_ps(dw, _mm512_set1_ps(acts.d[blk]));
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, *a);
                if F::HAS_MIN {
                    *a = _mm512_fmadd_ps(mw, _mm512_set1_ps(acts.ds[blk]), *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(t) {
            store(y, i + r, g, *a, bias);
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<Q41>(acts, w, bias, y, g0, g1),
            GgmlType::Q4_0 => rows_impl::<Q40>(acts, w, bias, y, g0, g1),
            GgmlType::Q8_0 => rows_impl::<Q80>(acts, w, bias, y, g0, g1),
            other => unreachable!("amx::rows: {other:?} is not an integer-path type"),
        }
    }
}
