"""Policies, derived offline from the runs' per-sample reports (runs.py says why that is
exact), and the honest token count of each.

    policy            run           samples used            answer                 tokens counted
    majority-N        sc16          the first N             majority vote          their tokens
    best-of-8-score   sc16          the first 8             best verifier score    + their probe tokens
    verifier-vote-8   sc16          the first 8             score-weighted vote    + their probe tokens
    certaindex-1      cdx8          sample 0                its answer             + its probe tokens
    certaindex-8      cdx8          all 8                   majority vote          + their probe tokens
    auto-s0..-s2      auto-s0..-s2  what the server ran     the server's answer    ttc.tokens.total
    greedy-small/-large             the one sample          its answer             its tokens
    pass@N (ceiling)  sc16          the first N             correct if any is      as majority-N

A sample's `tokens` are every token it generated (thinking, answer, and, for a sample
stopped early, the wasted ones); prompt tokens are not counted. The votes mirror the
server's (src/aggregate/vote.rs): samples without an answer do not vote; equal weights go
to the answer first given by the lowest sample index; best-score ranks by score
(unscored lowest), then mean logprob, ties to the lowest index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import runs as rn
from runs import FIXED_N
from scoring import is_correct


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # majority | verifier | certaindex | auto | greedy | pass
    run: str  # the run it is derived from
    n: int | None  # samples it uses (None: as many as the server launched)
    ttc_note: str  # how it is obtained, for the report's policy table


def policy_table() -> list[Policy]:
    """Every policy in report order (pass@N last: a ceiling, not a policy)."""
    table = [Policy(f"majority-{n}", "majority", "sc16", n,
                    f"first {n} of the 16 samples, majority vote") for n in FIXED_N]
    table += [
        Policy("best-of-8-score", "verifier", "sc16", 8,
               "first 8 samples, the answer of the best self-verification score"),
        Policy("verifier-vote-8", "verifier", "sc16", 8,
               "first 8 samples, votes weighted by self-verification score"),
        Policy("certaindex-1", "certaindex", "cdx8", 1,
               "sample 0 of the certaindex run (1-sample shape)"),
        Policy("certaindex-8", "certaindex", "cdx8", 8,
               "all 8 samples of the certaindex run, majority vote"),
        *(Policy(f"auto-s{k}", "auto", f"auto-s{k}", None, f'strategy "auto", n 16, seed {k}')
          for k in rn.AUTO_SEEDS),
        Policy("greedy-small", "greedy", "greedy-small", 1, "1 sample, temperature 0"),
        Policy("greedy-large", "greedy", "greedy-large", 1,
               "1 sample, temperature 0, the large model"),
        Policy("auto-large", "auto", "auto-large", None,
               'strategy "auto", n 16, seed 0, the large model'),
    ]
    table += [Policy(f"pass@{n}", "pass", "sc16", n,
                     f"first {n} samples: correct when any of them is") for n in FIXED_N]
    return table


def _ordered(samples: list[dict]) -> list[dict]:
    return sorted(samples, key=lambda s: s["index"])


def weighted_vote(samples: list[dict], weight) -> str | None:
    """The heaviest answer key; ties -> the key first given by the lowest sample index."""
    hist: dict[str, float] = {}
    for s in _ordered(samples):
        if s["answer"] is not None:
            hist[s["answer"]] = hist.get(s["answer"], 0.0) + weight(s)
    best, best_w = None, -math.inf
    for key, w in hist.items():  # insertion order = first appearance
        if w > best_w:
            best, best_w = key, w
    return best


def majority(samples: list[dict]) -> str | None:
    return weighted_vote(samples, lambda s: 1.0)


def _score_weight(s: dict) -> float:
    score = s.get("score")
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return 0.0
    return min(max(float(score), 0.0), 1.0)


def verifier_vote(samples: list[dict]) -> str | None:
    return weighted_vote(samples, _score_weight)


def best_by_score(samples: list[dict]) -> str | None:
    """The answer of the answered sample with the best score, then mean logprob."""

    def rank(s):
        score = s.get("score")
        lp = s.get("mean_logprob")
        return (-math.inf if score is None else score, -math.inf if lp is None else lp)

    best = None
    for s in _ordered(samples):
        if s["answer"] is not None and (best is None or rank(s) > rank(best)):
            best = s
    return None if best is None else best["answer"]


def first_n(row: dict, n: int) -> list[dict]:
    """The samples with index < n (the samples an n-sample request would have run)."""
    samples = [s for s in row["samples"] if s["index"] < n]
    if len(samples) != n:
        raise ValueError(f"run {row['run']} problem {row['problem']}: {len(samples)} samples "
                         f"below index {n}, expected {n}")
    return samples


def sample_tokens(samples: list[dict], with_probes: bool) -> int:
    """Tokens the samples generated, plus their probes' tokens when `with_probes`."""
    return sum(s["tokens"] + ((s.get("probe_tokens") or 0) if with_probes else 0)
               for s in samples)


def _outcome(policy: Policy, row: dict) -> tuple[str | None, bool, int, list[dict]]:
    """(answer, correct, tokens, samples used) of `policy` on one successful run row."""
    expected = row["expected"]
    if policy.kind in ("auto", "greedy"):
        samples = row["samples"]
        return row["answer"], is_correct(row["answer"], expected), row["tokens"]["total"], samples
    samples = first_n(row, policy.n)
    if policy.kind == "pass":
        correct = any(is_correct(s["answer"], expected) for s in samples)
        return None, correct, sample_tokens(samples, False), samples
    if policy.name == "best-of-8-score":
        answer = best_by_score(samples)
    elif policy.name == "verifier-vote-8":
        answer = verifier_vote(samples)
    else:
        answer = majority(samples)
    with_probes = policy.kind in ("verifier", "certaindex")
    return answer, is_correct(answer, expected), sample_tokens(samples, with_probes), samples


def derive(policy: Policy, row: dict) -> dict:
    """One policy result (one problem) from its run's row; a failed request is wrong and
    has no token count."""
    out = {"policy": policy.name, "kind": policy.kind, "problem": row["problem"],
           "level": row["level"], "answer": None, "correct": False, "tokens": None,
           "samples": None, "reasoning_tokens": None, "probe_tokens": None,
           "exits": None, "latency_s": row.get("latency_s"), "error": row["error"]}
    if row["error"] is not None:
        return out
    answer, correct, tokens, used = _outcome(policy, row)
    out.update(answer=answer, correct=correct, tokens=tokens, samples=len(used),
               reasoning_tokens=sum(s["reasoning_tokens"] or 0 for s in used),
               probe_tokens=sum(s.get("probe_tokens") or 0 for s in used),
               exits=sum(s.get("certaindex_exit_at") is not None for s in used))
    return out


def derive_all(run_rows: dict[str, list[dict]]) -> tuple[list[Policy], list[dict]]:
    """The policies whose run is present, and their results (every problem of the run)."""
    policies = [p for p in policy_table() if p.run in run_rows]
    results = [derive(p, row) for p in policies for row in run_rows[p.run]]
    return policies, results
