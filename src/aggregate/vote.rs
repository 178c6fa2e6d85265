//! Voting: finished samples' answer keys (+ mean logprob) -> a winning answer
//! and the sample whose text is returned.
//!
//! ```text
//!  sample:        0      1      2      3      4
//!  key:          "12"   "13"   None   "13"   "12"
//!  mean_logprob: -0.1   -2.0   -0.3   -2.0   -0.2
//!
//!  majority:            {"12": 2, "13": 2}     tie -> "12" (sample 0 < 1)
//!  confidence_weighted: {"12": e^-0.1 + e^-0.2 = 1.7236, "13": 2 e^-2 = 0.2707}
//!  best_logprob:        histogram as majority; winner = key of sample 0 (-0.1)
//!  verifier_weighted:   each vote weighs the sample's verifier score in [0, 1] (none: 0)
//!  best_score:          histogram as majority; winner = key of the best-scored sample
//!  winner_sample:       among samples with the winning key, the best mean_logprob
//!                       (verifier_weighted: the best score, then mean_logprob)
//! ```
//!
//! Invariants:
//! - Deterministic and independent of the order of `cands`: candidates are
//!   processed in ascending `sample` index (then input position), so float
//!   sums are always taken in the same order.
//! - Samples with no answer (`key: None`) cast no vote and never win.
//! - Ties: equal weight -> the answer first given by the lowest sample index;
//!   equal mean_logprob -> the lowest sample index.
//! - A NaN `mean_logprob` ranks below every number and weighs 0; weights are
//!   `exp(min(mean_logprob, 0))`, in [0, 1].

use std::cmp::Ordering;

/// How votes are weighed. Parsed from `ttc.aggregation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// One vote per sample with an answer.
    Majority,
    /// Each vote weighs exp(mean token logprob): the geometric-mean token probability.
    ConfidenceWeighted,
    /// The answer of the single most confident sample (histogram as majority).
    BestLogprob,
    /// Each vote weighs the sample's verifier score (P("Yes") of the verification probe).
    VerifierWeighted,
    /// The answer of the sample with the best verifier score (histogram as majority).
    BestScore,
}

impl Aggregation {
    /// "majority" | "confidence_weighted" | "best_logprob" | "verifier_weighted" |
    /// "best_score".
    pub fn parse(s: &str) -> Result<Aggregation, String> {
        match s {
            "majority" => Ok(Self::Majority),
            "confidence_weighted" => Ok(Self::ConfidenceWeighted),
            "best_logprob" => Ok(Self::BestLogprob),
            "verifier_weighted" => Ok(Self::VerifierWeighted),
            "best_score" => Ok(Self::BestScore),
            _ => Err(format!(
                "`aggregation` must be one of \"majority\", \"confidence_weighted\", \
                 \"best_logprob\", \"verifier_weighted\" or \"best_score\", given {s:?}"
            )),
        }
    }

    /// Whether the aggregation reads verifier scores.
    pub fn needs_scores(&self) -> bool {
        matches!(self, Self::VerifierWeighted | Self::BestScore)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Majority => "majority",
            Self::ConfidenceWeighted => "confidence_weighted",
            Self::BestLogprob => "best_logprob",
            Self::VerifierWeighted => "verifier_weighted",
            Self::BestScore => "best_score",
        }
    }

    /// A candidate's vote weight under this aggregation.
    fn weight(&self, c: &Candidate) -> f64 {
        match self {
            Self::Majority | Self::BestLogprob | Self::BestScore => 1.0,
            Self::ConfidenceWeighted if c.mean_logprob.is_nan() => 0.0,
            Self::ConfidenceWeighted => c.mean_logprob.min(0.0).exp(),
            Self::VerifierWeighted => c
                .score
                .filter(|s| !s.is_nan())
                .map_or(0.0, |s| s.clamp(0.0, 1.0)),
        }
    }
}

/// One finished sample as the vote sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index of the sample within its request (0-based, launch order).
    pub sample: usize,
    /// `Equivalence::key` of the extracted answer; `None` when no answer was found.
    pub key: Option<String>,
    /// Mean logprob of the sample's generated tokens (<= 0).
    pub mean_logprob: f64,
    /// Verifier score in [0, 1] (`None`: not scored).
    pub score: Option<f64>,
}

/// The outcome of a vote.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    /// (answer key, weight), heaviest first; ties broken by the earliest
    /// sample that gave the answer.
    pub histogram: Vec<(String, f64)>,
    pub winner: Option<String>,
    /// The sample whose text is returned: among samples with the winning key,
    /// the highest mean_logprob (ties: lowest index). For BestLogprob: the
    /// best-logprob sample overall that has an answer.
    pub winner_sample: Option<usize>,
    /// winner weight / total weight of samples that had an answer (0 when
    /// none, or when every weight is 0).
    pub share: f64,
}

/// Weights: Majority 1 per sample; ConfidenceWeighted exp(mean_logprob);
/// BestLogprob: histogram as Majority, winner = answer of the sample with the
/// highest mean_logprob. Samples without an answer cast no vote.
pub fn vote(agg: &Aggregation, cands: &[Candidate]) -> Vote {
    let answered = answered_in_order(cands);
    let hist = histogram(agg, &answered);
    let total: f64 = hist.iter().map(|(_, w)| w).sum();
    let by_score = agg.needs_scores();
    let best = match agg {
        Aggregation::BestLogprob | Aggregation::BestScore => {
            best_of(answered.iter().copied(), by_score)
        }
        _ => hist.first().and_then(|(key, _)| {
            best_of(
                answered
                    .iter()
                    .copied()
                    .filter(|c| c.key.as_ref() == Some(key)),
                by_score,
            )
        }),
    };
    let winner = best.and_then(|c| c.key.clone());
    let winner_sample = best.map(|c| c.sample);
    let winner_weight = hist
        .iter()
        .find(|(k, _)| Some(k) == winner.as_ref())
        .map_or(0.0, |(_, w)| *w);
    Vote {
        histogram: hist,
        winner,
        winner_sample,
        share: ratio(winner_weight, total),
    }
}

/// Share of the leading (heaviest) answer among `cands` with an answer under
/// `agg`'s weights (BestLogprob weighs as Majority); 0 if none.
pub fn leading_share(agg: &Aggregation, cands: &[Candidate]) -> f64 {
    let hist = histogram(agg, &answered_in_order(cands));
    let total: f64 = hist.iter().map(|(_, w)| w).sum();
    ratio(hist.first().map_or(0.0, |(_, w)| *w), total)
}

fn ratio(part: f64, total: f64) -> f64 {
    if total > 0.0 {
        part / total
    } else {
        0.0
    }
}

/// Candidates with an answer, sorted by sample index (stable: equal indices
/// keep their input order).
fn answered_in_order(cands: &[Candidate]) -> Vec<&Candidate> {
    let mut v: Vec<&Candidate> = cands.iter().filter(|c| c.key.is_some()).collect();
    v.sort_by_key(|c| c.sample);
    v
}

/// (key, weight) heaviest first, ties by first appearance in `answered` (which
/// is in sample order).
fn histogram(agg: &Aggregation, answered: &[&Candidate]) -> Vec<(String, f64)> {
    let mut hist: Vec<(String, f64)> = Vec::new();
    for c in answered {
        let key = c.key.as_ref().expect("answered candidates have a key");
        let w = agg.weight(c);
        match hist.iter_mut().find(|(k, _)| k == key) {
            Some((_, total)) => *total += w,
            None => hist.push((key.clone(), w)),
        }
    }
    // Stable sort: equal weights keep first-appearance order.
    hist.sort_by(|a, b| b.1.total_cmp(&a.1));
    hist
}

/// The sample with the highest mean_logprob (NaN lowest), or with `by_score` the highest
/// verifier score (unscored lowest), then mean_logprob; ties -> lowest index (the input is
/// in sample order, so the first maximum wins).
fn best_of<'a>(
    cands: impl Iterator<Item = &'a Candidate>,
    by_score: bool,
) -> Option<&'a Candidate> {
    let key = |c: &Candidate| {
        let s = if by_score {
            c.score.unwrap_or(f64::NAN)
        } else {
            0.0
        };
        (s, c.mean_logprob)
    };
    let mut best: Option<&Candidate> = None;
    for c in cands {
        if best.is_none_or(|b| {
            let ((s1, l1), (s2, l2)) = (key(c), key(b));
            rank(s1, s2).then(rank(l1, l2)) == Ordering::Greater
        }) {
            best = Some(c);
        }
    }
    best
}

/// Total order on mean logprobs with NaN below everything.
fn rank(a: f64, b: f64) -> Ordering {
    let fix = |x: f64| if x.is_nan() { f64::NEG_INFINITY } else { x };
    fix(a).total_cmp(&fix(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sample: usize, key: Option<&str>, mean_logprob: f64) -> Candidate {
        Candidate {
            sample,
            key: key.map(str::to_string),
            mean_logprob,
            score: None,
        }
    }

    fn scored(sample: usize, key: &str, mean_logprob: f64, score: f64) -> Candidate {
        Candidate {
            score: Some(score),
            ..c(sample, Some(key), mean_logprob)
        }
    }

    #[test]
    fn verifier_scores_weigh_votes_and_pick_the_best() {
        // Two samples say "3" with low scores, one says "4" with a high score.
        let cands = [
            scored(0, "3", -0.1, 0.2),
            scored(1, "3", -0.2, 0.25),
            scored(2, "4", -0.9, 0.9),
            c(3, Some("5"), -0.01), // unscored: weighs 0, never the best score
        ];
        assert_eq!(
            vote(&Aggregation::Majority, &cands).winner.as_deref(),
            Some("3")
        );
        let v = vote(&Aggregation::VerifierWeighted, &cands);
        assert_eq!(hist(&v), vec![("4", 0.9), ("3", 0.45), ("5", 0.0)]);
        assert_eq!((v.winner.as_deref(), v.winner_sample), (Some("4"), Some(2)));
        assert_eq!(v.share, 0.9 / 1.35);
        let v = vote(&Aggregation::BestScore, &cands);
        assert_eq!(hist(&v), vec![("3", 2.0), ("4", 1.0), ("5", 1.0)]);
        assert_eq!((v.winner.as_deref(), v.winner_sample), (Some("4"), Some(2)));
        // Equal scores: the better mean logprob, then the lower index.
        let tie = [scored(0, "a", -0.5, 0.7), scored(1, "b", -0.2, 0.7)];
        assert_eq!(vote(&Aggregation::BestScore, &tie).winner_sample, Some(1));
        // Within the winning answer, verifier_weighted returns the best-scored sample.
        let within = [scored(0, "a", -0.1, 0.3), scored(1, "a", -0.5, 0.6)];
        assert_eq!(
            vote(&Aggregation::VerifierWeighted, &within).winner_sample,
            Some(1)
        );
    }

    fn hist(v: &Vote) -> Vec<(&str, f64)> {
        v.histogram.iter().map(|(k, w)| (k.as_str(), *w)).collect()
    }

    /// The example of the module docs.
    fn example() -> Vec<Candidate> {
        vec![
            c(0, Some("12"), -0.1),
            c(1, Some("13"), -2.0),
            c(2, None, -0.3),
            c(3, Some("13"), -2.0),
            c(4, Some("12"), -0.2),
        ]
    }

    #[test]
    fn parse_and_as_str() {
        for s in [
            "majority",
            "confidence_weighted",
            "best_logprob",
            "verifier_weighted",
            "best_score",
        ] {
            assert_eq!(Aggregation::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(
            Aggregation::parse("vote"),
            Err(
                "`aggregation` must be one of \"majority\", \"confidence_weighted\", \
                 \"best_logprob\", \"verifier_weighted\" or \"best_score\", given \"vote\""
                    .into()
            )
        );
    }

    #[test]
    fn majority_tie_goes_to_the_earliest_sample() {
        let v = vote(&Aggregation::Majority, &example());
        assert_eq!(hist(&v), vec![("12", 2.0), ("13", 2.0)]);
        assert_eq!(v.winner.as_deref(), Some("12"));
        assert_eq!(v.winner_sample, Some(0));
        assert_eq!(v.share, 0.5);
        // Input order does not matter: the same vote in completion order.
        let mut rev = example();
        rev.reverse();
        assert_eq!(vote(&Aggregation::Majority, &rev), v);
        // "13" first given by sample 1 beats "12" first given by sample 2.
        let tie = [
            c(3, Some("12"), -0.1),
            c(1, Some("13"), -0.5),
            c(2, Some("12"), -0.1),
            c(4, Some("13"), -0.4),
        ];
        let v = vote(&Aggregation::Majority, &tie);
        assert_eq!(hist(&v), vec![("13", 2.0), ("12", 2.0)]);
        assert_eq!(v.winner.as_deref(), Some("13"));
        assert_eq!(v.winner_sample, Some(4));
    }

    #[test]
    fn majority_winner_sample_is_the_most_confident_of_the_winners() {
        let cands = [
            c(0, Some("7"), -1.0),
            c(1, Some("7"), -0.5),
            c(2, Some("8"), -0.1),
            c(3, Some("7"), -0.5),
        ];
        let v = vote(&Aggregation::Majority, &cands);
        assert_eq!(hist(&v), vec![("7", 3.0), ("8", 1.0)]);
        assert_eq!(v.winner.as_deref(), Some("7"));
        assert_eq!(v.winner_sample, Some(1));
        assert_eq!(v.share, 0.75);
    }

    #[test]
    fn confidence_weighted_overturns_the_majority() {
        // Three unsure samples say "5", two confident ones say "6".
        let cands = [
            c(0, Some("5"), -3.0),
            c(1, Some("5"), -3.0),
            c(2, Some("5"), -3.0),
            c(3, Some("6"), -0.1),
            c(4, Some("6"), -0.2),
        ];
        assert_eq!(
            vote(&Aggregation::Majority, &cands).winner.as_deref(),
            Some("5")
        );
        let v = vote(&Aggregation::ConfidenceWeighted, &cands);
        let w5 = 3.0 * (-3.0f64).exp();
        let w6 = (-0.1f64).exp() + (-0.2f64).exp();
        assert_eq!(hist(&v), vec![("6", w6), ("5", w5)]);
        assert_eq!(v.winner.as_deref(), Some("6"));
        assert_eq!(v.winner_sample, Some(3));
        assert_eq!(v.share, w6 / (w5 + w6));
    }

    #[test]
    fn best_logprob_takes_the_most_confident_answered_sample() {
        let cands = [
            c(0, Some("5"), -1.0),
            c(1, Some("5"), -1.0),
            c(2, None, -0.01),
            c(3, Some("6"), -0.5),
        ];
        let v = vote(&Aggregation::BestLogprob, &cands);
        assert_eq!(hist(&v), vec![("5", 2.0), ("6", 1.0)]);
        assert_eq!(v.winner.as_deref(), Some("6"));
        assert_eq!(v.winner_sample, Some(3));
        assert_eq!(v.share, 1.0 / 3.0);
        // equal logprobs -> lowest index
        let tie = [c(5, Some("x"), -0.5), c(2, Some("y"), -0.5)];
        assert_eq!(vote(&Aggregation::BestLogprob, &tie).winner_sample, Some(2));
    }

    #[test]
    fn no_answers_no_winner() {
        let none = [c(0, None, -0.1), c(1, None, -0.2)];
        for agg in [
            Aggregation::Majority,
            Aggregation::ConfidenceWeighted,
            Aggregation::BestLogprob,
        ] {
            let v = vote(&agg, &none);
            assert_eq!(
                v,
                Vote {
                    histogram: vec![],
                    winner: None,
                    winner_sample: None,
                    share: 0.0
                }
            );
            assert_eq!(vote(&agg, &[]), v);
            assert_eq!(leading_share(&agg, &none), 0.0);
        }
    }

    #[test]
    fn nan_and_infinite_logprobs() {
        let cands = [
            c(0, Some("a"), f64::NAN),
            c(1, Some("b"), f64::NEG_INFINITY),
            c(2, Some("a"), -1.0),
        ];
        let v = vote(&Aggregation::ConfidenceWeighted, &cands);
        assert_eq!(hist(&v), vec![("a", (-1.0f64).exp()), ("b", 0.0)]);
        assert_eq!(v.winner_sample, Some(2));
        assert_eq!(v.share, 1.0);
        let v = vote(&Aggregation::BestLogprob, &cands);
        assert_eq!(v.winner_sample, Some(2));
        // every weight 0: share 0, winner by first appearance
        let zero = [
            c(0, Some("a"), f64::NAN),
            c(1, Some("b"), f64::NEG_INFINITY),
        ];
        let v = vote(&Aggregation::ConfidenceWeighted, &zero);
        assert_eq!(v.winner.as_deref(), Some("a"));
        assert_eq!(v.winner_sample, Some(0));
        assert_eq!(v.share, 0.0);
    }

    #[test]
    fn leading_share_per_aggregation() {
        let cands = example();
        assert_eq!(leading_share(&Aggregation::Majority, &cands), 0.5);
        assert_eq!(leading_share(&Aggregation::BestLogprob, &cands), 0.5);
        let w12 = (-0.1f64).exp() + (-0.2f64).exp();
        let w13 = 2.0 * (-2.0f64).exp();
        assert_eq!(
            leading_share(&Aggregation::ConfidenceWeighted, &cands),
            w12 / (w12 + w13)
        );
        let three = [
            c(0, Some("1"), 0.0),
            c(1, Some("1"), 0.0),
            c(2, Some("2"), 0.0),
            c(3, None, 0.0),
        ];
        assert_eq!(leading_share(&Aggregation::Majority, &three), 2.0 / 3.0);
    }
}
