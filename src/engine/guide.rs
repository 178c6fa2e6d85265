//! Constrained decoding in the engine loop: the masks of a step's guided samples are computed
//! on a helper thread while the forward pass runs (they depend only on the tokens the samples
//! already have), and each drawn token advances its sample's guide.
//!
//! ```text
//! schedule -> guided rows? --spawn--> [helper] mask per guided sample (s.mask)
//!          -> runner.execute (this thread, same time)
//!          -> join -> sample_guided(logits, s.mask) -> advance(token)
//! ```
//!
//! Samples in thinking are not constrained (the grammar applies to the answer), and their
//! tokens do not advance the guide.

use std::collections::HashMap;

use super::reqstate::RequestState;
use crate::sched::SeqId;

/// (request, sample) of every guided sample a step samples, outside thinking.
pub(super) fn guided_samples(
    requests: &HashMap<u64, RequestState>,
    seq_owner: &HashMap<SeqId, (u64, usize)>,
    sample_for: &[Vec<SeqId>],
) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for seq in sample_for.iter().flatten() {
        let Some(&(rid, si)) = seq_owner.get(seq) else {
            continue;
        };
        let Some(s) = requests.get(&rid).and_then(|r| r.samples.get(si)) else {
            continue;
        };
        if s.guide.is_some() && !s.think.in_thinking() {
            out.push((rid, si));
        }
    }
    out
}

/// Computes the next mask of each listed sample into `s.mask` (an error into `s.mask_err`).
pub(super) fn compute_masks(requests: &mut HashMap<u64, RequestState>, list: &[(u64, usize)]) {
    for &(rid, si) in list {
        let Some(s) = requests.get_mut(&rid).and_then(|r| r.samples.get_mut(si)) else {
            continue;
        };
        let Some(g) = s.guide.as_mut() else {
            continue;
        };
        match g.mask() {
            Ok(m) => s.mask = Some(m),
            Err(e) => s.mask_err = Some(e),
        }
    }
}
