//! Server-side budget configuration: `reasoning_effort` presets and the load rule that
//! shrinks budgets when the server is busy.
//!
//! Load rule (documented in docs/architecture.md and reported per request as `granted`):
//! ```text
//!  level 2  if waiting >= 2 * queue_high  or  kv_usage >= kv_critical
//!  level 1  if waiting >=     queue_high  or  kv_usage >= kv_high
//!  level 0  otherwise
//!  level 1: samples n -> ceil(n / 2) (first wave clamped to it), thinking budget -> budget / 2
//!  level 2: samples n -> 1,                                       thinking budget -> budget / 4
//! ```
//! Plain `n` (independent OpenAI choices) is never shrunk: only aggregated samples are.

use serde::Deserialize;

use super::strategy::AutoPolicy;

/// `reasoning_effort` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effort {
    None,
    Low,
    Medium,
    High,
    Auto,
}

impl Effort {
    pub const ALL: [Effort; 5] = [
        Effort::None,
        Effort::Low,
        Effort::Medium,
        Effort::High,
        Effort::Auto,
    ];

    pub fn parse(s: &str) -> Option<Effort> {
        Effort::ALL.into_iter().find(|e| e.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effort::None => "none",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::Auto => "auto",
        }
    }
}

/// What one effort level asks for; every field may be overridden by the request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Thinking tokens per sample (clamped to 3/4 of the sample's token limit).
    pub thinking_token_budget: Option<u32>,
    /// Most samples; > 1 makes the request a self-consistency vote.
    #[serde(default = "one")]
    pub n: usize,
    /// First wave; later waves run only while the stop rules are not met.
    pub min_samples: Option<usize>,
    /// ESC window (stop once this many consecutive completed samples agree).
    pub esc_window: Option<usize>,
    /// Stop once the leading answer holds this share of the votes.
    pub consensus: Option<f64>,
    /// `auto` (the strategy of the `auto` level): the controller decides the samples and
    /// their thinking from the answers (see `AutoPolicy`); these are its parameters.
    #[serde(default)]
    pub auto: Option<AutoPreset>,
}

/// `AutoPolicy` parameters in a preset file (every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPreset {
    pub first: Option<usize>,
    pub wave: Option<usize>,
    pub confidence: Option<f64>,
    pub hopeless_after: Option<usize>,
    pub hopeless_share: Option<f64>,
    pub max_thinking: Option<u32>,
}

impl AutoPreset {
    pub fn policy(&self) -> AutoPolicy {
        let d = AutoPolicy::default();
        AutoPolicy {
            first: self.first.unwrap_or(d.first),
            wave: self.wave.unwrap_or(d.wave),
            confidence: self.confidence.unwrap_or(d.confidence),
            hopeless_after: self.hopeless_after.unwrap_or(d.hopeless_after),
            hopeless_share: self.hopeless_share.unwrap_or(d.hopeless_share),
            max_thinking: self.max_thinking.or(d.max_thinking),
        }
    }
}

fn one() -> usize {
    1
}

/// Queue and KV levels at which budgets shrink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadRule {
    pub queue_high: usize,
    pub kv_high: f64,
    pub kv_critical: f64,
}

impl Default for LoadRule {
    fn default() -> Self {
        LoadRule {
            queue_high: 8,
            kv_high: 0.85,
            kv_critical: 0.95,
        }
    }
}

/// The engine's load when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSnapshot {
    pub num_waiting: usize,
    /// 0..=1
    pub kv_usage: f64,
}

impl LoadRule {
    pub fn level(&self, load: &LoadSnapshot) -> u8 {
        if load.num_waiting >= 2 * self.queue_high || load.kv_usage >= self.kv_critical {
            2
        } else if load.num_waiting >= self.queue_high || load.kv_usage >= self.kv_high {
            1
        } else {
            0
        }
    }

    /// Samples granted at `level`.
    pub fn samples(level: u8, n: usize) -> usize {
        match level {
            0 => n,
            1 => n.div_ceil(2),
            _ => 1,
        }
    }

    /// Thinking budget granted at `level`.
    pub fn thinking(level: u8, budget: u32) -> u32 {
        match level {
            0 => budget,
            1 => budget / 2,
            _ => budget / 4,
        }
    }
}

/// The budget sub-config (validated at boot).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Indexed like `Effort::ALL`.
    pub presets: [Preset; 5],
    pub load: LoadRule,
}

impl Default for BudgetConfig {
    /// none: no thinking; low/medium: 512/2048 thinking tokens, one sample; high: 8192 and a
    /// 4-sample vote; auto: strategy auto with up to 8 samples starting at 2,048 thinking
    /// tokens (up to 8,192 for later waves whose predecessors hit the budget): compute
    /// follows the difficulty the answers reveal.
    fn default() -> Self {
        let p = |t: u32, n: usize, min: Option<usize>, esc: Option<usize>| Preset {
            thinking_token_budget: Some(t),
            n,
            min_samples: min,
            esc_window: esc,
            consensus: None,
            auto: None,
        };
        let auto = Preset {
            auto: Some(AutoPreset {
                first: None,
                wave: None,
                confidence: None,
                hopeless_after: None,
                hopeless_share: None,
                max_thinking: Some(8192),
            }),
            ..p(2048, 8, None, None)
        };
        BudgetConfig {
            presets: [
                p(0, 1, None, None),
                p(512, 1, None, None),
                p(2048, 1, None, None),
                p(8192, 4, None, None),
                auto,
            ],
            load: LoadRule::default(),
        }
    }
}

impl BudgetConfig {
    pub fn preset(&self, e: Effort) -> &Preset {
        let i = Effort::ALL.iter().position(|&x| x == e).expect("listed");
        &self.presets[i]
    }

    /// Reads presets from a JSON object `{"low": {...}, ...}`; levels not named keep their
    /// defaults. Errors name the level and field.
    pub fn with_presets_json(mut self, json: &str) -> Result<Self, String> {
        let map: std::collections::BTreeMap<String, Preset> =
            serde_json::from_str(json).map_err(|e| format!("effort presets: {e}"))?;
        for (k, p) in map {
            let e = Effort::parse(&k).ok_or_else(|| {
                format!("effort presets: unknown level `{k}` (none, low, medium, high, auto)")
            })?;
            if p.n == 0 || p.min_samples.is_some_and(|m| m == 0 || m > p.n) {
                return Err(format!(
                    "effort presets: `{k}` needs n >= 1 and 1 <= min_samples <= n"
                ));
            }
            let i = Effort::ALL.iter().position(|&x| x == e).expect("listed");
            self.presets[i] = p;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_levels_and_shrinking() {
        let r = LoadRule::default();
        let at = |w, kv| {
            r.level(&LoadSnapshot {
                num_waiting: w,
                kv_usage: kv,
            })
        };
        assert_eq!(at(0, 0.0), 0);
        assert_eq!(at(8, 0.0), 1);
        assert_eq!(at(0, 0.85), 1);
        assert_eq!(at(16, 0.0), 2);
        assert_eq!(at(3, 0.96), 2);
        assert_eq!([0, 1, 2].map(|l| LoadRule::samples(l, 7)), [7, 4, 1]);
        assert_eq!(
            [0, 1, 2].map(|l| LoadRule::thinking(l, 1000)),
            [1000, 500, 250]
        );
    }

    #[test]
    fn presets_from_json() {
        let c = BudgetConfig::default()
            .with_presets_json(
                r#"{"low": {"thinking_token_budget": 64, "n": 3, "min_samples": 1}}"#,
            )
            .unwrap();
        assert_eq!(c.preset(Effort::Low).n, 3);
        assert_eq!(c.preset(Effort::Low).thinking_token_budget, Some(64));
        assert_eq!(c.preset(Effort::High).n, 4);
        assert_eq!(
            BudgetConfig::default()
                .with_presets_json(r#"{"extreme": {"n": 2}}"#)
                .unwrap_err(),
            "effort presets: unknown level `extreme` (none, low, medium, high, auto)"
        );
        assert_eq!(
            BudgetConfig::default()
                .with_presets_json(r#"{"low": {"n": 2, "min_samples": 3}}"#)
                .unwrap_err(),
            "effort presets: `low` needs n >= 1 and 1 <= min_samples <= n"
        );
    }
}
