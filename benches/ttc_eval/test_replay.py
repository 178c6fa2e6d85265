"""replay.py: the offline `auto` policy follows the controller's rules exactly."""

import replay


def row(answers, tokens=None, expected=7):
    tokens = tokens or [10] * len(answers)
    return {"problem": 0, "expected": expected,
            "samples": [{"index": i, "answer": a, "tokens": t}
                        for i, (a, t) in enumerate(zip(answers, tokens))]}


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
