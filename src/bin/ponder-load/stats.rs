//! Per-request outcomes and their summary per phase: counts by class, TTFT and latency
//! percentiles (nearest rank), output tokens per second.

use std::fmt::Write as _;

/// The load test's phases, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Closed loop at a fixed concurrency: measures capacity (requests/s).
    Calibrate,
    /// Open loop (Poisson arrivals) just under capacity.
    Steady,
    /// Open loop at `--burst-factor` x the steady rate.
    Burst,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Calibrate, Phase::Steady, Phase::Burst];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Calibrate => "calibrate",
            Phase::Steady => "steady",
            Phase::Burst => "burst",
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub phase: Phase,
    /// HTTP status; 0 when no response head arrived (connection error or timeout).
    pub status: u16,
    /// `Retry-After` parsed as whole seconds.
    pub retry_after: Option<u64>,
    /// 200 and the body completed: `data: [DONE]` for streams, a parsed completion otherwise.
    pub complete: bool,
    /// Seconds from send to the first generated text (streams) or to the full body.
    pub ttft: Option<f64>,
    /// Seconds from send to the end of the response.
    pub latency: f64,
    pub output_tokens: u64,
    pub error: Option<String>,
}

/// The three classes of the "no request lost" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ok,
    /// 429 or 503 with a valid `Retry-After`: refused, and told when to come back.
    Refused,
    Lost,
}

impl Outcome {
    pub fn class(&self) -> Class {
        match self.status {
            200 if self.complete && self.error.is_none() => Class::Ok,
            429 | 503 if self.retry_after.is_some() => Class::Refused,
            _ => Class::Lost,
        }
    }
}

/// Nearest-rank percentile of sorted `v` (`p` in [0, 100]); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub requests: usize,
    pub ok: usize,
    pub refused: usize,
    pub lost: usize,
    pub ttft_p50: f64,
    pub ttft_p99: f64,
    pub latency_p50: f64,
    pub latency_p99: f64,
    pub output_tokens: u64,
    /// Seconds the phase's arrivals spanned (its load window).
    pub window: f64,
}

impl Summary {
    pub fn of(outcomes: &[&Outcome], window: f64) -> Summary {
        let ok: Vec<&&Outcome> = outcomes.iter().filter(|o| o.class() == Class::Ok).collect();
        let mut ttft: Vec<f64> = ok.iter().filter_map(|o| o.ttft).collect();
        let mut lat: Vec<f64> = ok.iter().map(|o| o.latency).collect();
        ttft.sort_by(f64::total_cmp);
        lat.sort_by(f64::total_cmp);
        Summary {
            requests: outcomes.len(),
            ok: ok.len(),
            refused: outcomes
                .iter()
                .filter(|o| o.class() == Class::Refused)
                .count(),
            lost: outcomes.iter().filter(|o| o.class() == Class::Lost).count(),
            ttft_p50: percentile(&ttft, 50.0),
            ttft_p99: percentile(&ttft, 99.0),
            latency_p50: percentile(&lat, 50.0),
            latency_p99: percentile(&lat, 99.0),
            output_tokens: ok.iter().map(|o| o.output_tokens).sum(),
            window,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let ms = |s: f64| {
            if s.is_finite() {
                serde_json::json!((s * 1e4).round() / 10.0)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({
            "requests": self.requests, "ok": self.ok, "refused_with_retry_after": self.refused,
            "lost": self.lost, "ttft_ms_p50": ms(self.ttft_p50), "ttft_ms_p99": ms(self.ttft_p99),
            "latency_ms_p50": ms(self.latency_p50), "latency_ms_p99": ms(self.latency_p99),
            "output_tokens": self.output_tokens, "window_s": (self.window * 10.0).round() / 10.0,
        })
    }
}

/// A markdown table, one row per phase plus the total.
pub fn table(rows: &[(&str, Summary)]) -> String {
    let mut s = String::from(
        "| phase | window s | requests | ok | 429/503 + Retry-After | lost | TTFT p50 ms | TTFT p99 ms | latency p50 ms | latency p99 ms | output tok/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, m) in rows {
        let tps = if m.window > 0.0 {
            m.output_tokens as f64 / m.window
        } else {
            f64::NAN
        };
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            m.window,
            m.requests,
            m.ok,
            m.refused,
            m.lost,
            m.ttft_p50 * 1e3,
            m.ttft_p99 * 1e3,
            m.latency_p50 * 1e3,
            m.latency_p99 * 1e3,
            tps
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(status: u16, retry: Option<u64>, complete: bool) -> Outcome {
        Outcome {
            phase: Phase::Steady,
            status,
            retry_after: retry,
            complete,
            ttft: Some(0.1),
            latency: 1.0,
            output_tokens: 4,
            error: None,
        }
    }

    #[test]
    fn classes() {
        assert_eq!(o(200, None, true).class(), Class::Ok);
        assert_eq!(o(200, None, false).class(), Class::Lost);
        assert_eq!(o(429, Some(1), false).class(), Class::Refused);
        assert_eq!(o(503, Some(1), false).class(), Class::Refused);
        assert_eq!(o(429, None, false).class(), Class::Lost);
        assert_eq!(o(500, None, false).class(), Class::Lost);
        assert_eq!(o(0, None, false).class(), Class::Lost);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
