//! Scripted-event tests of the controller: exact actions, votes, stop reasons and budgets.

use std::time::Duration;

use super::*;
use crate::aggregate::{Aggregation, Equivalence, Extractor};
use crate::budget::plan::{Gate, MinAgreement};
use crate::budget::report::Grant;
use crate::budget::strategy::Strategy;

mod auto;

fn plan(n: usize, min_samples: usize) -> TtcPlan {
    TtcPlan {
        strategy: Strategy::SelfConsistency,
        n,
        min_samples,
        extractor: Extractor::parse("last_number").unwrap(),
        equivalence: Equivalence::parse("numeric").unwrap(),
        aggregation: Aggregation::parse("majority").unwrap(),
        consensus: None,
        esc_window: None,
        gate: None,
        min_agreement: None,
        total_token_budget: None,
        deadline: None,
        certaindex: None,
        scorer: false,
        auto: None,
        think_budget: None,
        load_rule: crate::budget::LoadRule::default(),
        grant: Grant {
            requested_n: n,
            granted_n: n,
            ..Grant::default()
        },
    }
}

fn launch(first: usize, count: usize) -> Action {
    Action::Launch {
        first,
        count,
        thinking: None,
        urgent: false,
    }
}

fn stop(sample: usize, reason: EarlyStop) -> Action {
    Action::Stop { sample, reason }
}

/// `k` tokens of logprob `lp` for `sample`; asserts they trigger nothing.
fn tokens(c: &mut Controller, sample: usize, k: usize, lp: f32) {
    for _ in 0..k {
        assert_eq!(c.on_token(sample, Tok::drawn(lp)), vec![]);
    }
}

#[test]
fn fixed_n_majority_runs_every_sample_and_votes() {
    let mut c = Controller::new(plan(4, 4));
    assert_eq!(c.start(), vec![launch(0, 4)]);
    tokens(&mut c, 0, 3, -0.5);
    tokens(&mut c, 1, 2, -0.1);
    tokens(&mut c, 2, 4, -0.2);
    tokens(&mut c, 3, 1, -0.3);
    assert_eq!(c.on_finished(0, "So 5 + 7 = 12.", 0), vec![]);
    assert_eq!(c.on_finished(1, "The answer is 12.0", 0), vec![]);
    assert_eq!(c.on_finished(2, "I think 13", 0), vec![]);
    assert_eq!(c.on_finished(3, "no idea", 0), vec![Action::Finish]);
    assert!(c.is_finished());
    assert_eq!(c.on_token(0, Tok::drawn(-1.0)), vec![]);
    let r = c.report();
    assert_eq!(
        r.votes,
        vec![("12".to_string(), 2.0), ("13".to_string(), 1.0)]
    );
    assert_eq!(r.answer.as_deref(), Some("12"));
    assert!((r.winning_share - 2.0 / 3.0).abs() < 1e-12);
    // Of the two "12" samples, sample 1 has the higher mean logprob.
    assert_eq!(r.winner_sample, Some(1));
    assert_eq!((r.launched(), r.completed(), r.stopped()), (4, 4, 0));
    assert_eq!(r.stop_reason, None);
    assert_eq!(
        (r.tokens_thinking, r.tokens_answer, r.tokens_wasted),
        (0, 10, 0)
    );
    assert_eq!(r.samples[3].answer, None);
}

#[test]
fn esc_window_stops_launching_waves_once_the_last_answers_agree() {
    let mut p = plan(8, 2);
    p.esc_window = Some(2);
    let mut c = Controller::new(p);
    assert_eq!(c.start(), vec![launch(0, 2)]);
    tokens(&mut c, 0, 2, -0.1);
    tokens(&mut c, 1, 2, -0.1);
    assert_eq!(c.on_finished(0, "12", 0), vec![]);
    assert_eq!(c.on_finished(1, "13", 0), vec![launch(2, 2)]);
    tokens(&mut c, 2, 2, -0.1);
    tokens(&mut c, 3, 2, -0.1);
    assert_eq!(c.on_finished(2, "12", 0), vec![]);
    assert_eq!(c.on_finished(3, "12", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.stop_reason, Some(EarlyStop::WindowAgreement));
    assert_eq!((r.launched(), r.stopped()), (4, 0));
    assert_eq!(r.answer.as_deref(), Some("12"));
    assert_eq!(r.winning_share, 0.75);
}

#[test]
fn esc_agreement_stops_the_live_rest_of_a_wave() {
    let mut p = plan(8, 4);
    p.esc_window = Some(2);
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 1, -0.1);
    tokens(&mut c, 1, 1, -0.1);
    tokens(&mut c, 2, 5, -0.1);
    assert_eq!(c.on_finished(0, "7", 0), vec![]);
    assert_eq!(
        c.on_finished(1, "7", 0),
        vec![
            stop(2, EarlyStop::WindowAgreement),
            stop(3, EarlyStop::WindowAgreement),
            Action::Finish
        ]
    );
    let r = c.report();
    assert_eq!((r.completed(), r.stopped(), r.tokens_wasted), (2, 2, 5));
    assert_eq!(r.total_tokens(), 7);
}

#[test]
fn min_agreement_ends_between_waves_when_answers_scatter() {
    let mut p = plan(8, 2);
    p.esc_window = Some(2);
    p.min_agreement = Some(MinAgreement {
        after: 4,
        share: 0.6,
    });
    let mut c = Controller::new(p);
    assert_eq!(c.start(), vec![launch(0, 2)]);
    tokens(&mut c, 0, 3, -0.1);
    tokens(&mut c, 1, 4, -0.2);
    assert_eq!(c.on_finished(0, "12", 0), vec![]);
    // Two answers, below `after`: the next wave goes out even though they disagree.
    assert_eq!(c.on_finished(1, "13", 0), vec![launch(2, 2)]);
    tokens(&mut c, 2, 2, -0.1);
    tokens(&mut c, 3, 5, -0.1);
    assert_eq!(c.on_finished(2, "12", 0), vec![]);
    // Winner "12" holds 2 of 4 = 0.5 < 0.6: no third wave; no sample was stopped.
    assert_eq!(c.on_finished(3, "14", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.stop_reason, Some(EarlyStop::LowAgreement));
    assert_eq!((r.launched(), r.completed(), r.stopped()), (4, 4, 0));
    assert_eq!(r.answer.as_deref(), Some("12"));
    assert_eq!((r.tokens_answer, r.tokens_wasted), (14, 0));
}

#[test]
fn min_agreement_lets_a_forming_majority_continue() {
    let mut p = plan(6, 2);
    p.min_agreement = Some(MinAgreement {
        after: 2,
        share: 0.6,
    });
    let mut c = Controller::new(p);
    assert_eq!(c.start(), vec![launch(0, 2)]);
    assert_eq!(c.on_finished(0, "5", 0), vec![]);
    // 2 of 2 agree (1.0 >= 0.6): the next wave runs (no esc_window or consensus here).
    assert_eq!(c.on_finished(1, "5", 0), vec![launch(2, 2)]);
    assert_eq!(c.on_finished(2, "6", 0), vec![]);
    // "5" holds 2 of the 4 completed (one had no answer): 0.5 < 0.6.
    assert_eq!(c.on_finished(3, "no idea", 0), vec![Action::Finish]);
    assert_eq!(c.report().stop_reason, Some(EarlyStop::LowAgreement));
    // Without any answer at all the share is 0.
    let mut p = plan(4, 2);
    p.min_agreement = Some(MinAgreement {
        after: 2,
        share: 0.1,
    });
    let mut c = Controller::new(p);
    c.start();
    assert_eq!(c.on_finished(0, "none", 0), vec![]);
    assert_eq!(c.on_finished(1, "nothing", 0), vec![Action::Finish]);
}

#[test]
fn consensus_stops_when_the_rest_cannot_change_the_outcome() {
    let mut p = plan(4, 4);
    p.consensus = Some(0.75);
    let mut c = Controller::new(p);
    c.start();
    assert_eq!(c.on_finished(0, "3", 0), vec![]);
    assert_eq!(c.on_finished(1, "3", 0), vec![]);
    // 3 of 3 answered with one live: 3 >= 0.75 * (3 + 1).
    assert_eq!(
        c.on_finished(2, "3.0", 0),
        vec![stop(3, EarlyStop::Consensus), Action::Finish]
    );
    assert_eq!(c.report().stop_reason, Some(EarlyStop::Consensus));

    // Samples not launched yet can still change the winner: with n = 8, three agreeing
    // answers, one live sample and four to come are no consensus (3 < 0.75 * (3 + 1 + 4)).
    let mut p = plan(8, 4);
    p.consensus = Some(0.75);
    let mut c = Controller::new(p);
    c.start();
    assert_eq!(c.on_finished(0, "3", 0), vec![]);
    assert_eq!(c.on_finished(1, "3", 0), vec![]);
    assert_eq!(c.on_finished(2, "3.0", 0), vec![]);
    assert_eq!(c.on_finished(3, "3", 0), vec![launch(4, 4)]);
    // 6 of 6 with two live and none to come: 6 >= 0.75 * 8.
    assert_eq!(c.on_finished(4, "3", 0), vec![]);
    assert_eq!(
        c.on_finished(5, "3", 0),
        vec![
            stop(6, EarlyStop::Consensus),
            stop(7, EarlyStop::Consensus),
            Action::Finish
        ]
    );

    // 2 of 4 agree: no consensus, the next wave runs.
    let mut p = plan(8, 4);
    p.consensus = Some(0.75);
    let mut c = Controller::new(p);
    c.start();
    for (i, a) in ["1", "1", "2", "3"].iter().enumerate() {
        let acts = c.on_finished(i, a, 0);
        if i < 3 {
            assert_eq!(acts, vec![]);
        } else {
            assert_eq!(acts, vec![launch(4, 4)]);
        }
    }
}

#[test]
fn confidence_gate_stops_later_samples_below_the_first_wave_threshold() {
    let mut p = plan(4, 2);
    p.gate = Some(Gate {
        window: 2,
        percentile: 50.0,
    });
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 3, -0.1);
    tokens(&mut c, 1, 2, -1.0);
    assert_eq!(c.on_finished(0, "1", 0), vec![]);
    assert_eq!(c.threshold(), None);
    assert_eq!(c.on_finished(1, "2", 0), vec![launch(2, 2)]);
    // Median of the first wave's lowest window means (-0.1, -1.0).
    assert!((c.threshold().unwrap() - (-0.55)).abs() < 1e-6);
    assert_eq!(c.on_token(2, Tok::drawn(-2.0)), vec![]);
    assert_eq!(
        c.on_token(2, Tok::drawn(-2.0)),
        vec![stop(2, EarlyStop::LowConfidence)]
    );
    tokens(&mut c, 3, 2, -0.2);
    assert_eq!(c.on_finished(3, "1", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.stop_reason, None);
    assert_eq!(r.stop_counts()[2], (EarlyStop::LowConfidence, 1));
    assert_eq!((r.tokens_answer, r.tokens_wasted), (7, 2));
    assert_eq!(r.answer.as_deref(), Some("1"));
}

#[test]
fn token_budget_and_deadline_stop_everything() {
    let mut p = plan(4, 2);
    p.total_token_budget = Some(5);
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 2, -0.1);
    tokens(&mut c, 1, 2, -0.1);
    assert_eq!(
        c.on_token(0, Tok::drawn(-0.1)),
        vec![
            stop(0, EarlyStop::TokenBudget),
            stop(1, EarlyStop::TokenBudget),
            Action::Finish
        ]
    );
    let r = c.report();
    assert_eq!((r.tokens_wasted, r.answer.clone()), (5, None));
    // Nothing completed: no winner (a cut-off text is not passed off as the answer).
    assert_eq!(r.winner_sample, None);

    // A finished first wave leaves no budget for a second.
    let mut p = plan(4, 2);
    p.total_token_budget = Some(4);
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 2, -0.1);
    tokens(&mut c, 1, 1, -0.1);
    assert_eq!(c.on_finished(0, "1", 0), vec![]);
    assert_eq!(c.on_finished(1, "2", 0), vec![launch(2, 2)]);

    let mut c = Controller::new(plan(2, 2));
    c.start();
    assert_eq!(c.on_finished(0, "4", 0), vec![]);
    assert_eq!(
        c.on_deadline(),
        vec![stop(1, EarlyStop::Deadline), Action::Finish]
    );
    assert_eq!(c.on_deadline(), vec![]);
    assert_eq!(c.on_finished(1, "4", 0), vec![]);
    assert_eq!(c.report().answer.as_deref(), Some("4"));
}

#[test]
fn a_wave_that_cannot_meet_the_deadline_is_not_launched() {
    let mut p = plan(8, 1);
    p.deadline = Some(Duration::from_secs(10));
    let mut c = Controller::new(p);
    assert_eq!(c.start(), vec![launch(0, 1)]);
    let urgent = |first: usize| Action::Launch {
        first,
        count: 1,
        thinking: None,
        urgent: true,
    };
    // The first wave took 3 s; 7 s are left, more than two such waves: a normal launch.
    c.observe_clock(Duration::from_secs(3));
    assert_eq!(c.on_finished(0, "1", 0), vec![launch(1, 1)]);
    // The second took 3 s too; 4 s left, under two waves: launched as urgent.
    c.observe_clock(Duration::from_secs(6));
    assert_eq!(c.on_finished(1, "2", 0), vec![urgent(2)]);
    // The third took 3.5 s; 0.5 s left: no fourth wave, the vote of three answers stands.
    c.observe_clock(Duration::from_millis(9_500));
    assert_eq!(c.on_finished(2, "2", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.answer.as_deref(), Some("2"));
    assert_eq!(r.stop_reason, Some(EarlyStop::Deadline));
    assert_eq!((r.launched(), r.completed(), r.stopped()), (3, 3, 0));
    let last = r.decisions.last().unwrap();
    assert_eq!(last.what, "finish");
    assert_eq!(
        last.why,
        "deadline: 500 ms left, the last wave took 3500 ms: another would be stopped unfinished"
    );
    assert!(r.decisions[2]
        .why
        .ends_with("; urgent: the deadline leaves under two waves"));
    assert_eq!(c.on_deadline(), vec![]);

    // Without a deadline the clock changes nothing.
    let mut c = Controller::new(plan(2, 1));
    c.start();
    c.observe_clock(Duration::from_secs(3600));
    assert_eq!(c.on_finished(0, "1", 0), vec![launch(1, 1)]);
}

#[test]
fn best_of_n_and_reasoning_token_accounting() {
    let mut p = plan(3, 3);
    p.strategy = Strategy::BestOfN;
    p.aggregation = Aggregation::parse("best_logprob").unwrap();
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 4, -0.9);
    tokens(&mut c, 1, 4, -0.2);
    tokens(&mut c, 2, 4, -0.5);
    c.on_finished(0, "5", 3);
    c.on_finished(1, "6", 1);
    assert_eq!(c.on_finished(2, "5", 2), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.answer.as_deref(), Some("6"));
    assert_eq!(r.winner_sample, Some(1));
    assert_eq!((r.tokens_thinking, r.tokens_answer), (6, 6));

    // No answers at all: the most likely completed sample.
    let mut c = Controller::new(plan(2, 2));
    c.start();
    tokens(&mut c, 0, 1, -2.0);
    tokens(&mut c, 1, 1, -1.0);
    c.on_finished(0, "none", 0);
    c.on_finished(1, "none", 0);
    let r = c.report();
    assert_eq!((r.answer.clone(), r.winner_sample), (None, Some(1)));
}

fn forced(lp: f32, thinking: bool) -> Tok {
    Tok {
        logprob: lp,
        forced: true,
        thinking,
    }
}

fn think(lp: f32) -> Tok {
    Tok {
        logprob: lp,
        forced: false,
        thinking: true,
    }
}

/// Forced tokens (the budget's end-of-thinking marker, s1 "Wait") count toward budgets but
/// never toward confidence: a capped sample is not stopped as unconfident for them.
#[test]
fn forced_tokens_do_not_count_as_low_confidence() {
    let mut p = plan(4, 2);
    p.gate = Some(Gate {
        window: 2,
        percentile: 50.0,
    });
    p.aggregation = Aggregation::ConfidenceWeighted;
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 2, -0.1);
    tokens(&mut c, 1, 2, -0.3);
    assert_eq!(c.on_finished(0, "1", 0), vec![]);
    assert_eq!(c.on_finished(1, "1", 0), vec![launch(2, 2)]);
    // Sample 2 thinks, is capped (three forced tokens at about -30), then answers.
    assert_eq!(c.on_token(2, think(-0.1)), vec![]);
    for _ in 0..3 {
        assert_eq!(c.on_token(2, forced(-30.0, true)), vec![]);
    }
    assert_eq!(c.on_token(2, Tok::drawn(-0.1)), vec![]);
    assert_eq!(c.on_finished(2, "1", 1), vec![]);
    tokens(&mut c, 3, 2, -0.1);
    assert_eq!(c.on_finished(3, "2", 0), vec![Action::Finish]);
    let r = c.report();
    let s2 = &r.samples[2];
    assert_eq!(
        (s2.tokens, s2.stopped, s2.mean_logprob),
        (5, None, -0.1f32 as f64)
    );
    // Its vote weighs exp(-0.1), not exp(mean over the forced tokens).
    let w = 2.0 * (-0.1f32 as f64).exp() + (-0.3f32 as f64).exp();
    assert!((r.votes[0].1 - w).abs() < 1e-9, "{:?}", r.votes);
}

#[test]
fn certaindex_probes_and_ends_thinking_once_the_answers_agree() {
    use crate::budget::plan::Certaindex;
    let mut p = plan(1, 1);
    p.strategy = Strategy::Single;
    p.certaindex = Some(Certaindex {
        probe_every: 4,
        agree: 2,
        max_tokens: 8,
    });
    let mut c = Controller::new(p);
    c.start();
    let probe = Action::Probe {
        sample: 0,
        kind: ProbeKind::Answer,
    };
    for _ in 0..3 {
        assert_eq!(c.on_token(0, think(-0.2)), vec![]);
    }
    assert_eq!(c.on_token(0, think(-0.2)), vec![probe.clone()]);
    // No second probe while one is out.
    for _ in 0..4 {
        assert_eq!(c.on_token(0, think(-0.2)), vec![]);
    }
    let ans = |t: &str| ProbeResult::Answer(t.to_string());
    assert_eq!(c.on_probe(0, ProbeKind::Answer, ans("x = 41"), 20), vec![]);
    for _ in 0..3 {
        assert_eq!(c.on_token(0, think(-0.2)), vec![]);
    }
    assert_eq!(c.on_token(0, think(-0.2)), vec![probe.clone()]);
    // 41 then 42: no agreement yet.
    assert_eq!(c.on_probe(0, ProbeKind::Answer, ans("42"), 21), vec![]);
    for _ in 0..3 {
        assert_eq!(c.on_token(0, think(-0.2)), vec![]);
    }
    assert_eq!(c.on_token(0, think(-0.2)), vec![probe.clone()]);
    // A dropped probe leaves the record as it was.
    assert_eq!(
        c.on_probe(0, ProbeKind::Answer, ProbeResult::Dropped, 5),
        vec![]
    );
    for _ in 0..3 {
        assert_eq!(c.on_token(0, think(-0.2)), vec![]);
    }
    assert_eq!(c.on_token(0, think(-0.2)), vec![probe]);
    assert_eq!(
        c.on_probe(0, ProbeKind::Answer, ans("so 42."), 22),
        vec![Action::EndThinking { sample: 0 }]
    );
    // Thinking ends (forced marker), the sample answers: no more probes.
    for _ in 0..3 {
        assert_eq!(c.on_token(0, forced(-30.0, true)), vec![]);
    }
    tokens(&mut c, 0, 4, -0.1);
    assert_eq!(
        c.on_finished(0, "The answer is 42", 19),
        vec![Action::Finish]
    );
    let r = c.report();
    let s = &r.samples[0];
    assert_eq!(s.exit_at, Some(20));
    assert_eq!((s.probes, s.probe_tokens, r.tokens_probe), (3, 68, 68));
    assert_eq!(
        s.probe_answers,
        vec![Some("41".into()), Some("42".into()), Some("42".into())]
    );
    assert_eq!(r.certaindex_exits(), 1);
    assert_eq!(r.total_tokens(), r.sample_tokens() + 68);
    assert!(r
        .decisions
        .iter()
        .any(|d| d.what == "end thinking of sample 0 at 20 thinking tokens"));
}

#[test]
fn verifier_scores_count_before_the_vote_and_weigh_it() {
    let mut p = plan(3, 3);
    p.aggregation = Aggregation::VerifierWeighted;
    p.scorer = true;
    p.esc_window = Some(2);
    let mut c = Controller::new(p);
    c.start();
    let verify = |s: usize| Action::Probe {
        sample: s,
        kind: ProbeKind::Verify,
    };
    for s in 0..3 {
        tokens(&mut c, s, 2, -0.1);
    }
    assert_eq!(c.on_finished(0, "7", 0), vec![verify(0)]);
    assert_eq!(c.on_finished(1, "7", 0), vec![verify(1)]);
    assert_eq!(c.on_finished(2, "9", 0), vec![verify(2)]);
    // Scores arrive out of order; the request ends only when all are in.
    let sc = |v: f64| ProbeResult::Score(v);
    assert_eq!(c.on_probe(2, ProbeKind::Verify, sc(0.95), 30), vec![]);
    assert_eq!(c.on_probe(0, ProbeKind::Verify, sc(0.2), 30), vec![]);
    // A dropped verification leaves the sample unscored (it weighs 0) but counted; 0 and 1
    // agree on 7 last: esc_window 2 is met.
    assert_eq!(
        c.on_probe(1, ProbeKind::Verify, ProbeResult::Dropped, 0),
        vec![Action::Finish]
    );
    let r = c.report();
    assert_eq!(r.stop_reason, Some(EarlyStop::WindowAgreement));
    assert_eq!(r.votes, vec![("9".into(), 0.95), ("7".into(), 0.2)]);
    assert_eq!((r.answer.as_deref(), r.winner_sample), (Some("9"), Some(2)));
    assert_eq!(
        r.samples.iter().map(|s| s.score).collect::<Vec<_>>(),
        vec![Some(0.2), None, Some(0.95)]
    );
    assert_eq!(r.tokens_probe, 60);
}

#[test]
fn later_waves_meet_the_load_they_find() {
    let mut p = plan(8, 2);
    p.think_budget = Some(400);
    let mut c = Controller::new(p);
    assert_eq!(c.start(), vec![launch(0, 2)]);
    assert_eq!(c.on_finished(0, "1", 0), vec![]);
    assert_eq!(c.on_finished(1, "2", 0), vec![launch(2, 2)]);
    // Busy now (level 1): at most ceil(8 / 2) = 4 samples, thinking halved.
    c.observe_load(1);
    assert_eq!(c.on_finished(2, "3", 0), vec![]);
    assert_eq!(c.on_finished(3, "4", 0), vec![Action::Finish]);
    let mut c = Controller::new({
        let mut p = plan(8, 2);
        p.think_budget = Some(400);
        p
    });
    c.start();
    c.observe_load(1);
    c.on_finished(0, "1", 0);
    assert_eq!(
        c.on_finished(1, "2", 0),
        vec![Action::Launch {
            first: 2,
            count: 2,
            thinking: Some(200),
            urgent: false,
        }]
    );
    let r = c.report();
    assert_eq!(r.decisions.len(), 2);
    assert_eq!(r.decisions[1].what, "launch 2");
    assert!(r.decisions[1].why.contains("load level 1 allows 4 of 8"));
}
