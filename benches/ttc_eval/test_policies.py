"""Offline tests of the runs, the derived policies (votes, subsampling, token accounting)
and the subsampling check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check  # noqa: E402
import policies as pol  # noqa: E402
import problems as prob  # noqa: E402
import runs as rn  # noqa: E402


def sample(i, answer, tokens=100, reasoning=90, score=None, probe=0, lp=-0.1, exit_at=None):
    return {"index": i, "answer": answer, "tokens": tokens, "reasoning_tokens": reasoning,
            "mean_logprob": lp, "stopped": None, "score": score, "probe_tokens": probe,
            "certaindex_exit_at": exit_at}


def row(run, problem, samples, expected=12, answer=None, level=2, error=None, total=None):
    tokens = sum(s["tokens"] for s in samples)
    probe = sum(s["probe_tokens"] for s in samples)
    return {"run": run, "problem": problem, "level": level, "expected": expected,
            "answer": answer, "correct": False, "samples": samples, "error": error,
            "tokens": {"total": total if total is not None else tokens + probe},
            "latency_s": 1.0}


# ---------------------------------------------------------------- runs


def test_run_table_and_request_body():
    names = [r.name for r in rn.all_runs()]
    assert names == ["sc16", "cdx8", "auto-s0", "auto-s1", "auto-s2", "greedy-small",
                     "greedy-large", "auto-large"]
    runs = {r.name: r for r in rn.all_runs() + rn.check_runs()}
    assert runs["sc16"].ttc == {"strategy": "self_consistency", "n": 16, "min_samples": 16,
                                "aggregation": "majority", "scorer": "self_verify",
                                "extract": "last_number", "equivalence": "numeric"}
    assert runs["cdx8"].ttc["certaindex"] == rn.CERTAINDEX and runs["cdx8"].ttc["n"] == 8
    assert runs["auto-s0"].ttc["strategy"] == "auto" and runs["auto-s0"].optional
    assert runs["greedy-large"].model == "large"
    assert runs["greedy-small"].sampling["temperature"] == 0.0
    # the check runs are the plain shapes the derived policies stand for
    plain4 = {k: v for k, v in runs["sc16"].ttc.items() if k != "scorer"}
    assert runs["check-fixed-4"].ttc == {**plain4, "n": 4, "min_samples": 4}
    assert runs["check-cdx1"].ttc == {**runs["cdx8"].ttc, "n": 1, "min_samples": 1}

    p = prob.generate(5, seed=0)[2]
    body = rn.request_body("qwen", p, runs["sc16"])
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * len(prob.EXAMPLES) + ["user"]
    assert body["messages"][0]["content"] == prob.SYSTEM_PROMPT
    assert body["messages"][-1]["content"] == p.prompt
    for question, answer in prob.EXAMPLES:
        # each worked example closes its thinking, then gives the answer line
        assert answer.startswith("<think>\n") and "\n</think>\n\nThe answer is " in answer
        assert {"role": "assistant", "content": answer} in body["messages"]
    assert body["seed"] == p.seed and body["ttc"] is runs["sc16"].ttc
    assert {k: body[k] for k in rn.SAMPLING} == rn.SAMPLING
    # the second auto seed differs, deterministically
    s1 = rn.request_body("qwen", p, runs["auto-s1"])["seed"]
    assert s1 == (p.seed + rn.AUTO_SEED_STEP) % 2**31 != p.seed
    s2 = rn.request_body("qwen", p, runs["auto-s2"])["seed"]
    assert s2 == (p.seed + 2 * rn.AUTO_SEED_STEP) % 2**31 not in (p.seed, s1)


def test_template_opens_thinking_and_defaults_to_the_system_prompt():
    text = (Path(__file__).resolve().parent / "qwen-think.jinja").read_text()
    assert "'<|im_start|>assistant\\n<think>\\n'" in text
    assert prob.SYSTEM_PROMPT in text


def test_select_groups():
    assert [r.name for r in rn.select("main")] == ["sc16"]
    assert [r.name for r in rn.select("large,main")] == ["sc16", "greedy-large"]
    everything = [r.name for r in rn.select(None)]
    assert everything[-1] == "auto-large" and len(everything) == 12
    with pytest.raises(ValueError, match="unknown run groups"):
        rn.select("main,nope")


# ---------------------------------------------------------------- votes


def test_majority_ties_go_to_the_first_answer():
    s = [sample(0, "7"), sample(1, "12"), sample(2, None), sample(3, "12"), sample(4, "7")]
    assert pol.majority(s) == "7"
    assert pol.majority(list(reversed(s))) == "7"  # order of the list does not matter
    assert pol.majority(s[:4]) == "12"
    assert pol.majority([sample(0, None)]) is None


def test_verifier_vote_and_best_score():
    s = [sample(0, "7", score=0.9), sample(1, "12", score=0.5), sample(2, "12", score=0.5),
         sample(3, "9", score=None), sample(4, None, score=1.0)]
    assert pol.verifier_vote(s) == "12"  # 1.0 against 0.9
    assert pol.best_by_score(s) == "7"  # the unanswered sample never wins
    # all weights 0: the first answer given
    assert pol.verifier_vote([sample(0, "3", score=0.0), sample(1, "4", score=0.0)]) == "3"
    # equal scores: the better mean logprob, then the lower index
    tied = [sample(0, "1", score=0.8, lp=-0.5), sample(1, "2", score=0.8, lp=-0.2),
            sample(2, "3", score=0.8, lp=-0.2)]
    assert pol.best_by_score(tied) == "2"
    # unscored samples rank below scored ones
    assert pol.best_by_score([sample(0, "5", score=None, lp=0.0),
                              sample(1, "6", score=0.1, lp=-3.0)]) == "6"


# ---------------------------------------------------------------- derivation and tokens


def sc16_row():
    """16 samples: answers 12 at 2, 5, 9, 10; probes of 30 tokens each; scores favour 12."""
    answers = ["7", "8", "12", "7", "9", "12", "8", "8", "1", "12", "12", "3", "3", "3", "3", "3"]
    samples = [sample(i, a, tokens=100 + i, reasoning=80 + i, probe=30,
                      score=0.9 if a == "12" else 0.2) for i, a in enumerate(answers)]
    return row("sc16", 0, samples, expected=12, answer="3")


def by_name(name):
    return next(p for p in pol.policy_table() if p.name == name)


def test_subsampled_majority_and_pass_at_n():
    r = sc16_row()
    got = {n: pol.derive(by_name(f"majority-{n}"), r) for n in rn.FIXED_N}
    assert [got[n]["answer"] for n in rn.FIXED_N] == ["7", "7", "7", "8", "3"]
    assert [got[n]["correct"] for n in rn.FIXED_N] == [False] * 5
    passed = {n: pol.derive(by_name(f"pass@{n}"), r)["correct"] for n in rn.FIXED_N}
    assert passed == {1: False, 2: False, 4: True, 8: True, 16: True}


def test_token_accounting():
    r = sc16_row()
    # majority-N: the first N samples' tokens, no probes: sum(100 + i for i < N)
    for n in rn.FIXED_N:
        d = pol.derive(by_name(f"majority-{n}"), r)
        assert d["tokens"] == 100 * n + n * (n - 1) // 2
        assert d["samples"] == n and d["reasoning_tokens"] == 80 * n + n * (n - 1) // 2
    # verifier policies: the first 8 samples' tokens + their probes (8 x 30)
    for name in ("best-of-8-score", "verifier-vote-8"):
        d = pol.derive(by_name(name), r)
        assert d["tokens"] == 828 + 240 and d["probe_tokens"] == 240 and d["samples"] == 8
        assert d["answer"] == "12" and d["correct"]
    # pass@N counts like majority-N
    assert pol.derive(by_name("pass@4"), r)["tokens"] == 406


def test_certaindex_and_server_decided_policies():
    cdx = row("cdx8", 3, [sample(i, "12" if i % 2 else "5", tokens=50, probe=20,
                                 exit_at=40 if i < 6 else None) for i in range(8)])
    one = pol.derive(by_name("certaindex-1"), cdx)
    assert (one["answer"], one["tokens"], one["samples"], one["exits"]) == ("5", 70, 1, 1)
    eight = pol.derive(by_name("certaindex-8"), cdx)
    # a 4-4 tie: the answer of sample 0
    assert (eight["answer"], eight["tokens"], eight["exits"]) == ("5", 560, 6)
    auto = row("auto-s0", 3, [sample(0, "12", tokens=40), sample(1, "12", tokens=60)],
               answer="12", total=130)
    got = pol.derive(by_name("auto-s0"), auto)
    assert (got["correct"], got["tokens"], got["samples"]) == (True, 130, 2)


def test_failed_requests_are_wrong_without_tokens():
    r = row("sc16", 4, [], error="HTTP 500: boom")
    d = pol.derive(by_name("majority-8"), r)
    assert (d["correct"], d["tokens"], d["error"]) == (False, None, "HTTP 500: boom")


def test_missing_samples_are_an_error_not_a_silent_subset():
    r = sc16_row()
    r["samples"] = r["samples"][:6]
    with pytest.raises(ValueError, match="6 samples below index 8"):
        pol.derive(by_name("majority-8"), r)


def test_derive_all_uses_only_present_runs():
    policies, results = pol.derive_all({"sc16": [sc16_row()]})
    assert {p.run for p in policies} == {"sc16"}
    assert len(results) == len(policies) == 2 + 2 * len(rn.FIXED_N)


# ---------------------------------------------------------------- subsampling check


def test_check_compares_samples_and_answers():
    base = sc16_row()
    real = row("check-fixed-4", 0, [dict(s) for s in base["samples"][:4]], answer="7")
    ok = check.check_all({"sc16": [base], "check-fixed-4": [real]})
    assert ok == [{"run": "check-fixed-4", "against": "sc16, first 4", "problems": 1,
                   "samples": 4, "identical": 4, "answers_equal": 1, "details": []}]
    real["samples"][2]["tokens"] += 1
    real["answer"] = "12"
    bad = check.check_all({"sc16": [base], "check-fixed-4": [real]})[0]
    assert (bad["identical"], bad["answers_equal"]) == (3, 0)
    assert bad["details"][0]["diffs"] == [{"index": 2, "fields": {"tokens": [103, 102]}}]
