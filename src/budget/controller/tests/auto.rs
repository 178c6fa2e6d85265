//! `auto`: posterior-driven stopping, hopeless-vote exits and thinking-budget doubling.

use super::*;

fn auto_plan(n: usize) -> TtcPlan {
    let mut p = plan(n, 2);
    p.strategy = Strategy::Auto;
    p.auto = Some(crate::budget::AutoPolicy::default());
    // the server's default aggregation for auto (with no tokens fed every weight is 1)
    p.aggregation = Aggregation::ConfidenceWeighted;
    p
}

/// Waves of two and a scattered vote only from four answers: the wave mechanics with more
/// than one sample live.
fn auto_plan_waves_of_two(n: usize) -> TtcPlan {
    let mut p = auto_plan(n);
    p.auto = Some(crate::budget::AutoPolicy {
        wave: 2,
        hopeless_after: 4,
        ..Default::default()
    });
    p
}

#[test]
fn p_majority_is_the_beta_posterior() {
    assert_eq!(p_majority(0, 0), 0.5);
    assert_eq!(p_majority(1, 0), 0.75);
    assert_eq!(p_majority(2, 0), 0.875);
    assert_eq!(p_majority(3, 1), 26.0 / 32.0);
    assert_eq!(p_majority(4, 1), 57.0 / 64.0);
    assert_eq!(p_majority(1, 1), 0.5);
}

#[test]
fn auto_stops_an_easy_request_after_two_agreeing_samples() {
    let mut c = Controller::new(auto_plan(8));
    assert_eq!(c.start(), vec![launch(0, 2)]);
    assert_eq!(c.on_finished(0, "The answer is 7.", 0), vec![]);
    assert_eq!(c.on_finished(1, "7", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.stop_reason, Some(EarlyStop::Confident));
    assert_eq!(r.launched(), 2);
    assert_eq!(r.decisions.last().map(|d| d.what.as_str()), Some("finish"));
    assert!(r.decisions.iter().any(|d| d.what == "stop: confident"
        && d.why == "auto: 7 leads 2 to 0; P(it is the majority) = 0.875 >= 0.8"));
}

#[test]
fn auto_adds_samples_while_the_vote_is_contested() {
    // The default adds one sample at a time; with waves of two samples 2 and 3 run together.
    for (p, wave, after_third) in [
        (auto_plan(8), 1, vec![launch(3, 1)]),
        (auto_plan_waves_of_two(8), 2, vec![]),
    ] {
        let mut c = Controller::new(p);
        c.start();
        assert_eq!(c.on_finished(0, "7", 0), vec![]);
        assert_eq!(c.on_finished(1, "8", 0), vec![launch(2, wave)]);
        // 2 to 1: P = 0.6875, not yet; the leader holds 2/3 >= 0.51: not scattered.
        assert_eq!(c.on_finished(2, "7", 0), after_third);
        // 3 to 1: P = 0.8125 >= 0.8: the request ends.
        assert_eq!(c.on_finished(3, "7", 0), vec![Action::Finish]);
        let r = c.report();
        assert_eq!((r.launched(), r.answer.as_deref()), (4, Some("7")));
        assert_eq!(r.stop_reason, Some(EarlyStop::Confident));
    }
}

#[test]
fn auto_stops_a_live_sample_once_the_vote_is_settled() {
    let mut c = Controller::new(auto_plan_waves_of_two(8));
    c.start();
    // No number: no vote. One answer alone: P = 0.75, not enough.
    assert_eq!(c.on_finished(0, "I cannot tell.", 0), vec![]);
    assert_eq!(c.on_finished(1, "7", 0), vec![launch(2, 2)]);
    // 2 to 0: P = 0.875; the live sample 3 is stopped.
    assert_eq!(
        c.on_finished(2, "7", 0),
        vec![stop(3, EarlyStop::Confident), Action::Finish]
    );
    let r = c.report();
    assert_eq!((r.launched(), r.answer.as_deref()), (4, Some("7")));
}

#[test]
fn auto_gives_up_on_a_scattered_vote_between_waves() {
    let mut c = Controller::new(auto_plan(16));
    c.start();
    assert_eq!(c.on_finished(0, "1", 0), vec![]);
    assert_eq!(c.on_finished(1, "2", 0), vec![launch(2, 1)]);
    // 3 answers, the leader holds 1/3 < 0.51: no further sample.
    assert_eq!(c.on_finished(2, "3", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.stop_reason, Some(EarlyStop::LowAgreement));
    assert!(r.decisions.iter().any(|d| d.why
        == "auto: the leader holds 0.33 of 3 answers, below 0.51: more votes rarely change a scattered vote"));
    // With waves of two the same rule waits for four answers.
    let mut c = Controller::new(auto_plan_waves_of_two(16));
    c.start();
    let mut acts = Vec::new();
    for (i, a) in ["1", "2", "3", "4"].iter().enumerate() {
        acts = c.on_finished(i, a, 0);
        if i % 2 == 0 {
            assert_eq!(acts, vec![]);
        } else if i < 3 {
            assert_eq!(acts, vec![launch(i + 1, 2)]);
        }
    }
    // 4 answers, the leader holds 1/4 < 0.51: no further wave.
    assert_eq!(acts, vec![Action::Finish]);
    assert_eq!(c.report().stop_reason, Some(EarlyStop::LowAgreement));
}

#[test]
fn auto_doubles_the_thinking_of_a_wave_after_one_that_hit_its_budget() {
    let mut p = auto_plan(8);
    p.grant.granted_thinking = Some(100);
    p.think_budget = Some(100);
    p.auto = Some(crate::budget::AutoPolicy {
        max_thinking: Some(300),
        wave: 2,
        // four scattered answers would end the request before the third wave
        hopeless_after: 16,
        ..Default::default()
    });
    let mut c = Controller::new(p);
    c.start();
    c.on_finished(0, "1", 100);
    let up = |first: usize, t: u32| Action::Launch {
        first,
        count: 2,
        thinking: Some(t),
        urgent: false,
    };
    assert_eq!(c.on_finished(1, "2", 40), vec![up(2, 200)]);
    c.on_finished(2, "3", 200);
    // Capped again: 400 would exceed max_thinking 300.
    assert_eq!(c.on_finished(3, "4", 200), vec![up(4, 300)]);
    let r = c.report();
    assert!(r
        .decisions
        .iter()
        .any(|d| d.what == "thinking budget 100 -> 200"));
    assert!(r
        .decisions
        .iter()
        .any(|d| d.what == "thinking budget 200 -> 300"));
}

#[test]
fn auto_breaks_a_split_vote_towards_the_more_confident_sample() {
    let mut c = Controller::new(auto_plan(8));
    c.start();
    // weights exp(-0.5) = 0.607, exp(-0.01) = 0.990, exp(-0.5) = 0.607
    tokens(&mut c, 0, 4, -0.5);
    tokens(&mut c, 1, 4, -0.01);
    assert_eq!(c.on_finished(0, "7", 0), vec![]);
    assert_eq!(c.on_finished(1, "8", 0), vec![launch(2, 1)]);
    tokens(&mut c, 2, 4, -0.5);
    // 1-1-1: "8" leads on weight with 0.990 / 2.204 = 0.45 < 0.51: scattered, "8" answers.
    assert_eq!(c.on_finished(2, "9", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!(r.answer.as_deref(), Some("8"));
    assert_eq!(r.stop_reason, Some(EarlyStop::LowAgreement));
    // Plain majority gives the tie to the lowest sample index.
    let mut p = auto_plan(8);
    p.aggregation = Aggregation::Majority;
    let mut c = Controller::new(p);
    c.start();
    tokens(&mut c, 0, 4, -0.5);
    tokens(&mut c, 1, 4, -0.01);
    c.on_finished(0, "7", 0);
    c.on_finished(1, "8", 0);
    assert_eq!(c.on_finished(2, "9", 0), vec![Action::Finish]);
    assert_eq!(c.report().answer.as_deref(), Some("7"));
}
