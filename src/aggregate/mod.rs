//! Aggregation of a request's samples: answer extraction, answer
//! equivalence, voting, and the consensus / confidence signals the budget
//! controller uses to stop samples early. Pure, synchronous, device-free.
//!
//! ```text
//!  sample text --Extractor::extract--> answer text --Equivalence::key--> key
//!                                                                          |
//!  (sample, key, mean_logprob) = Candidate ... ----------------------------+
//!       |                    |                       |
//!       v                    v                       v
//!  vote(agg, cands)    leading_share(agg, cands)   window_agrees(cands, w)
//!   -> Vote {histogram, winner, winner_sample, share}
//!
//!  token logprobs --WindowMean(w)--> window means, min  (per running sample)
//!  first wave's mins --confidence_threshold(p)--> stop threshold
//! ```
//!
//! Files: `extract.rs` (Extractor), `equiv.rs` (Equivalence), `vote.rs`
//! (Aggregation, Candidate, Vote, vote, leading_share), `consensus.rs`
//! (window_agrees, confidence_threshold, WindowMean).
//!
//! Invariants:
//! - Every function is deterministic; `vote` / `leading_share` do not depend
//!   on the order of their candidates (`window_agrees` does, by design: it
//!   reads completion order).
//! - `parse` errors are messages fit for a 400 response: they name the field,
//!   the allowed values and the value given.

mod consensus;
mod equiv;
mod extract;
mod vote;

pub use consensus::{confidence_threshold, window_agrees, WindowMean, LOGPROB_FLOOR};
pub use equiv::Equivalence;
pub use extract::{Extractor, MAX_REGEX_BYTES, REGEX_SIZE_LIMIT};
pub use vote::{leading_share, vote, Aggregation, Candidate, Vote};
