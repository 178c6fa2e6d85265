//! `build`: presets, load shrinking, and the exact 400 messages of invalid combinations.

use super::*;

fn cx(config: &BudgetConfig, has_reasoning: bool) -> BudgetContext<'_> {
    BudgetContext {
        config,
        load: LoadSnapshot::default(),
        has_reasoning,
        max_n: 16,
        max_tokens: 100,
        n_given: None,
    }
}

fn ttc(f: impl FnOnce(&mut RawTtc)) -> RawBudget {
    let mut t = RawTtc::default();
    f(&mut t);
    RawBudget {
        ttc: Some(t),
        ..RawBudget::default()
    }
}

fn err(raw: &RawBudget, c: &BudgetContext<'_>) -> (String, Option<String>) {
    let e = build(raw, c).unwrap_err();
    (e.to_string(), Some(e.param))
}

fn msg(param: &str, m: &str) -> (String, Option<String>) {
    (m.to_string(), Some(param.to_string()))
}

#[test]
fn nothing_asked_means_no_budget() {
    let c = BudgetConfig::default();
    let b = build(&RawBudget::default(), &cx(&c, true)).unwrap();
    assert_eq!(b.think, ThinkLimits::default());
    assert!(b.ttc.is_none() && b.grant.is_none());
}

#[test]
fn thinking_budget_rules() {
    let c = BudgetConfig::default();
    let raw = RawBudget {
        thinking_token_budget: Some(40),
        min_thinking_tokens: Some(10),
        ..RawBudget::default()
    };
    let b = build(&raw, &cx(&c, true)).unwrap();
    assert_eq!(
        b.think,
        ThinkLimits {
            budget: Some(40),
            min_thinking: 10
        }
    );
    let g = b.grant.unwrap();
    assert_eq!(
        (g.requested_thinking, g.granted_thinking),
        (Some(40), Some(40))
    );
    assert_eq!(
        err(&raw, &cx(&c, false)),
        msg("thinking_token_budget", "`thinking_token_budget` needs a model that marks its thinking (<think>...</think>); this model has no reasoning markers (start the server with --reasoning-parser to set them)")
    );
    let over = RawBudget {
        thinking_token_budget: Some(100),
        ..RawBudget::default()
    };
    assert_eq!(
        err(&over, &cx(&c, true)),
        msg("thinking_token_budget", "`thinking_token_budget` must be in [0, 99] (below the sample's token limit of 100, to leave room for the answer), given 100")
    );
    let min_over = RawBudget {
        thinking_token_budget: Some(5),
        min_thinking_tokens: Some(6),
        ..RawBudget::default()
    };
    assert_eq!(
        err(&min_over, &cx(&c, true)),
        msg(
            "min_thinking_tokens",
            "`min_thinking_tokens` must be in [0, 5], given 6"
        )
    );
    let bad = RawBudget {
        reasoning_effort: Some("max".into()),
        ..RawBudget::default()
    };
    assert_eq!(
        err(&bad, &cx(&c, true)),
        msg(
            "reasoning_effort",
            "`reasoning_effort` must be one of none, low, medium, high, auto, given \"max\""
        )
    );
}

#[test]
fn effort_presets_clamp_and_aggregate() {
    let c = BudgetConfig::default();
    let high = RawBudget {
        reasoning_effort: Some("high".into()),
        ..RawBudget::default()
    };
    let b = build(&high, &cx(&c, true)).unwrap();
    // 8192 clamped to 3/4 of the 100-token limit.
    assert_eq!(b.think.budget, Some(75));
    let p = b.ttc.unwrap();
    assert_eq!(
        (p.strategy, p.n, p.min_samples),
        (Strategy::SelfConsistency, 4, 4)
    );
    // Without markers the preset's thinking budget is reported as not applied.
    let b = build(&high, &cx(&c, false)).unwrap();
    assert_eq!(b.think.budget, None);
    let g = b.grant.unwrap();
    assert_eq!((g.requested_thinking, g.granted_thinking), (Some(75), None));
    assert!(g.note.is_some());
    let auto = RawBudget {
        reasoning_effort: Some("auto".into()),
        ..RawBudget::default()
    };
    let p = build(&auto, &cx(&c, true)).unwrap().ttc.unwrap();
    // The auto level is strategy auto: 2 first, then one at a time, up to 8, votes weighted
    // by confidence.
    assert_eq!(
        (p.strategy, p.n, p.min_samples, p.esc_window),
        (Strategy::Auto, 8, 2, None)
    );
    let a = p.auto.unwrap();
    assert_eq!(
        (
            a.first,
            a.wave,
            a.confidence,
            a.hopeless_after,
            a.hopeless_share,
            a.max_thinking
        ),
        (2, 1, 0.8, 3, 0.51, Some(8192))
    );
    assert_eq!(p.aggregation, Aggregation::ConfidenceWeighted);
    // A request field wins over the preset.
    let mixed = RawBudget {
        reasoning_effort: Some("auto".into()),
        ttc: Some(RawTtc {
            n: Some(4),
            esc_window: Some(3),
            ..RawTtc::default()
        }),
        ..RawBudget::default()
    };
    let p = build(&mixed, &cx(&c, true)).unwrap().ttc.unwrap();
    assert_eq!((p.n, p.min_samples, p.esc_window), (4, 2, Some(3)));
}

#[test]
fn load_levels_shrink_samples_and_thinking() {
    let c = BudgetConfig::default();
    let raw = RawBudget {
        thinking_token_budget: Some(60),
        ttc: Some(RawTtc {
            n: Some(8),
            min_samples: Some(6),
            ..RawTtc::default()
        }),
        ..RawBudget::default()
    };
    let mut busy = cx(&c, true);
    busy.load.num_waiting = 8;
    let b = build(&raw, &busy).unwrap();
    assert_eq!(b.think.budget, Some(30));
    let p = b.ttc.unwrap();
    assert_eq!((p.n, p.min_samples, p.grant.load_level), (4, 4, 1));
    assert_eq!((p.grant.requested_n, p.grant.requested_min_samples), (8, 6));
    busy.load.kv_usage = 0.99;
    let b = build(&raw, &busy).unwrap();
    assert_eq!((b.think.budget, b.ttc.unwrap().n), (Some(15), 1));
}

#[test]
fn min_agreement_defaults_to_two_waves_and_half() {
    let c = BudgetConfig::default();
    let raw = ttc(|t| {
        t.n = Some(8);
        t.min_samples = Some(3);
        t.min_agreement = Some(RawMinAgreement::default());
    });
    let plan = build(&raw, &cx(&c, false)).unwrap().ttc.unwrap();
    assert_eq!(
        plan.min_agreement,
        Some(MinAgreement {
            after: 6,
            share: 0.5
        })
    );
}

#[test]
fn invalid_combinations_are_named() {
    let c = BudgetConfig::default();
    let k = cx(&c, true);
    let cases: Vec<(RawBudget, (String, Option<String>))> = vec![
        (
            ttc(|t| t.strategy = Some("vote".into())),
            msg("ttc.strategy", "`ttc.strategy` must be one of single, self_consistency, best_of_n, auto, given \"vote\""),
        ),
        (
            ttc(|t| {
                t.strategy = Some("single".into());
                t.n = Some(3)
            }),
            msg("ttc.n", "`ttc.n` must be 1 with strategy single (use self_consistency or best_of_n for several samples), given 3"),
        ),
        (ttc(|t| t.n = Some(17)), msg("ttc.n", "`ttc.n` must be in [1, 16], given 17")),
        (
            ttc(|t| {
                t.n = Some(4);
                t.min_samples = Some(5)
            }),
            msg("ttc.min_samples", "`ttc.min_samples` must be in [1, 4], given 5"),
        ),
        (
            ttc(|t| {
                t.n = Some(4);
                t.consensus = Some(0.5)
            }),
            msg("ttc.consensus", "`ttc.consensus` must be in (0.5, 1], given 0.5"),
        ),
        (
            ttc(|t| {
                t.n = Some(4);
                t.esc_window = Some(5)
            }),
            msg("ttc.esc_window", "`ttc.esc_window` must be in [2, 4], given 5"),
        ),
        (
            ttc(|t| {
                t.n = Some(4);
                t.confidence_gate = Some(RawGate::default())
            }),
            msg("ttc.confidence_gate", "`ttc.confidence_gate` needs `ttc.min_samples` below `ttc.n` (the first wave sets the threshold for later samples), given min_samples 4 and n 4"),
        ),
        (
            ttc(|t| {
                t.n = Some(4);
                t.min_samples = Some(2);
                t.confidence_gate = Some(RawGate {
                    window: Some(0),
                    percentile: None,
                })
            }),
            msg("ttc.confidence_gate.window", "`ttc.confidence_gate.window` must be in [1, 1024], given 0"),
        ),
        (
            ttc(|t| {
                t.strategy = Some("best_of_n".into());
                t.n = Some(4);
                t.consensus = Some(0.8)
            }),
            msg("ttc.strategy", "`ttc.strategy` best_of_n scores every sample; consensus, esc_window, confidence_gate and min_agreement need self_consistency"),
        ),
        (
            ttc(|t| {
                t.n = Some(8);
                t.min_samples = Some(2);
                t.min_agreement = Some(RawMinAgreement {
                    after: Some(9),
                    share: None,
                })
            }),
            msg("ttc.min_agreement.after", "`ttc.min_agreement.after` must be in [1, 8], given 9"),
        ),
        (
            ttc(|t| {
                t.n = Some(8);
                t.min_samples = Some(2);
                t.min_agreement = Some(RawMinAgreement {
                    after: None,
                    share: Some(0.0),
                })
            }),
            msg("ttc.min_agreement.share", "`ttc.min_agreement.share` must be in (0, 1], given 0"),
        ),
        (
            ttc(|t| {
                t.n = Some(4);
                t.min_agreement = Some(RawMinAgreement::default())
            }),
            msg("ttc.min_agreement", "`ttc.min_agreement` decides between waves and needs `ttc.min_samples` below `ttc.n`, given min_samples 4 and n 4"),
        ),
        (
            ttc(|t| {
                t.strategy = Some("best_of_n".into());
                t.n = Some(4);
                t.aggregation = Some("majority".into())
            }),
            msg("ttc.aggregation", "`ttc.aggregation` must be best_logprob or best_score with strategy best_of_n, given \"majority\""),
        ),
        (
            ttc(|t| t.deadline_ms = Some(0)),
            msg("ttc.deadline_ms", "`ttc.deadline_ms` must be in [1, 3600000], given 0"),
        ),
        (
            ttc(|t| t.total_token_budget = Some(-1)),
            msg("ttc.total_token_budget", "`ttc.total_token_budget` must be in [1, 4294967295], given -1"),
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(err(&raw, &k), want, "{raw:?}");
    }
    let mut with_n = cx(&c, true);
    with_n.n_given = Some(3);
    assert_eq!(
        err(&ttc(|t| t.n = Some(4)), &with_n),
        msg("n", "`n` must be 1 (or absent) when samples are aggregated (`ttc` or a reasoning_effort preset with several samples); set `ttc.n` instead, given 3")
    );
    let e = err(&ttc(|t| t.extract = Some("first_word".into())), &k);
    assert_eq!(e.1.as_deref(), Some("ttc.extract"));
}

#[test]
fn auto_parameters_are_checked() {
    use crate::budget::RawAuto;
    let c = BudgetConfig::default();
    let k = cx(&c, true);
    let auto = |f: fn(&mut RawAuto)| {
        ttc(|t| {
            t.strategy = Some("auto".into());
            t.n = Some(8);
            let mut a = RawAuto::default();
            f(&mut a);
            t.auto = Some(a);
        })
    };
    let p = build(&auto(|a| a.first = Some(3)), &k)
        .unwrap()
        .ttc
        .unwrap();
    assert_eq!(
        (p.strategy, p.min_samples, p.auto.unwrap().wave),
        (Strategy::Auto, 3, 1)
    );
    assert_eq!(
        err(&auto(|a| a.confidence = Some(1.5)), &k),
        msg(
            "ttc.auto.confidence",
            "`ttc.auto.confidence` must be in (0, 1], given 1.5"
        )
    );
    assert_eq!(
        err(&auto(|a| a.wave = Some(9)), &k),
        msg(
            "ttc.auto.wave",
            "`ttc.auto.wave` must be in [1, 8], given 9"
        )
    );
    assert_eq!(
        err(
            &ttc(|t| {
                t.strategy = Some("auto".into());
                t.min_samples = Some(2);
            }),
            &k
        ),
        msg(
            "ttc.min_samples",
            "`ttc.min_samples` is decided by strategy auto; set `ttc.auto.first` / `ttc.auto.wave` instead"
        )
    );
    assert_eq!(
        err(&ttc(|t| t.auto = Some(RawAuto::default())), &k),
        msg(
            "ttc.auto",
            "`ttc.auto` sets the parameters of strategy auto; set `ttc.strategy` to \"auto\""
        )
    );
}
