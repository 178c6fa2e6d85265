//! Router tests of reasoning budgets and aggregated requests over a scripted engine that runs
//! a real budget controller: exact `ttc` reports, one winning choice, usage over all samples,
//! the SSE shape, load-aware grants, and the 400s of invalid budgets.

mod api_support;

use api_support::*;
use serde_json::{json, Value};

fn texts(t: &[&str]) -> Behavior {
    Behavior::Ttc(t.iter().map(|s| s.to_string()).collect())
}

const ANSWERS: &[&str] = &["The answer is 12.", "I get 13.", "12", "so 12"];

fn body(ttc: Value, stream: bool) -> String {
    json!({"model": "smol", "messages": [{"role": "user", "content": "7 + 5?"}],
        "seed": 1, "stream": stream, "ttc": ttc})
    .to_string()
}

/// One completed one-token sample of the report.
fn sample(index: usize, answer: &str, mean_logprob: f64) -> Value {
    json!({"index": index, "answer": answer, "tokens": 1, "reasoning_tokens": 0,
        "mean_logprob": mean_logprob, "stopped": null, "score": null, "probes": 0,
        "probe_tokens": 0, "probe_answers": [], "certaindex_exit_at": null})
}

fn expected_report() -> Value {
    json!({
        "strategy": "self_consistency",
        "samples_launched": 4, "samples_completed": 4, "samples_stopped": 0,
        "stop_reason": "window_agreement", "stop_reasons": {},
        "votes": {"12": 3.0, "13": 1.0}, "answer": "12", "winning_share": 0.75,
        "winner_sample": 0,
        "tokens": {"thinking": 0, "answer": 4, "wasted": 0, "probe": 0, "total": 4},
        "samples": [
            sample(0, "12", -0.1),
            sample(1, "13", -0.2),
            sample(2, "12", -0.3),
            sample(3, "12", -0.4),
        ],
        "decisions": [
            {"at_tokens": 0, "what": "launch 2", "why": "first wave: min_samples 2 of n 6"},
            {"at_tokens": 2, "what": "launch 2",
                "why": "next wave: 2 counted, none live; load level 0 allows 6 of 6"},
            {"at_tokens": 4, "what": "finish", "why": "stop rule window_agreement"}
        ],
        "requested": {"n": 6, "min_samples": 2, "thinking_token_budget": null, "reasoning_effort": null},
        "granted": {"n": 6, "min_samples": 2, "thinking_token_budget": null, "load_level": 0,
            "max_completion_tokens": 4096}
    })
}

#[tokio::test]
async fn self_consistency_returns_the_winner_and_the_report() {
    let engine = FakeEngine::new(texts(ANSWERS));
    let state = app(engine.clone());
    let ttc = json!({"n": 6, "min_samples": 2, "esc_window": 2});
    let (status, v) = call(&state, post("/v1/chat/completions", body(ttc, false))).await;
    assert_eq!(status, 200, "{v}");
    let req = engine.last_request();
    let plan = req.ttc.expect("aggregated");
    assert_eq!((req.n, plan.n, plan.min_samples), (6, 6, 2));
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "The answer is 12."},
            "logprobs": null, "finish_reason": "stop"}])
    );
    let prompt = chat_prompt_ids(&[("user", "7 + 5?")]).len();
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4,
            "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(v["ttc"], expected_report());
}

#[tokio::test]
async fn streaming_sends_the_winner_then_the_report() {
    let state = app(FakeEngine::new(texts(ANSWERS)));
    let ttc = json!({"n": 6, "min_samples": 2, "esc_window": 2});
    let resp = send(&state, post("/v1/chat/completions", body(ttc, true))).await;
    assert_eq!(resp.status(), 200);
    let text = body_text(resp).await;
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(frames.len(), 5, "{text}");
    let f: Vec<Value> = frames[..4]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert_eq!(
        f[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])
    );
    assert_eq!(
        f[1]["choices"],
        json!([{"index": 0, "delta": {"content": "The answer is 12."}, "logprobs": null, "finish_reason": null}])
    );
    assert_eq!(
        f[2]["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(f[3]["choices"], json!([]));
    assert_eq!(f[3]["ttc"], expected_report());
    assert_eq!(frames[4], "[DONE]");
}

#[tokio::test]
async fn consensus_stops_live_samples_and_counts_them_as_wasted() {
    let state = app(FakeEngine::new(texts(&["7", "7", "7", "8"])));
    let ttc = json!({"n": 4, "consensus": 0.75});
    let (status, v) = call(&state, post("/v1/chat/completions", body(ttc, false))).await;
    assert_eq!(status, 200, "{v}");
    let r = &v["ttc"];
    // 3 of 3 answered agree with one live sample left: 3 >= 0.75 * (3 + 1).
    assert_eq!(r["stop_reason"], "consensus");
    assert_eq!(r["stop_reasons"], json!({"consensus": 1}));
    assert_eq!(
        (r["samples_launched"].clone(), r["samples_stopped"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(r["samples"][3]["stopped"], "consensus");
    assert_eq!(
        r["tokens"],
        json!({"thinking": 0, "answer": 3, "wasted": 0, "probe": 0, "total": 3})
    );
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(r["answer"], "7");

    // The same account in the metrics.
    let text = body_text(send(&state, get("/metrics")).await).await;
    for line in [
        "ponder_ttc_requests_total{strategy=\"self_consistency\"} 1",
        "ponder_ttc_early_stops_total{reason=\"consensus\"} 1",
        "ponder_ttc_tokens_total{kind=\"answer\"} 3",
        "ponder_ttc_tokens_total{kind=\"wasted\"} 0",
        "ponder_ttc_samples_per_request_sum 4",
        "ponder_ttc_samples_per_request_count 1",
        "ponder_ttc_vote_agreement_sum 1",
        // The stopped sample had 0 of the completed samples' mean 1 token: 1 saved (not
        // 4 x 4096 allowed - 3 generated).
        "ponder_ttc_tokens_saved_total 1",
        "ponder_ttc_tokens_total{kind=\"probe\"} 0",
        // One launch, the finish.
        "ponder_ttc_decisions_total{kind=\"launch\"} 1",
        "ponder_ttc_decisions_total{kind=\"finish\"} 1",
        "ponder_reasoning_tokens_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}

#[tokio::test]
async fn low_agreement_ends_between_waves_and_is_counted_once() {
    let state = app(FakeEngine::new(texts(&["7", "8", "9", "7", "5", "6"])));
    let ttc = json!({"n": 6, "min_samples": 2, "min_agreement": {"after": 4, "share": 0.6}});
    let (status, v) = call(&state, post("/v1/chat/completions", body(ttc, false))).await;
    assert_eq!(status, 200, "{v}");
    let r = &v["ttc"];
    // After two waves "7" holds 2 of 4 = 0.5 < 0.6: the third wave never starts.
    assert_eq!(r["stop_reason"], "low_agreement");
    assert_eq!(r["stop_reasons"], json!({}));
    assert_eq!(
        (r["samples_launched"].clone(), r["samples_stopped"].clone()),
        (json!(4), json!(0))
    );
    assert_eq!(r["answer"], "7");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let text = body_text(send(&state, get("/metrics")).await).await;
    let line = "ponder_ttc_early_stops_total{reason=\"low_agreement\"} 1";
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in\n{text}"
    );
}

#[tokio::test]
async fn load_shrinks_samples_and_the_report_says_so() {
    let engine = FakeEngine::new(texts(ANSWERS));
    engine.stats.lock().unwrap().num_waiting = 16;
    let state = app(engine.clone());
    let ttc = json!({"n": 6, "min_samples": 2});
    let (status, v) = call(&state, post("/v1/chat/completions", body(ttc, false))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(engine.last_request().ttc.unwrap().n, 1);
    assert_eq!(v["ttc"]["requested"]["n"], 6);
    assert_eq!(v["ttc"]["granted"]["n"], 1);
    assert_eq!(v["ttc"]["granted"]["min_samples"], 1);
    assert_eq!(v["ttc"]["granted"]["load_level"], 2);
    assert_eq!(v["ttc"]["samples_launched"], 1);
}

#[tokio::test]
async fn effort_without_markers_reports_the_grant() {
    let state = app(FakeEngine::new(Behavior::Script));
    let b = json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"});
    let (status, v) = call(&state, post("/v1/chat/completions", b.to_string())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["ttc"],
        json!({"strategy": "single",
            "requested": {"n": 1, "min_samples": 1, "thinking_token_budget": 512, "reasoning_effort": "low"},
            "granted": {"n": 1, "min_samples": 1, "thinking_token_budget": null, "load_level": 0,
                "max_completion_tokens": 4096},
            "note": "the model has no reasoning markers, so thinking is not budgeted separately"})
    );
}

#[tokio::test]
async fn invalid_budgets_are_400_with_the_field() {
    let state = app(FakeEngine::new(Behavior::Script));
    let cases = [
        (
            json!({"ttc": {"n": 4, "consensus_threshold": 0.8}}),
            "`ttc.consensus_threshold` is not a known field; allowed: strategy, n, min_samples, extract, equivalence, aggregation, consensus, esc_window, confidence_gate, min_agreement, total_token_budget, deadline_ms, certaindex, scorer, auto",
            "ttc.consensus_threshold",
        ),
        (json!({"ttc": [1]}), "`ttc` must be an object, given [1]", "ttc"),
        (
            json!({"n": 2, "ttc": {"n": 4}}),
            "`n` must be 1 (or absent) when samples are aggregated (`ttc` or a reasoning_effort preset with several samples); set `ttc.n` instead, given 2",
            "n",
        ),
        (
            json!({"thinking_token_budget": 64}),
            "`thinking_token_budget` needs a model that marks its thinking (<think>...</think>); this model has no reasoning markers (start the server with --reasoning-parser to set them)",
            "thinking_token_budget",
        ),
        (
            json!({"ttc": {"n": 4, "confidence_gate": {"window": 8, "percentil": 10}}}),
            "`ttc.confidence_gate.percentil` is not a known field; allowed: window, percentile",
            "ttc.confidence_gate.percentil",
        ),
        (
            json!({"ttc": {"n": 4, "min_samples": 2, "min_agreement": {"after": 2, "min_share": 0.5}}}),
            "`ttc.min_agreement.min_share` is not a known field; allowed: after, share",
            "ttc.min_agreement.min_share",
        ),
        (
            json!({"ttc": {"n": 4, "min_samples": 2, "min_agreement": 0.5}}),
            "`ttc.min_agreement` must be an object {after, share}, given 0.5",
            "ttc.min_agreement",
        ),
        (
            json!({"ttc": {"extract": "regex:("}}),
            "",
            "ttc.extract",
        ),
    ];
    for (extra, message, param) in cases {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, v) = call(&state, post("/v1/chat/completions", b.to_string())).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        if !message.is_empty() {
            assert_eq!(v["error"]["message"], message);
        } else {
            assert!(
                v["error"]["message"].as_str().unwrap().contains("regex"),
                "{v}"
            );
        }
    }
}
