//! Every Prometheus metric of the server, in one place. Native names are `ponder_*` (vLLM's
//! names with our prefix; no `:`, which Prometheus reserves for recording rules and
//! `promtool check metrics` rejects). With `--metrics-compat vllm` the engine and request
//! metrics are also exported under vLLM's own names (`vllm:num_requests_waiting`, ...) with
//! its `model_name` label, so vLLM dashboards and LLM-aware routers (the Gateway API Inference
//! Extension's endpoint picker reads queue length and KV use) work unchanged.
//!
//! Two kinds of values:
//! - engine-owned state (running / waiting requests, KV usage, prefix cache, preemptions) is
//!   read from `EngineClient::stats()` at scrape time (`render`), so it is never stale;
//! - per-request observations (tokens, latencies, finish reasons, HTTP statuses) are recorded
//!   by the API as requests progress.
//!
//! Counters that mirror cumulative engine counters are advanced by the difference since the
//! last scrape, so they stay monotonic.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::budget::{EarlyStop, TtcReport};
use crate::engine::EngineStats;

pub const NUM_REQUESTS_RUNNING: &str = "ponder_num_requests_running";
pub const NUM_REQUESTS_WAITING: &str = "ponder_num_requests_waiting";
pub const KV_CACHE_USAGE_PERC: &str = "ponder_kv_cache_usage_perc";
pub const PREFIX_CACHE_QUERIES: &str = "ponder_prefix_cache_queries_total";
pub const PREFIX_CACHE_HITS: &str = "ponder_prefix_cache_hits_total";
pub const NUM_PREEMPTIONS: &str = "ponder_num_preemptions_total";
pub const PROMPT_TOKENS: &str = "ponder_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "ponder_generation_tokens_total";
pub const REQUEST_SUCCESS: &str = "ponder_request_success_total";
pub const TIME_TO_FIRST_TOKEN: &str = "ponder_time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY: &str = "ponder_inter_token_latency_seconds";
pub const E2E_REQUEST_LATENCY: &str = "ponder_e2e_request_latency_seconds";
pub const REQUEST_QUEUE_TIME: &str = "ponder_request_queue_time_seconds";
pub const HTTP_REQUESTS: &str = "ponder_http_requests_total";
pub const REASONING_TOKENS: &str = "ponder_reasoning_tokens_total";
pub const TTC_REQUESTS: &str = "ponder_ttc_requests_total";
pub const TTC_SAMPLES: &str = "ponder_ttc_samples_per_request";
pub const TTC_EARLY_STOPS: &str = "ponder_ttc_early_stops_total";
pub const TTC_TOKENS: &str = "ponder_ttc_tokens_total";
pub const TTC_TOKENS_SAVED: &str = "ponder_ttc_tokens_saved_total";
pub const TTC_VOTE_AGREEMENT: &str = "ponder_ttc_vote_agreement";
pub const TTC_PROBES: &str = "ponder_ttc_probes_total";
pub const TTC_CERTAINDEX_EXITS: &str = "ponder_ttc_certaindex_exits_total";
pub const TTC_VERIFIER_SCORE: &str = "ponder_ttc_verifier_score";
pub const TTC_DECISIONS: &str = "ponder_ttc_decisions_total";
pub const API_KEY_REQUESTS: &str = "ponder_api_key_requests_total";

/// Native name -> vLLM's names for it (`--metrics-compat vllm`). The KV gauge is exported as
/// both vLLM names (`gpu_cache_usage_perc` before vLLM v1, `kv_cache_usage_perc` since).
pub const VLLM_NAMES: &[(&str, &[&str])] = &[
    (NUM_REQUESTS_RUNNING, &["vllm:num_requests_running"]),
    (NUM_REQUESTS_WAITING, &["vllm:num_requests_waiting"]),
    (
        KV_CACHE_USAGE_PERC,
        &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    ),
    (PREFIX_CACHE_QUERIES, &["vllm:prefix_cache_queries_total"]),
    (PREFIX_CACHE_HITS, &["vllm:prefix_cache_hits_total"]),
    (NUM_PREEMPTIONS, &["vllm:num_preemptions_total"]),
    (PROMPT_TOKENS, &["vllm:prompt_tokens_total"]),
    (GENERATION_TOKENS, &["vllm:generation_tokens_total"]),
    (REQUEST_SUCCESS, &["vllm:request_success_total"]),
    (TIME_TO_FIRST_TOKEN, &["vllm:time_to_first_token_seconds"]),
    (
        INTER_TOKEN_LATENCY,
        &[
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
        ],
    ),
    (E2E_REQUEST_LATENCY, &["vllm:e2e_request_latency_seconds"]),
    (REQUEST_QUEUE_TIME, &["vllm:request_queue_time_seconds"]),
];

/// Latency buckets in seconds (vLLM's, trimmed).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const SAMPLE_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];
const SHARE_BUCKETS: &[f64] = &[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.999, 1.0];
const SCORE_BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0,
];

pub struct Metrics {
    registry: Registry,
    running: IntGauge,
    waiting: IntGauge,
    kv_usage: Gauge,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    preemptions: IntCounter,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    request_success: IntCounterVec,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    http_requests: IntCounterVec,
    pub reasoning_tokens: IntCounter,
    ttc_requests: IntCounterVec,
    ttc_samples: Histogram,
    ttc_early_stops: IntCounterVec,
    ttc_tokens: IntCounterVec,
    ttc_tokens_saved: IntCounter,
    ttc_vote_agreement: Histogram,
    ttc_probes: IntCounterVec,
    ttc_certaindex_exits: IntCounter,
    ttc_verifier_score: Histogram,
    ttc_decisions: IntCounterVec,
    api_key_requests: IntCounterVec,
    /// `--metrics-compat vllm`: the served model name for vLLM's `model_name` label.
    vllm_model_name: Option<String>,
}

fn hist(name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let m = Metrics {
            registry: Registry::new(),
            running: IntGauge::new(
                NUM_REQUESTS_RUNNING,
                "Requests with at least one sample being generated (not sequences).",
            )?,
            waiting: IntGauge::new(
                NUM_REQUESTS_WAITING,
                "Requests admitted to the engine with no sample running yet.",
            )?,
            kv_usage: Gauge::new(
                KV_CACHE_USAGE_PERC,
                "Fraction of KV cache blocks in use (1 = full).",
            )?,
            prefix_queries: IntCounter::new(
                PREFIX_CACHE_QUERIES,
                "Prompt tokens looked up in the prefix cache.",
            )?,
            prefix_hits: IntCounter::new(
                PREFIX_CACHE_HITS,
                "Prompt tokens found in the prefix cache.",
            )?,
            preemptions: IntCounter::new(
                NUM_PREEMPTIONS,
                "Sequences preempted (KV freed, recomputed later).",
            )?,
            prompt_tokens: IntCounter::new(PROMPT_TOKENS, "Prompt tokens of finished requests.")?,
            generation_tokens: IntCounter::new(
                GENERATION_TOKENS,
                "Generated tokens, all samples.",
            )?,
            request_success: IntCounterVec::new(
                Opts::new(
                    REQUEST_SUCCESS,
                    "Finished requests by the finish reason of their first choice.",
                ),
                &["finished_reason"],
            )?,
            time_to_first_token: hist(
                TIME_TO_FIRST_TOKEN,
                "Request arrival to first token.",
                TTFT_BUCKETS,
            )?,
            inter_token_latency: hist(
                INTER_TOKEN_LATENCY,
                "Time between output deltas.",
                ITL_BUCKETS,
            )?,
            e2e_request_latency: hist(
                E2E_REQUEST_LATENCY,
                "Request arrival to last event.",
                E2E_BUCKETS,
            )?,
            request_queue_time: hist(
                REQUEST_QUEUE_TIME,
                "Engine submit to first event.",
                E2E_BUCKETS,
            )?,
            http_requests: IntCounterVec::new(
                Opts::new(
                    HTTP_REQUESTS,
                    "HTTP requests by route template and status code.",
                ),
                &["route", "status"],
            )?,
            reasoning_tokens: IntCounter::new(
                REASONING_TOKENS,
                "Generated tokens spent thinking (inside <think>), all samples.",
            )?,
            ttc_requests: IntCounterVec::new(
                Opts::new(TTC_REQUESTS, "Aggregated requests by strategy."),
                &["strategy"],
            )?,
            ttc_samples: hist(
                TTC_SAMPLES,
                "Samples launched per aggregated request.",
                SAMPLE_BUCKETS,
            )?,
            ttc_early_stops: IntCounterVec::new(
                Opts::new(
                    TTC_EARLY_STOPS,
                    "Samples stopped early, by reason (requests ended between waves: once).",
                ),
                &["reason"],
            )?,
            ttc_tokens: IntCounterVec::new(
                Opts::new(
                    TTC_TOKENS,
                    "Tokens of aggregated requests by kind (thinking, answer, wasted in stopped samples).",
                ),
                &["kind"],
            )?,
            ttc_tokens_saved: IntCounter::new(
                TTC_TOKENS_SAVED,
                "Estimated tokens early stopping saved: samples not launched or stopped early, \
                 each at the mean length of the request's completed samples.",
            )?,
            ttc_vote_agreement: hist(
                TTC_VOTE_AGREEMENT,
                "Winning answer's share of the vote per aggregated request.",
                SHARE_BUCKETS,
            )?,
            ttc_probes: IntCounterVec::new(
                Opts::new(
                    TTC_PROBES,
                    "Probes of samples that returned, by kind (answer: certaindex, verify: \
                     self-verification).",
                ),
                &["kind"],
            )?,
            ttc_certaindex_exits: IntCounter::new(
                TTC_CERTAINDEX_EXITS,
                "Samples whose thinking certaindex ended early (their probed answers agreed).",
            )?,
            ttc_verifier_score: hist(
                TTC_VERIFIER_SCORE,
                "Verifier scores (P(yes) of the self-verification probe) of scored samples.",
                SCORE_BUCKETS,
            )?,
            ttc_decisions: IntCounterVec::new(
                Opts::new(
                    TTC_DECISIONS,
                    "Budget controller decisions by kind (launch, end_thinking, \
                     thinking_budget, stop_confident, finish).",
                ),
                &["kind"],
            )?,
            api_key_requests: IntCounterVec::new(
                Opts::new(
                    API_KEY_REQUESTS,
                    "Requests that presented each API key (label: the key's 1-based position \
                     in --api-key / --api-key-file order).",
                ),
                &["key"],
            )?,
            vllm_model_name: None,
        };
        let r = &m.registry;
        r.register(Box::new(m.api_key_requests.clone()))?;
        r.register(Box::new(m.running.clone()))?;
        r.register(Box::new(m.waiting.clone()))?;
        r.register(Box::new(m.kv_usage.clone()))?;
        r.register(Box::new(m.prefix_queries.clone()))?;
        r.register(Box::new(m.prefix_hits.clone()))?;
        r.register(Box::new(m.preemptions.clone()))?;
        r.register(Box::new(m.prompt_tokens.clone()))?;
        r.register(Box::new(m.generation_tokens.clone()))?;
        r.register(Box::new(m.request_success.clone()))?;
        r.register(Box::new(m.time_to_first_token.clone()))?;
        r.register(Box::new(m.inter_token_latency.clone()))?;
        r.register(Box::new(m.e2e_request_latency.clone()))?;
        r.register(Box::new(m.request_queue_time.clone()))?;
        r.register(Box::new(m.http_requests.clone()))?;
        r.register(Box::new(m.reasoning_tokens.clone()))?;
        r.register(Box::new(m.ttc_requests.clone()))?;
        r.register(Box::new(m.ttc_samples.clone()))?;
        r.register(Box::new(m.ttc_early_stops.clone()))?;
        r.register(Box::new(m.ttc_tokens.clone()))?;
        r.register(Box::new(m.ttc_tokens_saved.clone()))?;
        r.register(Box::new(m.ttc_vote_agreement.clone()))?;
        r.register(Box::new(m.ttc_probes.clone()))?;
        r.register(Box::new(m.ttc_certaindex_exits.clone()))?;
        r.register(Box::new(m.ttc_verifier_score.clone()))?;
        r.register(Box::new(m.ttc_decisions.clone()))?;
        Ok(m)
    }

    /// Also export vLLM's metric names, labelled `model_name="<served name>"`.
    pub fn with_vllm_names(mut self, model_name: &str) -> Self {
        self.vllm_model_name = Some(model_name.to_string());
        self
    }

    /// Advances the per-key request counters to the auth layer's counts.
    pub fn observe_key_usage(&self, usage: &[(usize, u64)]) {
        for &(key, n) in usage {
            let c = self.api_key_requests.with_label_values(&[&key.to_string()]);
            let now = c.get();
            if n > now {
                c.inc_by(n - now);
            }
        }
    }

    /// One finished request with the finish reason of its (first) choice.
    pub fn record_finish(&self, reason: &str) {
        self.request_success.with_label_values(&[reason]).inc();
    }

    /// One aggregated request's final account.
    pub fn record_ttc(&self, r: &TtcReport) {
        self.ttc_requests
            .with_label_values(&[r.strategy.as_str()])
            .inc();
        self.ttc_samples.observe(r.launched() as f64);
        for (reason, k) in r.stop_counts() {
            if k > 0 {
                self.ttc_early_stops
                    .with_label_values(&[reason.as_str()])
                    .inc_by(k as u64);
            }
        }
        // A low-agreement stop, and a deadline too near for another wave, end a request
        // between waves and stop no sample: count the request once.
        let stopped_none = |reason| r.samples.iter().all(|s| s.stopped != Some(reason));
        if let Some(reason @ (EarlyStop::LowAgreement | EarlyStop::Deadline)) = r.stop_reason {
            if stopped_none(reason) {
                self.ttc_early_stops
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
        }
        for (kind, k) in [
            ("thinking", r.tokens_thinking),
            ("answer", r.tokens_answer),
            ("wasted", r.tokens_wasted),
            ("probe", r.tokens_probe),
        ] {
            self.ttc_tokens.with_label_values(&[kind]).inc_by(k as u64);
        }
        self.ttc_tokens_saved
            .inc_by(r.tokens_saved_estimate() as u64);
        if r.answer.is_some() {
            self.ttc_vote_agreement.observe(r.winning_share);
        }
        for (kind, k) in [("answer", r.probes_answer), ("verify", r.probes_verify)] {
            self.ttc_probes.with_label_values(&[kind]).inc_by(k as u64);
        }
        self.ttc_certaindex_exits
            .inc_by(r.certaindex_exits() as u64);
        for s in r.samples.iter().filter_map(|s| s.score) {
            self.ttc_verifier_score.observe(s);
        }
        for d in &r.decisions {
            self.ttc_decisions.with_label_values(&[d.kind]).inc();
        }
    }

    /// One HTTP response: `route` is the route template (`/v1/models`) or `unmatched`.
    pub fn record_http(&self, route: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// Refreshes the engine-owned values from `stats` and renders the Prometheus text format.
    pub fn render(&self, stats: &EngineStats) -> Result<String, prometheus::Error> {
        self.running
            .set(i64::try_from(stats.requests_running).unwrap_or(i64::MAX));
        self.waiting
            .set(i64::try_from(stats.requests_waiting).unwrap_or(i64::MAX));
        self.kv_usage.set(stats.kv_cache_usage);
        advance_to(&self.prefix_queries, stats.prefix_cache_queries);
        advance_to(&self.prefix_hits, stats.prefix_cache_hits);
        advance_to(&self.preemptions, stats.num_preemptions);
        let mut families = self.registry.gather();
        if let Some(model) = &self.vllm_model_name {
            families.extend(vllm_families(&families, model));
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Copies of the mapped native families under vLLM's names, each sample labelled
/// `model_name`.
fn vllm_families(
    native: &[prometheus::proto::MetricFamily],
    model: &str,
) -> Vec<prometheus::proto::MetricFamily> {
    let mut out = Vec::new();
    for f in native {
        let Some((_, names)) = VLLM_NAMES.iter().find(|(n, _)| *n == f.name()) else {
            continue;
        };
        for name in names.iter() {
            let mut c = f.clone();
            c.set_name((*name).to_string());
            for m in c.mut_metric().iter_mut() {
                let mut l = prometheus::proto::LabelPair::default();
                l.set_name("model_name".to_string());
                l.set_value(model.to_string());
                let mut labels: Vec<_> = m.get_label().to_vec();
                labels.insert(0, l);
                m.set_label(labels);
            }
            out.push(c);
        }
    }
    out
}

/// Moves a counter up to the engine's cumulative `total` (never down).
fn advance_to(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_refreshes_engine_values_and_keeps_counters_monotonic() {
        let m = Metrics::new().unwrap();
        let stats = EngineStats {
            num_running: 6,
            num_waiting: 2,
            requests_running: 3,
            requests_waiting: 2,
            kv_cache_usage: 0.25,
            num_preemptions: 4,
            prefix_cache_queries: 100,
            prefix_cache_hits: 40,
        };
        m.record_http("/v1/models", 200);
        m.record_finish("stop");
        let text = m.render(&stats).unwrap();
        for line in [
            "ponder_num_requests_running 3",
            "ponder_num_requests_waiting 2",
            "ponder_kv_cache_usage_perc 0.25",
            "ponder_num_preemptions_total 4",
            "ponder_prefix_cache_queries_total 100",
            "ponder_prefix_cache_hits_total 40",
            "ponder_http_requests_total{route=\"/v1/models\",status=\"200\"} 1",
            "ponder_request_success_total{finished_reason=\"stop\"} 1",
            "# TYPE ponder_time_to_first_token_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // A lower cumulative value (engine restart) never moves a counter down.
        let text = m
            .render(&EngineStats {
                num_preemptions: 1,
                ..stats
            })
            .unwrap();
        assert!(text.lines().any(|l| l == "ponder_num_preemptions_total 4"));
        assert!(!text.contains("vllm:"));
    }

    #[test]
    fn early_stops_count_samples_and_between_wave_ends_once() {
        use crate::budget::{EarlyStop, Grant, SampleSummary, Strategy, TtcReport};
        let sample = |index: usize, stopped: Option<EarlyStop>| SampleSummary {
            index,
            answer: None,
            tokens: 3,
            reasoning_tokens: 0,
            mean_logprob: -0.1,
            stopped,
            score: None,
            probes: 0,
            probe_tokens: 0,
            probe_answers: Vec::new(),
            exit_at: None,
        };
        let report = |samples: Vec<SampleSummary>, stop_reason| TtcReport {
            strategy: Strategy::SelfConsistency,
            grant: Grant::default(),
            samples,
            stop_reason,
            votes: Vec::new(),
            answer: None,
            winning_share: 0.0,
            winner_sample: None,
            tokens_thinking: 0,
            tokens_answer: 0,
            tokens_wasted: 0,
            tokens_probe: 0,
            probes_answer: 0,
            probes_verify: 0,
            decisions: Vec::new(),
        };
        let m = Metrics::new().unwrap();
        // The deadline stopped two live samples: two.
        let d = Some(EarlyStop::Deadline);
        m.record_ttc(&report(
            vec![sample(0, None), sample(1, d), sample(2, d)],
            d,
        ));
        // Ended between waves (no wave fits before the deadline; a scattered vote): one each.
        m.record_ttc(&report(vec![sample(0, None)], d));
        let low = Some(EarlyStop::LowAgreement);
        m.record_ttc(&report(vec![sample(0, None), sample(1, None)], low));
        // Consensus stopped one sample: one, the request not counted again.
        let c = Some(EarlyStop::Consensus);
        m.record_ttc(&report(vec![sample(0, None), sample(1, c)], c));
        let text = m.render(&EngineStats::default()).unwrap();
        for (reason, k) in [("deadline", 3), ("low_agreement", 1), ("consensus", 1)] {
            let line = format!("{TTC_EARLY_STOPS}{{reason=\"{reason}\"}} {k}");
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }

    #[test]
    fn vllm_names_mirror_the_native_ones_with_model_name() {
        let m = Metrics::new().unwrap().with_vllm_names("smol");
        m.record_finish("length");
        m.observe_key_usage(&[(2, 5)]);
        m.observe_key_usage(&[(2, 7)]);
        let stats = EngineStats {
            requests_running: 3,
            requests_waiting: 2,
            kv_cache_usage: 0.25,
            ..EngineStats::default()
        };
        let text = m.render(&stats).unwrap();
        for line in [
            "ponder_num_requests_waiting 2",
            "vllm:num_requests_waiting{model_name=\"smol\"} 2",
            "vllm:num_requests_running{model_name=\"smol\"} 3",
            "vllm:kv_cache_usage_perc{model_name=\"smol\"} 0.25",
            "vllm:gpu_cache_usage_perc{model_name=\"smol\"} 0.25",
            "vllm:request_success_total{model_name=\"smol\",finished_reason=\"length\"} 1",
            "vllm:prompt_tokens_total{model_name=\"smol\"} 0",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            "vllm:e2e_request_latency_seconds_count{model_name=\"smol\"} 0",
            "ponder_api_key_requests_total{key=\"2\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // Only the mapped families are mirrored.
        assert!(!text.contains("vllm:ttc"));
    }
}
