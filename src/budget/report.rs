//! What the controller tells the client (`ttc` in the response) and the metrics.
//!
//! Token identity: `tokens.thinking + tokens.answer + tokens.wasted` = every token generated
//! by every sample = `usage.completion_tokens` of the response (wasted = all tokens of samples
//! stopped early, which cast no vote); `tokens.probe` = tokens computed by probes of the
//! samples (certaindex, verification); `tokens.total` = all of them.

use serde_json::{json, Map, Value};

use super::strategy::Strategy;

/// Why a sample (or the whole request) stopped before finishing on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EarlyStop {
    /// The leading answer reached the consensus share; the rest cannot change the outcome.
    Consensus,
    /// The last `esc_window` completed samples agreed (early-stopping self-consistency).
    WindowAgreement,
    /// The sample's sliding-window mean logprob fell below the first wave's threshold.
    LowConfidence,
    /// `total_token_budget` was reached.
    TokenBudget,
    /// `deadline_ms` passed.
    Deadline,
    /// Between waves: the completed samples scattered below `min_agreement.share`; no further
    /// wave was launched (no sample is stopped for this reason).
    LowAgreement,
    /// `auto`: the leading answer is the majority with probability >= `auto.confidence`.
    Confident,
}

impl EarlyStop {
    pub const ALL: [EarlyStop; 7] = [
        EarlyStop::Consensus,
        EarlyStop::WindowAgreement,
        EarlyStop::LowConfidence,
        EarlyStop::TokenBudget,
        EarlyStop::Deadline,
        EarlyStop::LowAgreement,
        EarlyStop::Confident,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EarlyStop::Consensus => "consensus",
            EarlyStop::WindowAgreement => "window_agreement",
            EarlyStop::LowConfidence => "low_confidence",
            EarlyStop::TokenBudget => "token_budget",
            EarlyStop::Deadline => "deadline",
            EarlyStop::LowAgreement => "low_agreement",
            EarlyStop::Confident => "confident",
        }
    }
}

/// What a request asked for versus what the server granted (load-aware budgets).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grant {
    pub effort: Option<&'static str>,
    pub requested_n: usize,
    pub granted_n: usize,
    pub requested_min_samples: usize,
    pub granted_min_samples: usize,
    pub requested_thinking: Option<u32>,
    pub granted_thinking: Option<u32>,
    /// 0 = normal, 1 = busy, 2 = overloaded (see presets.rs).
    pub load_level: u8,
    /// Each sample's token limit (`max_completion_tokens` or its default).
    pub max_tokens: u32,
    /// Why a thinking budget was not applied (the model has no reasoning markers).
    pub note: Option<&'static str>,
}

impl Grant {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "requested": {"n": self.requested_n, "min_samples": self.requested_min_samples,
                "thinking_token_budget": self.requested_thinking, "reasoning_effort": self.effort},
            "granted": {"n": self.granted_n, "min_samples": self.granted_min_samples,
                "thinking_token_budget": self.granted_thinking, "load_level": self.load_level,
                "max_completion_tokens": self.max_tokens},
        });
        if let (Some(n), Value::Object(m)) = (self.note, &mut v) {
            m.insert("note".into(), json!(n));
        }
        v
    }
}

/// Where an aggregated request stands while its samples run (streamed as progress).
#[derive(Debug, Clone, PartialEq)]
pub struct TtcProgress {
    pub launched: usize,
    /// Samples generating now.
    pub running: usize,
    /// Samples that completed and count in the vote.
    pub completed: usize,
    pub stopped: usize,
    /// The answer leading the vote so far and its share of it.
    pub leader: Option<String>,
    pub leader_share: f64,
    /// Tokens generated so far, probes included.
    pub tokens: usize,
}

impl TtcProgress {
    pub fn to_json(&self) -> Value {
        json!({"samples_launched": self.launched, "samples_running": self.running,
            "samples_completed": self.completed, "samples_stopped": self.stopped,
            "leader": self.leader, "leader_share": round6(self.leader_share),
            "tokens": self.tokens})
    }
}

/// One decision of the controller: what it did, when (all tokens generated so far, probes
/// included) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub at_tokens: usize,
    /// launch | end_thinking | thinking_budget | stop_confident | finish (a metric label).
    pub kind: &'static str,
    pub what: String,
    pub why: String,
}

impl Decision {
    /// The label of a decision described as `what`.
    pub fn kind_of(what: &str) -> &'static str {
        if what.starts_with("launch") {
            "launch"
        } else if what.starts_with("end thinking") {
            "end_thinking"
        } else if what.starts_with("thinking budget") {
            "thinking_budget"
        } else if what.starts_with("stop: confident") {
            "stop_confident"
        } else {
            "finish"
        }
    }
}

/// One launched sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSummary {
    pub index: usize,
    /// Canonical answer key (`None`: nothing extracted, or stopped early).
    pub answer: Option<String>,
    pub tokens: usize,
    pub reasoning_tokens: usize,
    /// Mean logprob of its tokens (0 when it generated none).
    pub mean_logprob: f64,
    pub stopped: Option<EarlyStop>,
    /// Verifier score in [0, 1] (with a scorer; `None` when its probe was dropped).
    pub score: Option<f64>,
    /// Probes that returned, their tokens, and the answers the certaindex probes read.
    pub probes: usize,
    pub probe_tokens: usize,
    pub probe_answers: Vec<Option<String>>,
    /// Thinking tokens when certaindex ended its thinking.
    pub exit_at: Option<usize>,
}

/// The controller's account of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct TtcReport {
    pub strategy: Strategy,
    pub grant: Grant,
    pub samples: Vec<SampleSummary>,
    /// Why the request ended early (`None`: every launched sample finished on its own).
    pub stop_reason: Option<EarlyStop>,
    /// (answer key, weight), heaviest first.
    pub votes: Vec<(String, f64)>,
    pub answer: Option<String>,
    pub winning_share: f64,
    /// The sample whose text is the response's choice.
    pub winner_sample: Option<usize>,
    pub tokens_thinking: usize,
    pub tokens_answer: usize,
    pub tokens_wasted: usize,
    /// Tokens computed and decoded by probes (certaindex and verification), apart from the
    /// samples' own.
    pub tokens_probe: usize,
    /// Probes that returned a result: certaindex answer probes, verification probes.
    pub probes_answer: usize,
    pub probes_verify: usize,
    pub decisions: Vec<Decision>,
}

impl TtcReport {
    pub fn launched(&self) -> usize {
        self.samples.len()
    }

    pub fn stopped(&self) -> usize {
        self.samples.iter().filter(|s| s.stopped.is_some()).count()
    }

    pub fn completed(&self) -> usize {
        self.launched() - self.stopped()
    }

    /// Tokens the samples generated (the response's `usage.completion_tokens`).
    pub fn sample_tokens(&self) -> usize {
        self.tokens_thinking + self.tokens_answer + self.tokens_wasted
    }

    /// Every token spent: the samples' and the probes'.
    pub fn total_tokens(&self) -> usize {
        self.sample_tokens() + self.tokens_probe
    }

    /// An estimate of the tokens early stopping saved: samples not launched and samples
    /// stopped early, each counted at the mean length of the completed ones (0 when none
    /// completed: there is nothing to estimate from).
    pub fn tokens_saved_estimate(&self) -> usize {
        let done: Vec<usize> = self
            .samples
            .iter()
            .filter(|s| s.stopped.is_none())
            .map(|s| s.tokens)
            .collect();
        if done.is_empty() {
            return 0;
        }
        let mean = done.iter().sum::<usize>() as f64 / done.len() as f64;
        let unlaunched = self.grant.granted_n.saturating_sub(self.launched()) as f64 * mean;
        let cut: f64 = self
            .samples
            .iter()
            .filter(|s| s.stopped.is_some())
            .map(|s| (mean - s.tokens as f64).max(0.0))
            .sum();
        (unlaunched + cut).round() as usize
    }

    /// Samples whose thinking certaindex ended.
    pub fn certaindex_exits(&self) -> usize {
        self.samples.iter().filter(|s| s.exit_at.is_some()).count()
    }

    /// Early stops by reason, every reason listed (0 when none).
    pub fn stop_counts(&self) -> Vec<(EarlyStop, usize)> {
        EarlyStop::ALL
            .iter()
            .map(|&r| {
                let k = self.samples.iter().filter(|s| s.stopped == Some(r)).count();
                (r, k)
            })
            .collect()
    }

    /// The `ttc` object of a response.
    pub fn to_json(&self) -> Value {
        let votes: Map<String, Value> = self
            .votes
            .iter()
            .map(|(k, w)| (k.clone(), json!(round6(*w))))
            .collect();
        let stops: Map<String, Value> = self
            .stop_counts()
            .into_iter()
            .filter(|&(_, k)| k > 0)
            .map(|(r, k)| (r.as_str().to_string(), json!(k)))
            .collect();
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                json!({"index": s.index, "answer": s.answer, "tokens": s.tokens,
                    "reasoning_tokens": s.reasoning_tokens, "mean_logprob": round6(s.mean_logprob),
                    "stopped": s.stopped.map(EarlyStop::as_str),
                    "score": s.score.map(round6), "probes": s.probes,
                    "probe_tokens": s.probe_tokens, "probe_answers": s.probe_answers,
                    "certaindex_exit_at": s.exit_at})
            })
            .collect();
        let decisions: Vec<Value> = self
            .decisions
            .iter()
            .map(|d| json!({"at_tokens": d.at_tokens, "what": d.what, "why": d.why}))
            .collect();
        let mut v = json!({
            "strategy": self.strategy.as_str(),
            "samples_launched": self.launched(),
            "samples_completed": self.completed(),
            "samples_stopped": self.stopped(),
            "stop_reason": self.stop_reason.map(EarlyStop::as_str),
            "stop_reasons": stops,
            "votes": votes,
            "answer": self.answer,
            "winning_share": round6(self.winning_share),
            "winner_sample": self.winner_sample,
            "tokens": {"thinking": self.tokens_thinking, "answer": self.tokens_answer,
                "wasted": self.tokens_wasted, "probe": self.tokens_probe,
                "total": self.total_tokens()},
            "samples": samples,
            "decisions": decisions,
        });
        if let (Value::Object(m), Value::Object(g)) = (&mut v, self.grant.to_json()) {
            m.extend(g);
        }
        v
    }
}

/// JSON-friendly rounding (6 decimals) so reports do not carry float noise.
fn round6(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}
