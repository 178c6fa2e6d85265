//! Thinking budgets and aggregated requests through the real engine loop:
//! - a tiny random-weight model whose chat template opens `<think>` (R1-style) shows that the
//!   budget forces `</think>` exactly at the budget and the sample then answers;
//! - the default model runs self-consistency waves: every launched sample ends once, tokens
//!   add up, stopped samples free their blocks, and the same seed gives the same report.

mod common;

use std::sync::Arc;

use common::{tiny_gguf, TINY};
use ponder::budget::{
    build, BudgetConfig, BudgetContext, EarlyStop, LoadSnapshot, RawBudget, RawCertaindex, RawTtc,
    TtcReport,
};
use ponder::engine::core::{EngineCore, Submission};
use ponder::engine::{
    cpu_core, ActBits, ActivationBits, EngineConfig, EngineEvent, GenerateRequest, RequestStream,
};
use ponder::model::gguf::Value;
use ponder::model::template::ChatMessage;
use ponder::model::{load_model, LoadedModel};
use ponder::reasoning::ThinkLimits;
use ponder::sample::{FinishReason, RawSamplingParams, SamplingParams};

/// R1-distill style: the generation prompt opens thinking.
const THINK_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

fn think_model(dir: &tempfile::TempDir) -> Arc<LoadedModel> {
    let mut b = tiny_gguf(&TINY, 7);
    b.kv(
        "tokenizer.chat_template",
        Value::String(THINK_TEMPLATE.into()),
    );
    let path = dir.path().join("think.gguf");
    b.write(&path);
    Arc::new(load_model(&path).unwrap())
}

/// 12-bit activations fixed: these tests are about the controller, not the load-time
/// precision measurement (tests/engine.rs, tests/golden_qwen.rs).
fn core(m: &Arc<LoadedModel>) -> EngineCore {
    let cfg = EngineConfig {
        activation_bits: ActivationBits::Fixed(ActBits::Twelve),
        ..EngineConfig::default()
    };
    cpu_core(m.clone(), &cfg).unwrap()
}

fn params(max_tokens: u32, temperature: f32, seed: u64) -> SamplingParams {
    RawSamplingParams {
        max_tokens,
        temperature,
        seed: Some(seed),
        ignore_eos: temperature == 0.0,
        ..Default::default()
    }
    .validate()
    .unwrap()
}

#[derive(Default, Debug)]
struct Sample {
    ids: Vec<u32>,
    text: String,
    reasoning: String,
    finished: Option<(FinishReason, usize, usize, Option<EarlyStop>)>,
}

/// Runs until idle; returns each sample's output and the report (if any).
fn run(core: &mut EngineCore, stream: &mut RequestStream) -> (Vec<Sample>, Option<TtcReport>) {
    let mut samples: Vec<Sample> = Vec::new();
    let mut report = None;
    let mut steps = 0;
    loop {
        let more = core.has_work();
        if more {
            core.step();
            steps += 1;
            assert!(steps < 20_000, "engine did not finish");
        }
        while let Some(ev) = stream.try_next() {
            let at = |s: &mut Vec<Sample>, i: usize| {
                if s.len() <= i {
                    s.resize_with(i + 1, Sample::default);
                }
            };
            match ev {
                EngineEvent::Delta {
                    sample,
                    token_ids,
                    text,
                    reasoning,
                    ..
                } => {
                    at(&mut samples, sample);
                    let s = &mut samples[sample];
                    s.ids.extend(token_ids);
                    s.text += &text;
                    s.reasoning += &reasoning;
                }
                EngineEvent::Finished {
                    sample,
                    reason,
                    completion_tokens,
                    reasoning_tokens,
                    early_stop,
                } => {
                    at(&mut samples, sample);
                    assert!(
                        samples[sample].finished.is_none(),
                        "sample {sample} ended twice"
                    );
                    samples[sample].finished =
                        Some((reason, completion_tokens, reasoning_tokens, early_stop));
                }
                EngineEvent::Report(r) => {
                    assert!(report.is_none(), "two reports");
                    report = Some(*r);
                }
                EngineEvent::Progress(p) => {
                    assert!(report.is_none(), "progress after the report");
                    assert!(p.completed + p.stopped <= p.launched, "{p:?}");
                }
                EngineEvent::Error(e) => panic!("engine error: {e}"),
            }
        }
        if !more {
            break;
        }
    }
    assert_eq!(core.scheduler().kv().num_used_blocks(), 0, "blocks leaked");
    (samples, report)
}

fn submit(core: &mut EngineCore, req: GenerateRequest) -> RequestStream {
    let (stream, tx, cancelled) = RequestStream::channel();
    core.add(Submission { req, tx, cancelled });
    stream
}

fn chat_ids(m: &LoadedModel, q: &str) -> (Vec<u32>, String) {
    let text = m
        .template
        .render(&[ChatMessage::new("user", q)], true)
        .unwrap();
    (m.tokenizer.encode(&text, false).unwrap(), text)
}

#[test]
fn thinking_budget_forces_the_end_marker_exactly_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let m = think_model(&dir);
    let fmt = m.reasoning.clone().expect("the template mentions <think>");
    let (ids, text) = chat_ids(&m, "Think about it.");
    assert!(fmt.starts_in_thinking(&text));
    let marker = fmt.force_end_ids.len();
    assert!(marker >= 1);

    // Free run: the random model never closes thinking by itself in 24 tokens.
    let mut c = core(&m);
    let mut req = GenerateRequest::new(ids.clone(), 1, params(24, 0.0, 1));
    req.starts_in_thinking = true;
    let mut s = submit(&mut c, req.clone());
    let (free, _) = run(&mut c, &mut s);
    assert_eq!(
        free[0].finished.unwrap().2,
        24,
        "all 24 tokens are thinking"
    );
    assert_eq!(free[0].text, "");

    let budget = 10;
    req.think = ThinkLimits {
        budget: Some(budget),
        min_thinking: 0,
    };
    let mut s = submit(&mut c, req);
    let (out, _) = run(&mut c, &mut s);
    let o = &out[0];
    let b = budget as usize;
    let free_part = b - marker;
    // Same tokens as the free run up to the budget, then the forced marker and "\n\n".
    assert_eq!(o.ids[..free_part], free[0].ids[..free_part]);
    assert_eq!(o.ids[free_part..b], fmt.force_end_ids[..]);
    let after = b + fmt.after_end_ids.len();
    assert_eq!(o.ids[b..after], fmt.after_end_ids[..]);
    let (reason, tokens, reasoning_tokens, early) = o.finished.unwrap();
    assert_eq!(
        (reason, tokens, reasoning_tokens, early),
        (FinishReason::Length, 24, b, None)
    );
    // Reasoning is the text before `</think>`; content what follows, leading space dropped.
    let t = &m.tokenizer;
    let thought = t.decode(&o.ids[..b], true);
    assert_eq!(o.reasoning, thought.strip_suffix("</think>").unwrap());
    assert_eq!(o.text, t.decode(&o.ids[b..], true).trim_start());
    assert!(!o.text.is_empty());
}

fn plan(m: &LoadedModel, ttc: RawTtc, max_tokens: u32) -> ponder::budget::TtcPlan {
    let cfg = BudgetConfig::default();
    let cx = BudgetContext {
        config: &cfg,
        load: LoadSnapshot::default(),
        has_reasoning: m.reasoning.is_some(),
        max_n: 16,
        max_tokens,
        n_given: None,
    };
    let raw = RawBudget {
        ttc: Some(ttc),
        ..RawBudget::default()
    };
    build(&raw, &cx).unwrap().ttc.unwrap()
}

fn ttc_run(m: &Arc<LoadedModel>, ttc: RawTtc, seed: u64) -> (Vec<Sample>, TtcReport) {
    let (ids, _) = chat_ids(m, "What is 7 + 5? End with 'The answer is N.'");
    let mut req = GenerateRequest::new(ids, 1, params(48, 0.8, seed));
    req.ttc = Some(plan(m, ttc, 48));
    let mut c = core(m);
    let mut s = submit(&mut c, req);
    let (samples, report) = run(&mut c, &mut s);
    (
        samples,
        report.expect("aggregated requests end with a report"),
    )
}

#[test]
fn self_consistency_waves_account_for_every_token_and_are_reproducible() {
    let m = Arc::new(load_model(&common::default_model()).unwrap());
    let ttc = RawTtc {
        n: Some(6),
        min_samples: Some(2),
        esc_window: Some(2),
        ..RawTtc::default()
    };
    let (samples, r) = ttc_run(&m, ttc.clone(), 11);
    assert_eq!(samples.len(), r.launched());
    assert!(r.launched() >= 2 && r.launched() <= 6 && r.launched() % 2 == 0);
    let mut total = 0;
    for (i, s) in samples.iter().enumerate() {
        let (reason, tokens, _, early) = s.finished.expect("every launched sample ends");
        assert_eq!(tokens, s.ids.len(), "sample {i}");
        assert_eq!(early.is_some(), reason == FinishReason::Abort);
        assert_eq!(r.samples[i].tokens, tokens);
        assert_eq!(r.samples[i].stopped, early);
        total += tokens;
    }
    assert_eq!(r.total_tokens(), total);
    // The winner's text carries the winning answer.
    let w = r.winner_sample.unwrap();
    if let Some(a) = &r.answer {
        assert!(
            samples[w].text.contains(a.as_str()),
            "{:?} in {:?}",
            a,
            samples[w].text
        );
    }
    // Early stop on agreement, or all 6 ran.
    assert!(r.stop_reason == Some(EarlyStop::WindowAgreement) || r.launched() == 6);
    let (again, r2) = ttc_run(&m, ttc, 11);
    assert_eq!(r, r2, "same seed, same report");
    assert_eq!(samples.len(), again.len());
}

#[test]
fn token_budget_and_deadline_stop_running_samples() {
    let m = Arc::new(load_model(&common::default_model()).unwrap());
    let (samples, r) = ttc_run(
        &m,
        RawTtc {
            n: Some(4),
            total_token_budget: Some(10),
            ..RawTtc::default()
        },
        3,
    );
    assert_eq!(r.stop_reason, Some(EarlyStop::TokenBudget));
    assert_eq!(r.total_tokens(), 10);
    assert!(samples
        .iter()
        .any(|s| s.finished.unwrap().3 == Some(EarlyStop::TokenBudget)));

    let (_, r) = ttc_run(
        &m,
        RawTtc {
            n: Some(4),
            deadline_ms: Some(1),
            ..RawTtc::default()
        },
        3,
    );
    assert_eq!(r.stop_reason, Some(EarlyStop::Deadline));
    assert_eq!(r.stopped(), r.launched());
}

/// Runs one aggregated request on the thinking model; the samples start in thinking.
fn think_run(m: &Arc<LoadedModel>, ttc: RawTtc, seed: u64) -> (Vec<Sample>, TtcReport) {
    let (ids, _) = chat_ids(m, "Think about it.");
    let mut req = GenerateRequest::new(ids, 1, params(40, 0.9, seed));
    req.starts_in_thinking = true;
    req.ttc = Some(plan(m, ttc, 40));
    let mut c = core(m);
    let mut s = submit(&mut c, req);
    let (samples, report) = run(&mut c, &mut s);
    let report = report.unwrap_or_else(|| panic!("no report; samples {samples:?}"));
    (samples, report)
}

/// Probes run on forks of the samples' KV, batched with them: a probed sample's tokens are
/// exactly its tokens unprobed, every probe's blocks are freed (`run` checks the pool is
/// empty), and the report counts the probes and their tokens apart.
#[test]
fn probes_leave_the_probed_samples_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let m = think_model(&dir);
    let base = RawTtc {
        n: Some(2),
        extract: Some("final_line".into()),
        equivalence: Some("exact".into()),
        ..RawTtc::default()
    };
    let (plain, r0) = think_run(&m, base.clone(), 5);
    let probed = RawTtc {
        // agree 16: never agrees within 40 tokens, so nothing is cut short.
        certaindex: Some(RawCertaindex {
            probe_every: Some(8),
            agree: Some(16),
            max_tokens: Some(6),
        }),
        scorer: Some("self_verify".into()),
        ..base
    };
    let (with, r) = think_run(&m, probed, 5);
    assert_eq!(plain.len(), 2);
    for i in 0..2 {
        assert_eq!(with[i].ids, plain[i].ids, "sample {i}");
        assert_eq!(with[i].finished, plain[i].finished, "sample {i}");
    }
    assert_eq!(r0.tokens_probe, 0);
    for s in &r.samples {
        // 40 thinking tokens: answer probes at 8, 16, 24, 32 (one at a time), then one
        // verification; every probe that ran returned.
        assert!(s.probes >= 2, "{s:?}");
        assert!(s.score.is_some_and(|v| (0.0..=1.0).contains(&v)), "{s:?}");
        assert_eq!(s.exit_at, None);
    }
    let per_sample: usize = r.samples.iter().map(|s| s.probe_tokens).sum();
    assert_eq!(r.tokens_probe, per_sample);
    assert!(r.tokens_probe > 0);
    assert_eq!(r.sample_tokens(), r0.sample_tokens());
}

/// A certaindex exit forces the end of thinking right after the probe that agreed: the
/// sample's tokens equal the unprobed run's up to the exit, then the end marker follows.
#[test]
fn certaindex_exit_forces_the_end_of_thinking() {
    let dir = tempfile::tempdir().unwrap();
    let m = think_model(&dir);
    let fmt = m.reasoning.clone().unwrap();
    let base = RawTtc {
        strategy: Some("single".into()),
        // Any non-space character is "an answer", so one probe decides (agree 1).
        extract: Some(r"regex:(\S)".into()),
        equivalence: Some("exact".into()),
        ..RawTtc::default()
    };
    let (plain, _) = think_run(&m, base.clone(), 9);
    let ci = RawTtc {
        certaindex: Some(RawCertaindex {
            probe_every: Some(8),
            agree: Some(1),
            max_tokens: Some(4),
        }),
        ..base
    };
    let (with, r) = think_run(&m, ci, 9);
    let s = &r.samples[0];
    let exit = s.exit_at.expect("the first probe's answer ends thinking");
    assert!(exit >= 8, "exit at {exit}");
    let marker = fmt.force_end_ids.len();
    assert_eq!(with[0].ids[..exit], plain[0].ids[..exit]);
    assert_eq!(with[0].ids[exit..exit + marker], fmt.force_end_ids[..]);
    assert_eq!(
        with[0].finished.unwrap().2,
        exit + marker,
        "reasoning tokens"
    );
    assert_eq!(r.certaindex_exits(), 1);
    assert!(r
        .decisions
        .iter()
        .any(|d| d.what.starts_with("end thinking")));
}
