//! AMX kernel of the integer GEMM (`matmul/q8.rs`) for batches (prefill chunks and batched
//! decode) on CPUs with AMX-INT8 (Intel Sapphire Rapids and later). Per tile of up to 16
//! activation rows and one Cg16 group (16 columns), for each block:
//!
//! ```text
//!  Q4_0 / Q4_1 (fused, one product per block):
//!  tmm2 = A: rows x 64 bytes (the block's 32 hi | 32 lo bytes, contiguous per row)
//!  tmm4 = B: 16 rows x 64 (quad j = row j: rows 0..8 hold 16 c, rows 8..16 hold c)
//!  set 0 (even b): tmm0 = tmm2 . tmm4 (tdpbsud: signed A, unsigned B, exact i32)
//!  set 1 (odd b):  tmm5 likewise         -> C = sum(16 c hi + c lo) = S (- 8 s for Q4_0)
//!  Q8_0 (c does not fit a byte times 16): A_hi, A_lo (tmm2, tmm3: 32 of the 64 bytes per
//!  row), B 8 x 64 (tmm4), two tdpbssd per set (tmm0/tmm1, tmm5/tmm6) -> S = 16 C_hi + C_lo
//!  -> each set stored to its own buffer; per row the header's float fold with AVX-512 (16
//!     lanes = 16 columns), accumulators in registers. Block b + 1's loads and products are
//!     issued before block b is stored and folded, so the tile unit has work while the
//!     vector units fold.
//! ```
//!
//! Measured on Xeon (AMX) at 2 cores: a 16x16x32 tile costs 35-45 ns (the fold, 4 vector
//! operations per row for Q4_1, and the tile work add rather than overlap; a tile store
//! costs ~4.4 ns whatever its row count): 2.1-2.3x the VNNI kernel with the weights in
//! cache. The fused Q4 product (one `tdpbsud` and one store per block instead of two of
//! each, and no hi/lo recombination in the fold) made a whole model pass 1.13-1.18x faster
//! at 32 and 256 rows (`benches/gemm.rs`).
//!
//! The integers are the same as the VNNI kernel's, and the fold is the same, so results are
//! bitwise equal to it (tested). Each group's quants are unpacked (Q4) or copied (Q8_0)
//! once into `nb x 1024` (Q4) or `nb x 512` bytes of aligned scratch (48 KiB at k = 1536),
//! reused by every row tile: tile loads of rows that straddle cache lines ran 1.7x slower.
//! Rows are walked in blocks of 256 so one block's planes (2 x 256 x k bytes) stay in L2
//! while all column groups pass over them.
//!
//! The instructions are written as inline assembly (the AMX intrinsics are not stable Rust).
//! Using AMX needs the kernel's permission once per process (`arch_prctl`); tiles are
//! configured per call and released at its end, so threads that are not computing carry no
//! tile state through context switches.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::def::Fold;
use super::vnni::{
    self, dispatch, fold, scales, store, Fmt, Q2k, Q3k, Q4k, Q5k, Q6k, VScales, Q40, Q41, Q50, Q51,
    Q80,
};
use super::{Out, QActs, LO, LO_BITS};
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{GroupLayout, GROUP};
use crate::backend::tensor::{AlignedBytes, QMatrix};

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
pub(super) struct TileConfig(pub [u8; 64]);

impl TileConfig {
    fn new(t: usize, fused: bool) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        // (tile, rows, bytes per row). Fused: C of the even steps, A (hi | lo), B (16u | u),
        // C of the odd steps. Split: C_hi, C_lo of the even steps, A_hi, A_lo, B, C_hi,
        // C_lo of the odd steps.
        let tiles: &[(usize, usize, usize)] = if fused {
            &[(0, t, 64), (2, t, 64), (4, 16, 64), (5, t, 64)]
        } else {
            &[
                (0, t, 64),
                (1, t, 64),
                (2, t, 32),
                (3, t, 32),
                (4, 8, 64),
                (5, t, 64),
                (6, t, 64),
            ]
        };
        for &(tmm, rows, colsb) in tiles {
            c[16 + 2 * tmm..18 + 2 * tmm].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + tmm] = rows as u8;
        }
        TileConfig(c)
    }
}

/// The 16 x 16 i32 results of one step, as tile stores leave them: C rows (fused), or C_hi
/// rows, then C_lo rows (split).
#[repr(C, align(64))]
pub(super) struct Sums(pub [[i32; GROUP]; 2 * TILE_ROWS]);

/// Whether format `F` multiplies both planes in one product: a 4-bit weight u (0..15)
/// times 16 still fits a byte, so the B tile holds 16u against the high plane and u against
/// the low plane (K = 64 bytes: 16 rows of quads), and one `tdpbsud` (signed A, unsigned B)
/// gives sum(16 u hi + u lo) = sum(u q). Wider weights (5, 6, 8 bits) do not: their signed
/// c goes in one B tile against each plane, two `tdpbssd`.
#[inline(always)]
fn fused<F: Fmt>() -> bool {
    F::BITS == 4
}

/// Steps per 32-block: one, or one per 16-element half (the B tile of a half has the other
/// half's quads zeroed, so each half's sum comes out of its own product).
#[inline(always)]
fn steps<F: Fmt>() -> usize {
    if F::SPEC.fold == Fold::Halves {
        2
    } else {
        1
    }
}

/// Bytes of one step's B tile: 16 x 64 fused, 8 x 64 split.
#[inline(always)]
fn b_bytes<F: Fmt>() -> usize {
    if fused::<F>() {
        1024
    } else {
        512
    }
}

/// The tile unit: the real instructions ([`Hw`]) or, in tests, an emulation with the
/// instructions' exact semantics (`matmul_q8_amx_emu.rs`), so every path of this kernel is
/// tested on CPUs without AMX too.
pub(super) trait Tiles {
    /// `ldtilecfg`.
    ///
    /// # Safety
    /// A valid palette-1 configuration.
    unsafe fn config(cfg: &TileConfig);
    /// Zeroes set `SET`'s C tiles and issues one step's products (fused: one `tdpbsud`;
    /// split: a `tdpbssd` per plane) from A at `a` (rows 64 bytes apart) and B at `bt`.
    ///
    /// # Safety
    /// Tiles configured for the mode; `a`, `bt` readable as the configured tiles.
    unsafe fn products<const FUSED: bool, const SET: usize>(a: *const i8, bt: *const u8);
    /// Stores set `SET`'s C tiles into `sums` (split: C_lo after the 16 C_hi rows).
    ///
    /// # Safety
    /// Tiles configured for the mode; set `SET` holds a step's products.
    unsafe fn store<const FUSED: bool, const SET: usize>(sums: &mut Sums);
    /// `tilerelease`.
    ///
    /// # Safety
    /// Tiles were configured by this thread.
    unsafe fn release();
}

/// The AMX instructions (inline assembly: the AMX intrinsics are not stable Rust).
pub(super) struct Hw;

impl Tiles for Hw {
    #[inline(always)]
    unsafe fn config(cfg: &TileConfig) {
        // SAFETY: a valid palette-1 configuration (caller).
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
    }

    #[inline(always)]
    unsafe fn products<const FUSED: bool, const SET: usize>(a: *const i8, bt: *const u8) {
        // SAFETY: the loads read t rows at stride 64 from a and the B tile's rows from bt.
        unsafe {
            macro_rules! fused {
                ($c0:literal) => {
                    asm!(
                        concat!("tilezero ", $c0),
                        "tileloadd tmm2, [{a} + {s64} * 1]",
                        "tileloadd tmm4, [{bt} + {s64} * 1]",
                        concat!("tdpbsud ", $c0, ", tmm2, tmm4"),
                        a = in(reg) a,
                        bt = in(reg) bt,
                        s64 = in(reg) 64usize,
                        options(nostack, readonly),
                    )
                };
            }
            macro_rules! split {
                ($c0:literal, $c1:literal) => {
                    asm!(
                        concat!("tilezero ", $c0),
                        concat!("tilezero ", $c1),
                        "tileloadd tmm2, [{ahi} + {s64} * 1]",
                        "tileloadd tmm3, [{alo} + {s64} * 1]",
                        "tileloadd tmm4, [{bt} + {s64} * 1]",
                        concat!("tdpbssd ", $c0, ", tmm2, tmm4"),
                        concat!("tdpbssd ", $c1, ", tmm3, tmm4"),
                        ahi = in(reg) a,
                        alo = in(reg) a.add(LO),
                        bt = in(reg) bt,
                        s64 = in(reg) 64usize,
                        options(nostack, readonly),
                    )
                };
            }
            match (FUSED, SET) {
                (true, 0) => fused!("tmm0"),
                (true, _) => fused!("tmm5"),
                (false, 0) => split!("tmm0", "tmm1"),
                (false, _) => split!("tmm5", "tmm6"),
            }
        }
    }

    #[inline(always)]
    unsafe fn store<const FUSED: bool, const SET: usize>(sums: &mut Sums) {
        let out = sums.0.as_mut_ptr() as *mut u8;
        // SAFETY: writes t rows of 64 bytes into the first (and second) half of `sums`.
        unsafe {
            macro_rules! one {
                ($c0:literal) => {
                    asm!(
                        concat!("tilestored [{out} + {s64} * 1], ", $c0),
                        out = in(reg) out,
                        s64 = in(reg) 64usize,
                        options(nostack),
                    )
                };
            }
            macro_rules! two {
                ($c0:literal, $c1:literal) => {
                    asm!(
                        concat!("tilestored [{out} + {s64} * 1], ", $c0),
                        concat!("tilestored [{out2} + {s64} * 1], ", $c1),
                        out = in(reg) out,
                        out2 = in(reg) out.add(TILE_ROWS * 64),
                        s64 = in(reg) 64usize,
                        options(nostack),
                    )
                };
            }
            match (FUSED, SET) {
                (true, 0) => one!("tmm0"),
                (true, _) => one!("tmm5"),
                (false, 0) => two!("tmm0", "tmm1"),
                (false, _) => two!("tmm5", "tmm6"),
            }
        }
    }

    #[inline(always)]
    unsafe fn release() {
        // SAFETY: releases this thread's tile state (configured by the caller).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Step `eh` (element half, or 0) of block `b`'s quants of the group at `gw` as a B tile at
/// `dst`: fused, the unsigned u times 16 in rows 0..8 (against the high plane) and as they
/// are in rows 8..16; split, the signed c = u - off (Q8_0: its bytes) in rows 0..8. A half
/// step keeps only its own quads (rows j with j / 4 == eh) and zeroes the others.
///
/// # Safety
/// A block's quants at `q`, [`b_bytes`] writable bytes at `dst` (64-byte aligned); AVX-512
/// enabled by the caller.
#[inline(always)]
unsafe fn unpack_b<F: Fmt>(q: *const u8, eh: usize, dst: *mut u8) {
    // SAFETY: caller's contract.
    unsafe {
        let keep = |j: usize| steps::<F>() == 1 || j / 4 == eh;
        let zero = _mm512_setzero_si512();
        if F::BITS == 8 {
            for j in 0..8 {
                let v = _mm512_loadu_si512(q.add(j * 64) as *const __m512i);
                _mm512_store_si512(
                    dst.add(j * 64) as *mut __m512i,
                    if keep(j) { v } else { zero },
                );
            }
            return;
        }
        let w = F::weights(q);
        if fused::<F>() {
            for (j, v) in w.iter().enumerate() {
                let v = if keep(j) { *v } else { zero };
                // Bytes are 0..15, so a 16-bit shift moves each within its own byte.
                _mm512_store_si512(dst.add(j * 64) as *mut __m512i, _mm512_slli_epi16(v, 4));
                _mm512_store_si512(dst.add(512 + j * 64) as *mut __m512i, v);
            }
        } else {
            let off = _mm512_set1_epi8(F::SPEC.off as i8);
            for (j, v) in w.iter().enumerate() {
                let c = if keep(j) {
                    _mm512_sub_epi8(*v, off)
                } else {
                    zero
                };
                _mm512_store_si512(dst.add(j * 64) as *mut __m512i, c);
            }
        }
    }
}

thread_local! {
    /// B tiles of the group being computed: nb x steps x 1024 bytes fused (48 KiB at
    /// k = 1536 for a 32-element format, 96 KiB for a 16-element one), nb x steps x 512
    /// split; reused.
    static BTILES: std::cell::RefCell<AlignedBytes> = std::cell::RefCell::default();
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
pub(super) unsafe fn rows_impl<F: Fmt, U: Tiles>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let gl = GroupLayout::new(F::TY, w.cols);
    let base = w.data.bytes().as_ptr();
    let step_bytes = b_bytes::<F>();
    let nsteps = gl.nb * steps::<F>();
    let mut bt_buf = BTILES.with(|b| b.take());
    bt_buf.resize_keep(nsteps * step_bytes);
    let btiles = bt_buf.as_mut_slice().as_mut_ptr();
    let mut sums = [
        Sums([[0; GROUP]; 2 * TILE_ROWS]),
        Sums([[0; GROUP]; 2 * TILE_ROWS]),
    ];
    let mut config_rows = 0;
    for i0 in (0..acts.m).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(acts.m);
        for g in g0..g1 {
            // SAFETY: group g is in the buffer.
            let gw = unsafe { base.add(g * gl.group_bytes()) };
            for st in 0..nsteps {
                let (b, eh) = (st / steps::<F>(), st % steps::<F>());
                // SAFETY: block b of group g; btiles has nsteps B tiles, 64-byte aligned.
                unsafe { unpack_b::<F>(gw.add(gl.quants(b)), eh, btiles.add(st * step_bytes)) };
            }
            // The next group's weights (5.8 KiB for Q4_1 at k = 576) into L2 while this one
            // computes: streamed from memory at decode, they otherwise arrive only when the
            // unpack asks (measured at 32 rows, one thread: 69 ns per 16x16x32 tile with the
            // weights in memory against 40 ns with them in cache).
            if g + 1 < g1 {
                let next = gw.wrapping_add(gl.group_bytes());
                for off in (0..gl.group_bytes()).step_by(64) {
                    // A hint; the address is inside the weight buffer.
                    _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(off) as *const i8);
                }
            }
            let mut i = i0;
            while i < i1 {
                let t = (i1 - i).min(TILE_ROWS);
                if t != config_rows {
                    // SAFETY: a valid palette-1 configuration (rows <= 16, bytes <= 64).
                    unsafe { U::config(&TileConfig::new(t, fused::<F>())) };
                    config_rows = t;
                }
                let tile = Tile {
                    gw,
                    gl: &gl,
                    btiles,
                    g,
                    i,
                    t,
                };
                // SAFETY: rows i..i+t exist; columns of group g are the caller's; tiles are
                // configured for t rows.
                unsafe {
                    match t {
                        13.. => row_tile::<F, U, 16>(acts, &tile, &mut sums, bias, y),
                        9..=12 => row_tile::<F, U, 12>(acts, &tile, &mut sums, bias, y),
                        5..=8 => row_tile::<F, U, 8>(acts, &tile, &mut sums, bias, y),
                        _ => row_tile::<F, U, 4>(acts, &tile, &mut sums, bias, y),
                    }
                }
                i += t;
            }
        }
    }
    BTILES.with(|b| b.replace(bt_buf));
    if config_rows != 0 {
        // SAFETY: releases this thread's tile state (configured above).
        unsafe { U::release() };
    }
}

/// Where one row tile's operands are.
struct Tile<'a> {
    /// The group's first byte.
    gw: *const u8,
    gl: &'a GroupLayout,
    /// The group's B tiles (steps x [`b_bytes`]).
    btiles: *const u8,
    g: usize,
    /// First row and row count.
    i: usize,
    t: usize,
}

/// One tile of `t <= T` rows against a group: all steps, then the stores. Step `st + 1`'s
/// products run on the tile unit while step `st` is stored (and its block folded once all
/// its steps are in). The fold is unrolled over a constant `T` rows so the accumulators stay
/// in registers; rows `t..T` are computed from zero padding and not stored.
///
/// # Safety
/// Tiles configured for `t` rows; `tile` describes a real group and its B tiles; rows
/// `i..i+t` exist; the columns of group `g` are the caller's.
#[inline(always)]
unsafe fn row_tile<F: Fmt, U: Tiles, const T: usize>(
    acts: &QActs,
    tile: &Tile<'_>,
    sums: &mut [Sums; 2],
    bias: Option<&[f32]>,
    y: Out,
) {
    let (i, t) = (tile.i, tile.t);
    let ns = steps::<F>();
    let nsteps = tile.gl.nb * ns;
    let planes = acts.hi_ptr();
    // SAFETY (whole body): as the caller's contract; block offsets stay within the group.
    unsafe {
        let start = |st: usize| {
            let a = planes.add(acts.plane_at(i, st / ns));
            let bt = tile.btiles.add(st * b_bytes::<F>());
            match (fused::<F>(), st % 2) {
                (true, 0) => U::products::<true, 0>(a, bt),
                (true, _) => U::products::<true, 1>(a, bt),
                (false, 0) => U::products::<false, 0>(a, bt),
                (false, _) => U::products::<false, 1>(a, bt),
            }
        };
        let mut acc = [_mm512_setzero_ps(); T];
        start(0);
        for st in 0..nsteps {
            // Step st + 1's loads and products are issued before step st's results are
            // stored and folded (measured: 34 against 37 ns per 16 x 16 x 32 tile the other
            // way round; folding block b - 1 after storing block b measured the same).
            if st + 1 < nsteps {
                start(st + 1);
            }
            match (fused::<F>(), st % 2) {
                (true, 0) => U::store::<true, 0>(&mut sums[0]),
                (true, _) => U::store::<true, 1>(&mut sums[1]),
                (false, 0) => U::store::<false, 0>(&mut sums[0]),
                (false, _) => U::store::<false, 1>(&mut sums[1]),
            }
            if (st + 1) % ns == 0 {
                let b = st / ns;
                let v = scales::<F>(tile.gw.add(tile.gl.record(b)), b % tile.gl.form.sbk);
                // A whole block: its sums are in sums[st % 2] (one step) or sums[0], sums[1]
                // (halves 0 and 1).
                let first = if ns == 1 { st % 2 } else { 0 };
                fold_tile::<F, T>(&mut acc, sums, first, acts, acts.at(i, b), &v);
            }
        }
        for (r, a) in acc.iter().enumerate().take(t) {
            store(y, i + r, tile.g, *a, bias);
        }
    }
}

/// Folds one block's sums into the accumulators (the definition's order), rows unrolled.
/// Tile row r's scales are at `at + r` (`at` = [`QActs::at`] of the tile's first row, a
/// multiple of 16: rows past the tile's `t` read the zero padding and are never stored).
///
/// # Safety
/// `at..at + 16` is in the scale arrays; AVX-512 enabled by the caller.
#[inline(always)]
unsafe fn fold_tile<F: Fmt, const T: usize>(
    acc: &mut [__m512; T],
    sums: &[Sums; 2],
    first: usize,
    acts: &QActs,
    at: usize,
    v: &VScales,
) {
    // The exact integer of step sums `s` for row r: fused, sum(u q) (the offset is
    // corrected below); split, 16 C_hi + C_lo of the signed c.
    #[inline(always)]
    unsafe fn sum<F: Fmt>(s: &Sums, r: usize) -> __m512i {
        // SAFETY: sums rows are 64-byte aligned and r < 16.
        unsafe {
            let c = _mm512_load_si512(s.0[r].as_ptr() as *const __m512i);
            if fused::<F>() {
                c
            } else {
                let lo = _mm512_load_si512(s.0[TILE_ROWS + r].as_ptr() as *const __m512i);
                _mm512_add_epi32(_mm512_slli_epi32::<LO_BITS>(c), lo)
            }
        }
    }
    let halves = steps::<F>() == 2;
    // Fused B tiles hold u: the definition's offset comes off as a multiple of the sums.
    let off = if fused::<F>() { F::SPEC.off } else { 0 };
    for (r, a) in acc.iter_mut().enumerate() {
        let blk = at + r;
        // SAFETY: blk indexes the scale arrays (caller); sums rows as above.
        unsafe {
            let (a_s, a_s0) = (*acts.s.get_unchecked(blk), *acts.s0.get_unchecked(blk));
            let minus = |x: __m512i, v: i32| _mm512_sub_epi32(x, _mm512_set1_epi32(off * v));
            let s = if halves {
                [
                    minus(sum::<F>(&sums[0], r), a_s0),
                    minus(sum::<F>(&sums[1], r), a_s - a_s0),
                ]
            } else {
                [
                    minus(sum::<F>(&sums[first], r), a_s),
                    _mm512_setzero_si512(),
                ]
            };
            *a = fold::<F>(*a, s, v, acts, blk);
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe { dispatch!(w.ty, rows_hw, (acts, w, bias, y, g0, g1)) }
}

/// [`rows_impl`] on the real tile unit.
unsafe fn rows_hw<F: Fmt>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    // SAFETY: forwarded contract (AMX available).
    unsafe { rows_impl::<F, Hw>(acts, w, bias, y, g0, g1) }
}

#[cfg(test)]
pub(super) mod emu;
