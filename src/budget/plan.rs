//! `RawBudget` (what the client sent) -> `Budget` (checked): the thinking limits of every
//! sample and, for aggregated requests, the `TtcPlan` the controller runs.
//!
//! Precedence: request field > `reasoning_effort` preset > default. Then the load rule
//! (presets.rs) shrinks samples and thinking; `Grant` records asked versus granted.
//! Every error names its field (`ttc.min_samples`), the limit and the value given.

use std::time::Duration;

use super::presets::{BudgetConfig, Effort, LoadRule, LoadSnapshot};
use super::report::Grant;
use super::strategy::{AutoPolicy, Strategy};
use crate::aggregate::{Aggregation, Equivalence, Extractor};
use crate::reasoning::ThinkLimits;

/// A budget field that is out of range or inconsistent: the field as the client named it
/// (`ttc.min_samples`) and what was wrong (validation answers it as a 400 on that field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BudgetError {
    pub param: String,
    pub message: String,
}

/// Longest `deadline_ms` accepted (one hour).
pub const MAX_DEADLINE_MS: i64 = 3_600_000;
/// Largest confidence-gate window (tokens); bounds the per-sample window memory.
pub const MAX_GATE_WINDOW: i64 = 1024;

/// `ttc.auto` as sent (types checked).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawAuto {
    pub first: Option<i64>,
    pub wave: Option<i64>,
    pub confidence: Option<f64>,
    pub hopeless_after: Option<i64>,
    pub hopeless_share: Option<f64>,
    pub max_thinking: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawGate {
    pub window: Option<i64>,
    pub percentile: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawMinAgreement {
    pub after: Option<i64>,
    pub share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawCertaindex {
    pub probe_every: Option<i64>,
    pub agree: Option<i64>,
    pub max_tokens: Option<i64>,
}

/// The `ttc` object, types checked (api/request.rs), ranges not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawTtc {
    pub strategy: Option<String>,
    pub n: Option<i64>,
    pub min_samples: Option<i64>,
    pub extract: Option<String>,
    pub equivalence: Option<String>,
    pub aggregation: Option<String>,
    pub consensus: Option<f64>,
    pub esc_window: Option<i64>,
    pub confidence_gate: Option<RawGate>,
    pub min_agreement: Option<RawMinAgreement>,
    pub total_token_budget: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub certaindex: Option<RawCertaindex>,
    pub scorer: Option<String>,
    pub auto: Option<RawAuto>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawBudget {
    pub reasoning_effort: Option<String>,
    pub thinking_token_budget: Option<i64>,
    pub min_thinking_tokens: Option<i64>,
    pub ttc: Option<RawTtc>,
}

/// DeepConf-style gate: samples after the first wave stop when their `window`-token mean
/// logprob falls below the `percentile`-th percentile of the first wave's lowest window means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub window: usize,
    pub percentile: f64,
}

/// Difficulty-adaptive stop: at a wave boundary, once at least `after` samples completed, end
/// the request when the current winner holds less than `share` of the completed samples.
/// Samples that scatter this widely say the problem is beyond the model; more votes rarely
/// change that (Snell et al. 2024, compute-optimal test-time scaling), so the budget is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinAgreement {
    pub after: usize,
    pub share: f64,
}

/// Dynasor-style certaindex early exit: every `probe_every` thinking tokens a probe asks the
/// sample for its final answer so far (decoding at most `max_tokens`); once the last `agree`
/// probed answers agree, thinking is ended and the sample answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Certaindex {
    pub probe_every: usize,
    pub agree: usize,
    pub max_tokens: usize,
}

/// Bounds of the certaindex knobs.
pub const MAX_PROBE_TOKENS: i64 = 64;

/// A checked aggregation plan (with the load rule applied).
#[derive(Debug, Clone)]
pub struct TtcPlan {
    pub strategy: Strategy,
    /// Most samples (granted).
    pub n: usize,
    /// First wave size; later waves have the same size (the last may be smaller).
    pub min_samples: usize,
    pub extractor: Extractor,
    pub equivalence: Equivalence,
    pub aggregation: Aggregation,
    pub consensus: Option<f64>,
    pub esc_window: Option<usize>,
    pub gate: Option<Gate>,
    pub min_agreement: Option<MinAgreement>,
    pub total_token_budget: Option<usize>,
    pub deadline: Option<Duration>,
    pub certaindex: Option<Certaindex>,
    /// Each completed sample is scored by a verification probe before it counts.
    pub scorer: bool,
    /// `auto`'s allocation rule (strategy auto only).
    pub auto: Option<AutoPolicy>,
    /// The thinking budget the request asked for (before the load rule), for later waves
    /// that meet a different load.
    pub think_budget: Option<u32>,
    /// The server's load rule, re-applied before every later wave.
    pub load_rule: LoadRule,
    pub grant: Grant,
}

/// What the plan builder needs besides the request.
pub struct BudgetContext<'a> {
    pub config: &'a BudgetConfig,
    pub load: LoadSnapshot,
    /// The model marks thinking (a reasoning format is configured).
    pub has_reasoning: bool,
    pub max_n: usize,
    /// The per-sample token limit (`max_completion_tokens` or its default).
    pub max_tokens: u32,
    /// Top-level `n` as given.
    pub n_given: Option<i64>,
}

/// The checked budget of one request.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub think: ThinkLimits,
    pub ttc: Option<TtcPlan>,
    /// Asked versus granted, when the request asked for any budget.
    pub grant: Option<Grant>,
}

fn bad(param: &str, msg: String) -> BudgetError {
    BudgetError {
        param: param.to_string(),
        message: msg,
    }
}

fn range(param: &str, v: i64, lo: i64, hi: i64) -> Result<i64, BudgetError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(bad(
            param,
            format!("`{param}` must be in [{lo}, {hi}], given {v}"),
        ))
    }
}

const NO_MARKERS: &str =
    "the model has no reasoning markers, so thinking is not budgeted separately";

/// Checks `raw` and applies presets and the load rule.
pub fn build(raw: &RawBudget, cx: &BudgetContext<'_>) -> Result<Budget, BudgetError> {
    let effort = match &raw.reasoning_effort {
        None => None,
        Some(s) => Some(Effort::parse(s).ok_or_else(|| {
            bad(
                "reasoning_effort",
                format!(
                    "`reasoning_effort` must be one of none, low, medium, high, auto, given {s:?}"
                ),
            )
        })?),
    };
    let preset = effort.map(|e| cx.config.preset(e));
    let level = cx.config.load.level(&cx.load);
    let max_tokens = i64::from(cx.max_tokens);

    // ---- thinking ----
    let no_markers = |param: &str| {
        bad(
            param,
            format!(
                "`{param}` needs a model that marks its thinking (<think>...</think>); this model has no reasoning markers (start the server with --reasoning-parser to set them)"
            ),
        )
    };
    let requested_thinking: Option<u32> = match raw.thinking_token_budget {
        Some(t) => {
            if !cx.has_reasoning {
                return Err(no_markers("thinking_token_budget"));
            }
            if t < 0 || t >= max_tokens {
                return Err(bad(
                    "thinking_token_budget",
                    format!("`thinking_token_budget` must be in [0, {}] (below the sample's token limit of {max_tokens}, to leave room for the answer), given {t}", max_tokens - 1),
                ));
            }
            Some(t as u32)
        }
        // Presets are clamped to 3/4 of the sample's token limit.
        None => preset
            .and_then(|p| p.thinking_token_budget)
            .map(|t| t.min(cx.max_tokens / 4 * 3)),
    };
    let min_thinking = match raw.min_thinking_tokens {
        None => 0,
        Some(_) if !cx.has_reasoning => return Err(no_markers("min_thinking_tokens")),
        Some(m) => {
            let hi = requested_thinking.map_or(max_tokens - 1, i64::from);
            range("min_thinking_tokens", m, 0, hi)? as u32
        }
    };
    let granted_thinking = if cx.has_reasoning {
        requested_thinking.map(|t| LoadRule::thinking(level, t))
    } else {
        None
    };
    let think = ThinkLimits {
        budget: granted_thinking,
        min_thinking: min_thinking.min(granted_thinking.unwrap_or(u32::MAX)),
    };
    let mut grant = Grant {
        effort: effort.map(Effort::as_str),
        requested_n: 1,
        granted_n: 1,
        requested_min_samples: 1,
        granted_min_samples: 1,
        requested_thinking,
        granted_thinking,
        load_level: level,
        max_tokens: cx.max_tokens,
        note: (requested_thinking.is_some() && !cx.has_reasoning).then_some(NO_MARKERS),
    };
    let asked = effort.is_some() || raw.thinking_token_budget.is_some() || raw.ttc.is_some();

    // ---- samples ----
    let preset_n = preset.map_or(1, |p| p.n);
    let Some(t) = raw
        .ttc
        .clone()
        .or_else(|| (preset_n > 1).then(RawTtc::default))
    else {
        return Ok(Budget {
            think,
            ttc: None,
            grant: asked.then_some(grant),
        });
    };
    if let Some(n) = cx.n_given.filter(|&n| n != 1) {
        return Err(bad(
            "n",
            format!("`n` must be 1 (or absent) when samples are aggregated (`ttc` or a reasoning_effort preset with several samples); set `ttc.n` instead, given {n}"),
        ));
    }
    let max_n = cx.max_n as i64;
    let n = match t.n {
        Some(v) => range("ttc.n", v, 1, max_n)? as usize,
        None => preset_n.min(cx.max_n),
    };
    let strategy = match t.strategy.as_deref() {
        None if preset.is_some_and(|p| p.auto.is_some()) => Strategy::Auto,
        None if n > 1 => Strategy::SelfConsistency,
        None | Some("single") => Strategy::Single,
        Some("self_consistency") => Strategy::SelfConsistency,
        Some("best_of_n") => Strategy::BestOfN,
        Some("auto") => Strategy::Auto,
        Some(s) => {
            return Err(bad(
                "ttc.strategy",
                format!(
                "`ttc.strategy` must be one of single, self_consistency, best_of_n, auto, given {s:?}"
            ),
            ))
        }
    };
    if strategy == Strategy::Single && n > 1 {
        return Err(bad(
            "ttc.n",
            format!("`ttc.n` must be 1 with strategy single (use self_consistency or best_of_n for several samples), given {n}"),
        ));
    }
    let auto = if strategy == Strategy::Auto {
        let base = preset
            .and_then(|p| p.auto)
            .map(|a| a.policy())
            .unwrap_or_default();
        let a = t.auto.clone().unwrap_or_default();
        let n_i = n as i64;
        let pick = |v: Option<i64>, d: usize, name: &str, lo: i64, hi: i64| {
            v.map_or(Ok(d), |v| {
                range(&format!("ttc.auto.{name}"), v, lo, hi).map(|v| v as usize)
            })
        };
        let share = |v: Option<f64>, d: f64, name: &str| -> Result<f64, BudgetError> {
            match v {
                None => Ok(d),
                Some(x) if x > 0.0 && x <= 1.0 => Ok(x),
                Some(x) => Err(bad(
                    &format!("ttc.auto.{name}"),
                    format!("`ttc.auto.{name}` must be in (0, 1], given {x}"),
                )),
            }
        };
        let first = pick(a.first, base.first.min(n), "first", 1, n_i)?;
        Some(AutoPolicy {
            first,
            wave: pick(a.wave, base.wave.min(n), "wave", 1, n_i)?,
            confidence: share(a.confidence, base.confidence, "confidence")?,
            hopeless_after: pick(
                a.hopeless_after,
                base.hopeless_after,
                "hopeless_after",
                1,
                64,
            )?,
            hopeless_share: share(a.hopeless_share, base.hopeless_share, "hopeless_share")?,
            max_thinking: match a.max_thinking {
                Some(v) => Some(range("ttc.auto.max_thinking", v, 1, i64::from(u32::MAX))? as u32),
                None => base.max_thinking,
            },
        })
    } else if t.auto.is_some() {
        return Err(bad(
            "ttc.auto",
            "`ttc.auto` sets the parameters of strategy auto; set `ttc.strategy` to \"auto\""
                .to_string(),
        ));
    } else {
        None
    };
    let min_samples = match (t.min_samples, auto) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "ttc.min_samples",
                "`ttc.min_samples` is decided by strategy auto; set `ttc.auto.first` / `ttc.auto.wave` instead".to_string(),
            ))
        }
        (None, Some(a)) => a.first,
        (Some(v), None) => range("ttc.min_samples", v, 1, n as i64)? as usize,
        (None, None) => preset.and_then(|p| p.min_samples).unwrap_or(n).min(n),
    };
    let extractor = Extractor::parse(t.extract.as_deref().unwrap_or("last_number"))
        .map_err(|e| bad("ttc.extract", e.replacen("`extract`", "`ttc.extract`", 1)))?;
    let equivalence =
        Equivalence::parse(t.equivalence.as_deref().unwrap_or("numeric")).map_err(|e| {
            bad(
                "ttc.equivalence",
                e.replacen("`equivalence`", "`ttc.equivalence`", 1),
            )
        })?;
    let default_agg = match (strategy, t.scorer.as_deref()) {
        (Strategy::BestOfN, Some("self_verify")) => "best_score",
        (Strategy::BestOfN, _) => "best_logprob",
        (Strategy::Auto, _) => "confidence_weighted",
        _ => "majority",
    };
    let aggregation =
        Aggregation::parse(t.aggregation.as_deref().unwrap_or(default_agg)).map_err(|e| {
            bad(
                "ttc.aggregation",
                e.replacen("`aggregation`", "`ttc.aggregation`", 1),
            )
        })?;
    let consensus = t.consensus.or(preset.and_then(|p| p.consensus));
    if let Some(c) = consensus {
        if !(c > 0.5 && c <= 1.0) {
            return Err(bad(
                "ttc.consensus",
                format!("`ttc.consensus` must be in (0.5, 1], given {c}"),
            ));
        }
    }
    let esc_window = match t.esc_window {
        Some(w) => Some(range("ttc.esc_window", w, 2, (n as i64).max(2))? as usize),
        None => preset.and_then(|p| p.esc_window).map(|w| w.min(n)),
    };
    let gate = match &t.confidence_gate {
        None => None,
        Some(g) => {
            let window = range(
                "ttc.confidence_gate.window",
                g.window.unwrap_or(16),
                1,
                MAX_GATE_WINDOW,
            )? as usize;
            let percentile = g.percentile.unwrap_or(10.0);
            if !(0.0..=100.0).contains(&percentile) {
                return Err(bad(
                    "ttc.confidence_gate.percentile",
                    format!(
                        "`ttc.confidence_gate.percentile` must be in [0, 100], given {percentile}"
                    ),
                ));
            }
            if min_samples >= n {
                return Err(bad(
                    "ttc.confidence_gate",
                    format!("`ttc.confidence_gate` needs `ttc.min_samples` below `ttc.n` (the first wave sets the threshold for later samples), given min_samples {min_samples} and n {n}"),
                ));
            }
            Some(Gate { window, percentile })
        }
    };
    let min_agreement = match &t.min_agreement {
        None => None,
        Some(m) => {
            let after = range(
                "ttc.min_agreement.after",
                m.after.unwrap_or((2 * min_samples).min(n) as i64),
                1,
                n as i64,
            )? as usize;
            let share = m.share.unwrap_or(0.5);
            if !(share > 0.0 && share <= 1.0) {
                return Err(bad(
                    "ttc.min_agreement.share",
                    format!("`ttc.min_agreement.share` must be in (0, 1], given {share}"),
                ));
            }
            if min_samples >= n {
                return Err(bad(
                    "ttc.min_agreement",
                    format!("`ttc.min_agreement` decides between waves and needs `ttc.min_samples` below `ttc.n`, given min_samples {min_samples} and n {n}"),
                ));
            }
            Some(MinAgreement { after, share })
        }
    };
    let certaindex = match &t.certaindex {
        None => None,
        Some(_) if !cx.has_reasoning => {
            return Err(bad(
                "ttc.certaindex",
                "`ttc.certaindex` probes the answer during thinking and needs a model that marks its thinking (<think>...</think>); this model has no reasoning markers (start the server with --reasoning-parser to set them)".to_string(),
            ))
        }
        Some(c) => Some(Certaindex {
            probe_every: range("ttc.certaindex.probe_every", c.probe_every.unwrap_or(32), 4, 4096)?
                as usize,
            agree: range("ttc.certaindex.agree", c.agree.unwrap_or(2), 1, 16)? as usize,
            max_tokens: range(
                "ttc.certaindex.max_tokens",
                c.max_tokens.unwrap_or(16),
                1,
                MAX_PROBE_TOKENS,
            )? as usize,
        }),
    };
    let scorer = match t.scorer.as_deref() {
        None => aggregation.needs_scores(),
        Some("self_verify") => true,
        Some("none") if aggregation.needs_scores() => {
            return Err(bad(
                "ttc.scorer",
                format!(
                    "`ttc.aggregation` {} needs verifier scores: `ttc.scorer` must be self_verify, given \"none\"",
                    aggregation.as_str()
                ),
            ))
        }
        Some("none") => false,
        Some(s) => {
            return Err(bad(
                "ttc.scorer",
                format!("`ttc.scorer` must be one of self_verify, none, given {s:?}"),
            ))
        }
    };
    if strategy == Strategy::BestOfN {
        if consensus.is_some() || esc_window.is_some() || gate.is_some() || min_agreement.is_some()
        {
            return Err(bad(
                "ttc.strategy",
                "`ttc.strategy` best_of_n scores every sample; consensus, esc_window, confidence_gate and min_agreement need self_consistency".to_string(),
            ));
        }
        if !matches!(
            aggregation,
            Aggregation::BestLogprob | Aggregation::BestScore
        ) {
            return Err(bad(
                "ttc.aggregation",
                format!(
                    "`ttc.aggregation` must be best_logprob or best_score with strategy best_of_n, given {:?}",
                    aggregation.as_str()
                ),
            ));
        }
    }
    let total_token_budget = t
        .total_token_budget
        .map(|v| range("ttc.total_token_budget", v, 1, i64::from(u32::MAX)))
        .transpose()?
        .map(|v| v as usize);
    let deadline = t
        .deadline_ms
        .map(|v| range("ttc.deadline_ms", v, 1, MAX_DEADLINE_MS))
        .transpose()?
        .map(|v| Duration::from_millis(v as u64));
    let granted_n = LoadRule::samples(level, n);
    grant.requested_n = n;
    grant.granted_n = granted_n;
    grant.requested_min_samples = min_samples;
    grant.granted_min_samples = min_samples.min(granted_n);
    Ok(Budget {
        think,
        ttc: Some(TtcPlan {
            strategy,
            n: granted_n,
            min_samples: min_samples.min(granted_n),
            extractor,
            equivalence,
            aggregation,
            consensus,
            esc_window,
            gate,
            min_agreement,
            total_token_budget,
            deadline,
            certaindex,
            scorer,
            auto,
            think_budget: requested_thinking.filter(|_| cx.has_reasoning),
            load_rule: cx.config.load,
            grant: grant.clone(),
        }),
        grant: Some(grant),
    })
}

#[cfg(test)]
mod tests;
