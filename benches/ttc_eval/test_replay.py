"""replay.py: the offline `auto` policy follows the controller's rules exactly."""

import replay


def row(answers, tokens=None, expected=7, logprobs=None):
    tokens = tokens or [10] * len(answers)
    logprobs = logprobs or [-0.1] * len(answers)
    return {"problem": 0, "expected": expected,
            "samples": [{"index": i, "answer": a, "tokens": t, "mean_logprob": lp}
                        for i, (a, t, lp) in enumerate(zip(answers, tokens, logprobs))]}


def test_p_majority_is_the_beta_posterior():
    assert replay.p_majority(2, 0) == 0.875
    assert replay.p_majority(3, 1) == 26 / 32
    assert replay.p_majority(2, 1) == 11 / 16


def test_two_agreeing_answers_end_the_request():
    assert replay.replay(row(["7", "7"] + ["1"] * 14)) == ("7", 20, 2)


def test_a_confident_stop_charges_the_live_sample_its_tokens_so_far():
    # wave 2 = samples 2 (5 tokens) and 3 (30 tokens): 2 finishes first, 2-0 for "7" with the
    # unanswered sample 0; sample 3 is stopped at 5 tokens.
    r = row([None, "7", "7", "8"] + ["1"] * 12, tokens=[10, 10, 5, 30] + [10] * 12)
    assert replay.replay(r) == ("7", 10 + 10 + 5 + 5, 4)


def test_a_scattered_vote_ends_after_four():
    assert replay.replay(row(["1", "2", "3", "4"] + ["7"] * 12)) == ("1", 40, 4)
    # the earlier setting runs on to six
    assert replay.replay(row(["1", "2", "3", "4", "5", "6"] + ["7"] * 10), confidence=0.85,
                         hopeless_after=6, hopeless_share=0.34) == ("1", 60, 6)


def test_evaluate_counts_accuracy_tokens_and_samples():
    rows = [row(["7", "7"] + ["1"] * 14), row(["1", "2", "3", "4"] + ["7"] * 12)]
    assert replay.evaluate(rows) == (0.5, 30.0, 3.0)


def test_the_server_defaults_add_one_sample_at_a_time_and_weigh_by_confidence():
    defaults = dict(wave=1, hopeless_after=3, aggregation="confidence_weighted")
    # 7, 8 split -> sample 2 says 7 (2-1, share 2/3: go on) -> sample 3 says 7: 3-1 ends it
    assert replay.replay(row(["7", "8", "7", "7"] + ["1"] * 12), **defaults) == ("7", 40, 4)
    # 1-1-1 is scattered; the most confident answer (sample 1) wins the weighted vote
    r = row(["7", "8", "9"] + ["1"] * 13, logprobs=[-0.5, -0.01, -0.5] + [-0.1] * 13)
    assert replay.replay(r, **defaults) == ("8", 30, 3)
    # a plain majority gives the tie to the lowest sample index
    assert replay.replay(r, wave=1, hopeless_after=3) == ("7", 30, 3)
