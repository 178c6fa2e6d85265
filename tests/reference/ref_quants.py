"""Independent numpy dequantizers for the ggml block types ponder reads.

Written from the ggml block definitions (ggml-common.h's structs and the
scalar `dequantize_row_*` loops), one element at a time: for every element e
of a block, a table says which byte (and bit shift, and mask) each of its bit
fields comes from and which sub-block scale applies. Dequantizing n blocks is
then a gather over those tables, so each format is written down as data that
can be read next to the layout below, not as reshapes.

Layouts (little-endian; f16 scales unless noted; u = element integer):

    type  elems bytes  fields                                    value
    Q4_0    32    18   d | qs[16]                                (u - 8) d
    Q4_1    32    20   d | m | qs[16]                            u d + m
    Q5_0    32    22   d | qh u32 | qs[16]                       (u - 16) d
    Q5_1    32    24   d | m | qh u32 | qs[16]                   u d + m
    Q8_0    32    34   d | i8 qs[32]                             qs d
    Q2_K   256    84   scales[16] | qs[64] | d | dmin            (d sc) u - dmin mn
    Q3_K   256   110   hmask[32] | qs[64] | scales[12] | d       (d (sc - 32)) q
    Q4_K   256   144   d | dmin | scales[12] | qs[128]           (d sc) u - dmin mn
    Q5_K   256   176   d | dmin | scales[12] | qh[32] | qs[128]  (d sc) u - dmin mn
    Q6_K   256   210   ql[128] | qh[64] | i8 scales[16] | d      (d sc) (u - 32)
    Q8_K   256   292   f32 d | i8 qs[256] | i16 bsums[16]        d qs

Where element e's bits are (n = e // 128, r = e % 128, k = r // 32, l = r % 32):

    Q4_x   low nibble of qs[e] for e < 16, high nibble of qs[e - 16] otherwise
    Q5_x   as Q4_x, plus bit e of qh as bit 4
    Q2_K   bits 2k..2k+1 of qs[32n + l]; scale byte e // 16: low nibble sc,
           high nibble mn
    Q3_K   as Q2_K for the low 2 bits; bit (4n + k) of hmask[l] set -> q = low,
           clear -> q = low - 4; 6-bit scale i = e // 16: low 4 bits from
           scales[i] (i < 8) or scales[i - 8] >> 4, top 2 bits from
           scales[8 + i % 4] >> 2 (i // 4)
    Q4_K   c = e // 64: low nibble of qs[32c + e % 32] when e % 64 < 32, high
           otherwise; scale/min j = e // 32, 6 bits each, from 12 bytes s:
           j < 4: sc = s[j] & 63, mn = s[j + 4] & 63;
           j >= 4: sc = s[j + 4] & 15 | (s[j - 4] >> 6) << 4,
                   mn = s[j + 4] >> 4 | (s[j] >> 6) << 4
    Q5_K   as Q4_K, plus bit e // 32 of qh[e % 32] as bit 4
    Q6_K   low 4 bits: ql[64n + l + 32 (k & 1)], low nibble for k < 2, high
           nibble otherwise; top 2 bits: (qh[32n + l] >> 2k) & 3; scale e // 16

Arithmetic is float32 in the order ggml's scalar code uses (scale products
first, then the element), so the results can be compared bit for bit.

Run directly, it cross-checks itself against `gguf.quants.dequantize` on
random blocks of every type and on every tensor of the GGUF files given:

    python ref_quants.py [MODEL.gguf ...]
"""

import sys

import numpy as np

QK = 32
QK_K = 256

# name -> (ggml type id, elements per block, bytes per block)
TYPES = {
    "Q4_0": (2, QK, 18),
    "Q4_1": (3, QK, 20),
    "Q5_0": (6, QK, 22),
    "Q5_1": (7, QK, 24),
    "Q8_0": (8, QK, 34),
    "Q2_K": (10, QK_K, 84),
    "Q3_K": (11, QK_K, 110),
    "Q4_K": (12, QK_K, 144),
    "Q5_K": (13, QK_K, 176),
    "Q6_K": (14, QK_K, 210),
    "Q8_K": (15, QK_K, 292),
}


def _f16(b, off):
    """The f16 at byte `off` of every block, as float32, shape (n, 1)."""
    return np.ascontiguousarray(b[:, off : off + 2]).view(np.float16).astype(np.float32)


def _field(b, byte, shift, mask):
    """Gather a bit field per element: (b[:, byte[e]] >> shift[e]) & mask[e]."""
    return (b[:, byte] >> shift) & mask


E32 = np.arange(QK)
E256 = np.arange(QK_K)
_n, _r = E256 // 128, E256 % 128
_k, _l = _r // 32, _r % 32


def _q4_low(off):
    """Q4_x/Q5_x low 4 bits: byte, shift of element e (qs starts at `off`)."""
    return off + E32 % 16, np.where(E32 < 16, 0, 4).astype(np.uint8)


def _q4_0(b):
    byte, sh = _q4_low(2)
    u = _field(b, byte, sh, 0xF).astype(np.int32)
    return (u - 8).astype(np.float32) * _f16(b, 0)


def _q4_1(b):
    byte, sh = _q4_low(4)
    u = _field(b, byte, sh, 0xF).astype(np.float32)
    return u * _f16(b, 0) + _f16(b, 2)


def _q5_high(b, off):
    """Bit 4 of every Q5_x element: bit e of the little-endian u32 at `off`."""
    return _field(b, off + E32 // 8, (E32 % 8).astype(np.uint8), 1).astype(np.int32) << 4


def _q5_0(b):
    byte, sh = _q4_low(6)
    u = _field(b, byte, sh, 0xF).astype(np.int32) | _q5_high(b, 2)
    return (u - 16).astype(np.float32) * _f16(b, 0)


def _q5_1(b):
    byte, sh = _q4_low(8)
    u = (_field(b, byte, sh, 0xF).astype(np.int32) | _q5_high(b, 4)).astype(np.float32)
    return u * _f16(b, 0) + _f16(b, 2)


def _q8_0(b):
    q = np.ascontiguousarray(b[:, 2:34]).view(np.int8).astype(np.float32)
    return q * _f16(b, 0)


def _q2_k(b):
    low = _field(b, 16 + 32 * _n + _l, (2 * _k).astype(np.uint8), 3).astype(np.float32)
    s = b[:, E256 // 16]
    dl = _f16(b, 80) * (s & 0xF).astype(np.float32)
    ml = _f16(b, 82) * (s >> 4).astype(np.float32)
    return dl * low - ml


def _q3_scales(b):
    """The 16 6-bit scales of Q3_K (12 bytes at 96), minus 32, per element."""
    i = E256 // 16
    low = np.where(i < 8, b[:, 96 + i % 8] & 0xF, b[:, 96 + i % 8] >> 4)
    high = (b[:, 104 + i % 4] >> (2 * (i // 4)).astype(np.uint8)) & 3
    return (low | (high << 4)).astype(np.int32) - 32


def _q3_k(b):
    low = _field(b, 32 + 32 * _n + _l, (2 * _k).astype(np.uint8), 3).astype(np.int32)
    hbit = _field(b, _l, (4 * _n + _k).astype(np.uint8), 1)
    q = np.where(hbit == 1, low, low - 4).astype(np.float32)
    dl = _f16(b, 108) * _q3_scales(b).astype(np.float32)
    return dl * q


def _k4_scale_min(b, off):
    """Q4_K/Q5_K: (scale, min) of each element's 32-element sub-block j = e // 32,
    from the 12 bytes at `off`."""
    j = E256 // 32
    s = lambda idx: b[:, off + idx]  # noqa: E731
    lo = j < 4
    jj = j % 4
    sc = np.where(lo, s(jj) & 63, (s(jj + 8) & 15) | ((s(jj) >> 6) << 4))
    mn = np.where(lo, s(jj + 4) & 63, (s(jj + 8) >> 4) | ((s(jj + 4) >> 6) << 4))
    return sc.astype(np.float32), mn.astype(np.float32)


def _k4_low(off):
    c, r = E256 // 64, E256 % 64
    return off + 32 * c + r % 32, np.where(r < 32, 0, 4).astype(np.uint8)


def _q4_k(b):
    sc, mn = _k4_scale_min(b, 4)
    byte, sh = _k4_low(16)
    u = _field(b, byte, sh, 0xF).astype(np.float32)
    return (_f16(b, 0) * sc) * u - _f16(b, 2) * mn


def _q5_k(b):
    sc, mn = _k4_scale_min(b, 4)
    byte, sh = _k4_low(48)
    high = _field(b, 16 + E256 % 32, (E256 // 32).astype(np.uint8), 1).astype(np.int32) << 4
    u = (_field(b, byte, sh, 0xF).astype(np.int32) | high).astype(np.float32)
    return (_f16(b, 0) * sc) * u - _f16(b, 2) * mn


def _q6_k(b):
    low = _field(b, 64 * _n + _l + 32 * (_k & 1), np.where(_k < 2, 0, 4).astype(np.uint8), 0xF)
    high = _field(b, 128 + 32 * _n + _l, (2 * _k).astype(np.uint8), 3)
    q = (low.astype(np.int32) | (high.astype(np.int32) << 4)) - 32
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8)[:, E256 // 16].astype(np.float32)
    return (_f16(b, 208) * sc) * q.astype(np.float32)


def _q8_k(b):
    d = np.ascontiguousarray(b[:, 0:4]).view(np.float32)
    q = np.ascontiguousarray(b[:, 4:260]).view(np.int8).astype(np.float32)
    return d * q


_DEQUANT = {
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q2_K": _q2_k,
    "Q3_K": _q3_k,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
    "Q8_K": _q8_k,
}


def dequantize(data, type_name):
    """Dequantize raw block bytes (any uint8 array whose size is a multiple of the
    block size) to a flat float32 array, in storage order."""
    _, elems, nbytes = TYPES[type_name]
    b = np.asarray(data, dtype=np.uint8).reshape(-1)
    assert b.size % nbytes == 0, f"{type_name}: {b.size} bytes is not whole blocks of {nbytes}"
    b = b.reshape(-1, nbytes)
    out = _DEQUANT[type_name](b)
    assert out.dtype == np.float32 and out.shape == (b.shape[0], elems)
    return out.reshape(-1)


# Byte ranges of each type's f16 scales (d, and m / dmin), for building blocks
# whose scales are finite and modest.
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
    "Q8_K": [],
}


def random_blocks(type_name, n, rng, fill=None):
    """`n` blocks of random bytes (or every byte `fill`) whose f16 scales are
    replaced by finite values of either sign (|d| in [2^-12, 2^-2)), and Q8_K's f32
    d likewise, so every decoded value is finite."""
    _, _, nbytes = TYPES[type_name]
    if fill is None:
        b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    else:
        b = np.full((n, nbytes), fill, dtype=np.uint8)
    for off in F16_FIELDS[type_name]:
        mag = np.exp2(rng.uniform(-12, -2, size=n))
        sign = np.where(rng.integers(0, 2, size=n) == 1, -1.0, 1.0)
        b[:, off : off + 2] = (sign * mag).astype(np.float16).reshape(n, 1).view(np.uint8)
    if type_name == "Q8_K":
        d = np.exp2(rng.uniform(-12, -2, size=n)).astype(np.float32)
        b[:, 0:4] = d.reshape(n, 1).view(np.uint8)
    return b


def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def crosscheck_random(rng, n=2000):
    """Every type gguf-py implements, on random blocks, bit for bit (raw random
    bytes too, where f16 scales may be inf/NaN: compared with NaN == NaN)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    for name in TYPES:
        if name == "Q8_K":
            continue  # gguf-py has no Q8_K dequantizer
        qt = GGMLQuantizationType[name]
        raw = rng.integers(0, 256, size=(n, TYPES[name][2]), dtype=np.uint8)
        for blocks in (random_blocks(name, n, rng), raw):
            with np.errstate(invalid="ignore", over="ignore"):
                ours = dequantize(blocks, name)
                theirs = np.asarray(gguf_dequantize(blocks.reshape(-1), qt), dtype=np.float32).reshape(-1)
            finite = np.isfinite(theirs)
            assert np.array_equal(np.isfinite(ours), finite), name
            assert np.array_equal(ours, theirs, equal_nan=True), name
            assert _same_bits(ours[finite], theirs[finite]), name
        print(f"{name}: {n} random blocks x2 bit-identical to gguf.quants")


def crosscheck_file(path):
    """Every quantized tensor of a GGUF file, bit for bit against gguf-py."""
    from gguf import GGUFReader
    from gguf.quants import dequantize as gguf_dequantize

    r = GGUFReader(path)
    counts = {}
    for t in r.tensors:
        name = t.tensor_type.name
        if name not in TYPES:
            continue
        ours = dequantize(t.data, name)
        theirs = np.asarray(gguf_dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        assert _same_bits(ours, theirs), f"{path}: {t.name} ({name}) differs"
        counts[name] = counts.get(name, 0) + 1
    print(f"{path}: bit-identical on {sum(counts.values())} tensors {counts}")
    return counts


if __name__ == "__main__":
    crosscheck_random(np.random.default_rng(1))
    for p in sys.argv[1:]:
        crosscheck_file(p)
