//! `backend::dtype::dequantize_row` against an independent implementation, bit for bit, for
//! every block-quantized type: tests/golden/dequant.json holds random blocks (finite f16
//! scales of either sign; also blocks whose other bytes are all 0x00 / all 0xFF) and the f32
//! values gguf-py's `gguf.quants.dequantize` gives for them (equal bit for bit to the numpy
//! decoder in tests/reference/ref_quants.py; Q8_K, which gguf-py lacks, from ref_quants.py).

use ponder::backend::dtype::{dequantize_row, GgmlType};
use serde_json::Value;

fn golden() -> Vec<Value> {
    let p = format!("{}/tests/golden/dequant.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const QUANTIZED: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

#[test]
fn every_quantized_type_decodes_bit_for_bit_like_the_reference() {
    let cases = golden();
    let types: Vec<GgmlType> = cases
        .iter()
        .map(|c| GgmlType::from_u32(c["ggml_type"].as_u64().unwrap() as u32).unwrap())
        .collect();
    assert_eq!(
        types, QUANTIZED,
        "dequant.json covers every quantized type once"
    );

    for (c, ty) in cases.iter().zip(types) {
        assert_eq!(c["type"].as_str().unwrap(), ty.name());
        assert_eq!(
            c["block_bytes"].as_u64().unwrap() as usize,
            ty.block_bytes()
        );
        assert_eq!(
            c["block_elems"].as_u64().unwrap() as usize,
            ty.block_elems()
        );
        let blocks = c["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 4, "{ty}");

        let mut row_bytes = Vec::new();
        let mut want = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let bytes = unhex(b["hex"].as_str().unwrap());
            assert_eq!(bytes.len(), ty.block_bytes(), "{ty} block {i}");
            // Every value in the file is an f32, written as the shortest decimal of its f64
            // widening, so the f64 -> f32 conversion is exact.
            let values: Vec<f32> = b["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(values.len(), ty.block_elems(), "{ty} block {i}");

            let mut got = vec![f32::NAN; ty.block_elems()];
            dequantize_row(ty, &bytes, &mut got);
            for (e, (g, w)) in got.iter().zip(&values).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} block {i} element {e}: ponder {g:e}, reference {w:e}"
                );
            }
            row_bytes.extend(bytes);
            want.extend(values);
        }

        // The four blocks as one row decode to the same values, in order.
        let mut got = vec![f32::NAN; want.len()];
        dequantize_row(ty, &row_bytes, &mut got);
        let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got_bits, want_bits, "{ty}: 4-block row");
    }
}

#[test]
fn golden_blocks_are_not_degenerate() {
    // The comparison above only means something if the blocks exercise the formats: the two
    // random blocks of each type hold many distinct values and differ.
    for c in &golden() {
        let blocks = c["blocks"].as_array().unwrap();
        for b in &blocks[..2] {
            let v: Vec<f64> = b["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let mut distinct: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(v.iter().all(|x| x.is_finite()), "{}", c["type"]);
            assert!(
                distinct.len() >= 8,
                "{}: {} distinct",
                c["type"],
                distinct.len()
            );
        }
        let random: Vec<&Value> = blocks[..2].iter().map(|b| &b["values"]).collect();
        assert_ne!(random[0], random[1], "{}", c["type"]);
    }
}
