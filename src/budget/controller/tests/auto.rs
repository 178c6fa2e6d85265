//! `auto`: posterior-driven stopping, hopeless-vote exits and thinking-budget doubling.

use super::*;

fn auto_plan(n: usize) -> TtcPlan {
    let mut p = plan(n, 2);
    p.strategy = Strategy::Auto;
    p.auto = Some(crate::budget::AutoPolicy::default());
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
fn auto_runs_more_waves_while_the_vote_is_contested() {
    let mut c = Controller::new(auto_plan(8));
    c.start();
    assert_eq!(c.on_finished(0, "7", 0), vec![]);
    assert_eq!(c.on_finished(1, "8", 0), vec![launch(2, 2)]);
    // 2 to 1: P = 0.6875, not yet.
    assert_eq!(c.on_finished(2, "7", 0), vec![]);
    // 3 to 1: P = 0.8125 >= 0.8: the request ends.
    assert_eq!(c.on_finished(3, "7", 0), vec![Action::Finish]);
    let r = c.report();
    assert_eq!((r.launched(), r.answer.as_deref()), (4, Some("7")));
    assert_eq!(r.stop_reason, Some(EarlyStop::Confident));
}

#[test]
fn auto_stops_a_live_sample_once_the_vote_is_settled() {
    let mut c = Controller::new(auto_plan(8));
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
