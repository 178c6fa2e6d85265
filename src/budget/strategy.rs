//! The request-level choices every other budget module reads: the strategy, and the
//! parameters of the `auto` strategy's online allocation.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Single,
    SelfConsistency,
    BestOfN,
    /// The controller decides how many samples run and how long they think (`AutoPolicy`).
    Auto,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Single => "single",
            Strategy::SelfConsistency => "self_consistency",
            Strategy::BestOfN => "best_of_n",
            Strategy::Auto => "auto",
        }
    }
}

/// How `auto` allocates compute, online, from what the samples show (parameters per server
/// through the `auto` effort preset, per request through `ttc.auto`).
///
/// ```text
///  wave 1: `first` samples at the request's thinking budget
///  each counted sample: leader a votes, runner-up b (unanswered samples vote for nothing)
///     P(leader is the majority) = P(Beta(a+1, b+1) > 1/2) = P(Bin(a+b+1, 1/2) <= a)
///     >= `confidence`                                  -> stop the rest, finish (confident)
///     >= `hopeless_after` counted, leader share < `hopeless_share` -> finish (low_agreement):
///        answers this scattered say the problem is beyond the model; more votes rarely help
///  nothing live: next wave of `wave` samples (up to n, and what the load allows); if half
///     or more of the last wave hit their thinking budget, the next wave thinks up to twice
///     as long (at most `max_thinking`)
/// ```
/// The leader is the vote's winner under the request's aggregation; `auto` defaults to
/// `confidence_weighted` (each vote weighs exp(mean token logprob)), which in practice breaks
/// ties towards the more confident sample. With the defaults two agreeing answers end a
/// request (P = 0.875); after a split first wave one more sample runs at a time: 2-1 goes on
/// (0.69), 3-1 ends it (0.81), and three or more answers in which the leader holds less than
/// 0.51 of the weight (1-1-1, and 2-1-1 or 2-2 between about equally confident samples) end it
/// as scattered. Easy problems take 2 samples, contested ones 3-5. The defaults were chosen
/// by replaying the 16-sample run of the ttc eval (Qwen2.5-Coder-0.5B;
/// `benches/ttc_eval/replay.py`, `docs/ttc-eval.md`): accuracy is flat across the settings
/// that spend 35-50% of majority-8's tokens, so the cheapest of them within a point of
/// majority-8 was taken; on that model votes past a scattered first three rarely change the
/// answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoPolicy {
    pub first: usize,
    pub wave: usize,
    pub confidence: f64,
    pub hopeless_after: usize,
    pub hopeless_share: f64,
    pub max_thinking: Option<u32>,
}

impl Default for AutoPolicy {
    fn default() -> Self {
        AutoPolicy {
            first: 2,
            wave: 1,
            confidence: 0.8,
            hopeless_after: 3,
            hopeless_share: 0.51,
            max_thinking: None,
        }
    }
}
