//! One step's integer inputs as one i32 buffer: built and validated on the host, then either
//! uploaded once (an eager step) or written into page-locked staging memory that a captured
//! CUDA graph copies to the device as its first node (a graph step).
//!
//! Layout (R batch rows, L logits rows, S sequences, tables `max_blocks` wide):
//!
//! ```text
//!  ids [R] | positions [R] | slots [R] | token_seq [R] | logits_rows [L] |
//!  context_lens [S] | query_starts [S] | query_lens [S] | block_tables [S, max_blocks]
//! ```
//! Cost: `4 * (4R + L + S (3 + max_blocks))` bytes per step (a 256-sequence decode with
//! 64-block tables: 71 KB).
//!
//! Padding ([`Pad`], graph steps only): a decode-only batch of S sequences becomes `rows`
//! sequences of one row each; a padding row has token 0 at position 0, slot -1 (the cache
//! write skips it), context 1 over the null block 0, and its logits row is computed and
//! ignored. Tables are padded to `max_blocks` with block 0; the attention partitions are
//! then sized for `max_blocks * block_size` positions, so the graph's launch shapes depend
//! on the padding only.

use super::ops::i32_of;
use super::{CudaError, Result};

/// One sequence as attention sees it (the host form of a row of `attention::AttnBatch`).
#[derive(Debug, Clone)]
pub struct AttnSeqDesc<'a> {
    pub query_start: usize,
    pub query_len: usize,
    pub context_len: usize,
    pub block_table: &'a [u32],
}

/// A step's inputs as the host sees them.
pub struct StepBatch<'a> {
    pub seqs: &'a [AttnSeqDesc<'a>],
    pub ids: &'a [u32],
    pub positions: &'a [usize],
    pub slots: &'a [usize],
    pub logits_rows: &'a [usize],
}

/// The padded shape of a graph step: `rows` sequences, tables `max_blocks` wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pad {
    pub rows: usize,
    pub max_blocks: usize,
}

/// The host image of a step's integer inputs and its shape.
#[derive(Debug, Clone)]
pub struct StepLayout {
    pub host: Vec<i32>,
    pub rows: usize,
    pub logit_rows: usize,
    pub seqs: usize,
    pub max_blocks: usize,
    pub max_context: usize,
}

impl StepLayout {
    /// Validates `b` (query rows tile `0..R` in order, `1 <= query_len <= context_len`,
    /// tables cover each context, block ids `< num_blocks`, slots `< num_blocks *
    /// block_size`, logits rows `< R`) and lays it out, padded to `pad` when given (then
    /// `b` must be decode-only with logits rows `0..S`, at most `pad.rows` sequences and
    /// tables at most `pad.max_blocks` long).
    pub fn build(
        b: &StepBatch<'_>,
        block_size: usize,
        num_blocks: usize,
        pad: Option<Pad>,
    ) -> Result<Self> {
        let t = b.ids.len();
        if b.positions.len() != t || b.slots.len() != t {
            return Err(CudaError::Config(format!(
                "step: {t} ids, {} positions, {} slots",
                b.positions.len(),
                b.slots.len()
            )));
        }
        let longest = b
            .seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0);
        let (rows, seqs, max_blocks) = match pad {
            None => (t, b.seqs.len(), longest.max(1)),
            Some(p) => {
                let decode = b.seqs.iter().all(|s| s.query_len == 1)
                    && b.seqs.len() == t
                    && b.logits_rows.iter().copied().eq(0..t);
                if !decode || t > p.rows || longest > p.max_blocks {
                    return Err(CudaError::Config(format!(
                        "step: a batch of {t} rows / {} sequences (tables up to {longest}) \
                         cannot be padded to {p:?}",
                        b.seqs.len()
                    )));
                }
                (p.rows, p.rows, p.max_blocks)
            }
        };
        let logit_rows = if pad.is_some() {
            rows
        } else {
            b.logits_rows.len()
        };
        let mut h = vec![0i32; 4 * rows + logit_rows + seqs * (3 + max_blocks)];
        let (ids, rest) = h.split_at_mut(rows);
        let (pos, rest) = rest.split_at_mut(rows);
        let (slots, rest) = rest.split_at_mut(rows);
        let (tseq, rest) = rest.split_at_mut(rows);
        let (lrows, rest) = rest.split_at_mut(logit_rows);
        let (ctx, rest) = rest.split_at_mut(seqs);
        let (qs, rest) = rest.split_at_mut(seqs);
        let (ql, tables) = rest.split_at_mut(seqs);
        let num_slots = num_blocks * block_size;
        for i in 0..t {
            if b.slots[i] >= num_slots {
                return Err(CudaError::Config(format!(
                    "step: slot {} >= {num_slots} slots",
                    b.slots[i]
                )));
            }
            ids[i] = i32_of(b.ids[i] as usize)?;
            pos[i] = i32_of(b.positions[i])?;
            slots[i] = i32_of(b.slots[i])?;
        }
        let mut covered = 0;
        for (i, s) in b.seqs.iter().enumerate() {
            let bad = |m: String| Err(CudaError::Config(format!("step, sequence {i}: {m}")));
            if s.query_start != covered || s.query_len == 0 || s.query_len > s.context_len {
                return bad(format!(
                    "query rows {}+{} with context {}",
                    s.query_start, s.query_len, s.context_len
                ));
            }
            if s.block_table.len() * block_size < s.context_len {
                return bad(format!(
                    "{} blocks cannot hold {} tokens",
                    s.block_table.len(),
                    s.context_len
                ));
            }
            for (j, &blk) in s.block_table.iter().enumerate() {
                if blk as usize >= num_blocks {
                    return bad(format!("block id {blk} >= {num_blocks}"));
                }
                tables[i * max_blocks + j] = blk as i32;
            }
            ctx[i] = i32_of(s.context_len)?;
            qs[i] = i32_of(s.query_start)?;
            ql[i] = i32_of(s.query_len)?;
            tseq[covered..covered + s.query_len].fill(i as i32);
            covered += s.query_len;
        }
        if covered != t {
            return Err(CudaError::Config(format!(
                "step: sequences cover {covered} rows, the batch has {t}"
            )));
        }
        for (k, &r) in b.logits_rows.iter().enumerate() {
            if r >= t {
                return Err(CudaError::Config(format!(
                    "step: logits row {r} >= {t} rows"
                )));
            }
            lrows[k] = i32_of(r)?;
        }
        // Padding sequences (graph steps): one row each, context 1 over the null block.
        for i in b.seqs.len()..seqs {
            slots[i] = -1;
            tseq[i] = i as i32;
            lrows[i] = i as i32;
            ctx[i] = 1;
            qs[i] = i as i32;
            ql[i] = 1;
        }
        let max_context = match pad {
            Some(p) => p.max_blocks * block_size,
            None => b.seqs.iter().map(|s| s.context_len).max().unwrap_or(0),
        };
        Ok(StepLayout {
            host: h,
            rows,
            logit_rows,
            seqs,
            max_blocks,
            max_context,
        })
    }

    pub(crate) fn off_positions(&self) -> usize {
        self.rows
    }
    pub(crate) fn off_slots(&self) -> usize {
        2 * self.rows
    }
    pub(crate) fn off_token_seq(&self) -> usize {
        3 * self.rows
    }
    pub(crate) fn off_logit_rows(&self) -> usize {
        4 * self.rows
    }
    pub(crate) fn off_context_lens(&self) -> usize {
        4 * self.rows + self.logit_rows
    }
    pub(crate) fn off_query_starts(&self) -> usize {
        self.off_context_lens() + self.seqs
    }
    pub(crate) fn off_query_lens(&self) -> usize {
        self.off_context_lens() + 2 * self.seqs
    }
    pub(crate) fn off_tables(&self) -> usize {
        self.off_context_lens() + 3 * self.seqs
    }
}

/// The graph bucket of a decode batch of `n` sequences (None: too many for a graph).
pub fn row_bucket(n: usize) -> Option<usize> {
    const BUCKETS: [usize; 13] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256];
    BUCKETS.iter().copied().find(|&b| b >= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(start: usize, q: usize, ctx: usize, table: &[u32]) -> AttnSeqDesc<'_> {
        AttnSeqDesc {
            query_start: start,
            query_len: q,
            context_len: ctx,
            block_table: table,
        }
    }

    #[test]
    fn eager_layout_is_exact_and_validated() {
        let (t0, t1) = ([3u32, 1], [2u32]);
        let seqs = [desc(0, 2, 20, &t0), desc(2, 1, 5, &t1)];
        let b = StepBatch {
            seqs: &seqs,
            ids: &[7, 8, 9],
            positions: &[18, 19, 4],
            slots: &[17, 18, 36],
            logits_rows: &[1, 2],
        };
        let l = StepLayout::build(&b, 16, 4, None).unwrap();
        #[rustfmt::skip]
        let want = vec![
            7, 8, 9, 18, 19, 4, 17, 18, 36, 0, 0, 1, // ids, positions, slots, token_seq
            1, 2,                                     // logits rows
            20, 5, 0, 2, 2, 1,                        // context_lens, query_starts, query_lens
            3, 1, 2, 0,                               // tables, 2 wide
        ];
        assert_eq!(l.host, want);
        assert_eq!(
            (l.rows, l.logit_rows, l.seqs, l.max_blocks, l.max_context),
            (3, 2, 2, 2, 20)
        );
        assert_eq!(l.off_tables(), 20);
        // Block id past the cache, a slot past the cache, a table too short.
        let bad_table = [desc(0, 2, 20, &[3, 4]), desc(2, 1, 5, &t1)];
        let e = StepLayout::build(
            &StepBatch {
                seqs: &bad_table,
                ..b
            },
            16,
            4,
            None,
        );
        assert!(e.unwrap_err().to_string().contains("block id 4 >= 4"));
        let e = StepLayout::build(
            &StepBatch {
                slots: &[17, 18, 64],
                ..b
            },
            16,
            4,
            None,
        );
        assert!(e.unwrap_err().to_string().contains("slot 64 >= 64"));
        let short = [desc(0, 2, 40, &t0), desc(2, 1, 5, &t1)];
        let e = StepLayout::build(&StepBatch { seqs: &short, ..b }, 16, 4, None);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("2 blocks cannot hold 40"));
    }

    #[test]
    fn graph_padding_adds_null_rows() {
        let (t0, t1) = ([3u32], [2u32, 1]);
        let seqs = [desc(0, 1, 9, &t0), desc(1, 1, 17, &t1)];
        let b = StepBatch {
            seqs: &seqs,
            ids: &[5, 6],
            positions: &[8, 16],
            slots: &[56, 16],
            logits_rows: &[0, 1],
        };
        let pad = Pad {
            rows: 4,
            max_blocks: 4,
        };
        let l = StepLayout::build(&b, 16, 4, Some(pad)).unwrap();
        #[rustfmt::skip]
        let want = vec![
            5, 6, 0, 0,  8, 16, 0, 0,  56, 16, -1, -1,  0, 1, 2, 3, // ids, pos, slots, tseq
            0, 1, 2, 3,                                              // logits rows
            9, 17, 1, 1,  0, 1, 2, 3,  1, 1, 1, 1,                   // ctx, starts, lens
            3, 0, 0, 0,  2, 1, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,       // tables, 4 wide
        ];
        assert_eq!(l.host, want);
        assert_eq!(l.max_context, 64);
        // A prefill row, logits rows out of order, too many rows: not paddable.
        let pre = [desc(0, 2, 9, &t0)];
        let p = StepBatch {
            seqs: &pre,
            logits_rows: &[1],
            ..b
        };
        assert!(StepLayout::build(&p, 16, 4, Some(pad)).is_err());
        let swapped = StepBatch {
            logits_rows: &[1, 0],
            ..b
        };
        assert!(StepLayout::build(&swapped, 16, 4, Some(pad)).is_err());
        let small = Pad {
            rows: 1,
            max_blocks: 4,
        };
        assert!(StepLayout::build(&b, 16, 4, Some(small)).is_err());
    }

    #[test]
    fn buckets() {
        assert_eq!(row_bucket(1), Some(1));
        assert_eq!(row_bucket(3), Some(4));
        assert_eq!(row_bucket(17), Some(24));
        assert_eq!(row_bucket(256), Some(256));
        assert_eq!(row_bucket(257), None);
    }
}
