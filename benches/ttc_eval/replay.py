"""Replays the `auto` policy offline on the 16 samples per problem of the `sc16` run, to choose
its parameters without spending a server run per setting.

    python benches/ttc_eval/replay.py [docs/ttc-eval/results.json] [--grid]

Sample i of an `auto` request with the problem's seed is sample i of `sc16` (the random stream
depends only on (seed, i); runs.py), so the replay sees the answers and token counts that a
real request would, with two approximations: the samples of a wave start together and finish
in order of their token counts (a sample stopped early is charged the tokens it had when the
deciding sample finished), and a later wave's thinking budget never doubles (sc16's samples
used 104 thinking tokens on average against a budget of 448, so `auto` rarely doubles it).
The rules mirror src/budget/controller.rs: after each counted sample, stop when
P(leader is the majority) = P(Bin(a+b+1, 1/2) <= a) >= confidence; between waves, finish when
at least `hopeless_after` samples are counted and the leader's share of the answered ones is
below `hopeless_share`; otherwise launch `wave` more, up to n. The vote is the server's
(src/aggregate/vote.rs): under `majority` one vote per answered sample, under
`confidence_weighted` a vote weighs exp(mean token logprob); the heaviest answer leads, ties
go to the answer of the lowest sample index; a and b are vote counts, the share is by weight.
`replay()`'s keyword defaults are the earlier server defaults (waves of 2, four answers,
majority); the server's defaults today are the third row of the table `main` prints.

Parameters are chosen on the even-numbered problems (`--grid` prints the best settings there
under a token cap) and checked on the odd-numbered ones, which the choice did not see.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

from scoring import is_correct


def p_majority(a: int, b: int) -> float:
    n = a + b + 1
    c, total = 1.0, 0.0
    for j in range(a + 1):
        if j > 0:
            c = c * (n - j + 1) / j
        total += c
    return total / 2**n


def _weight(sample: dict, aggregation: str) -> float:
    """A vote's weight (src/aggregate/vote.rs): majority 1; confidence_weighted
    exp(min(mean_logprob, 0)), 0 without one."""
    if aggregation == "majority":
        return 1.0
    lp = sample.get("mean_logprob")
    return math.exp(min(lp, 0.0)) if lp is not None else 0.0


def _standing(counted: list[dict], aggregation: str = "majority"
              ) -> tuple[str | None, int, int, int, float]:
    """(leader, its votes, runner-up's votes, answered samples, leader's weight share) as the
    controller's vote sees the counted samples: the heaviest answer wins, ties go to the answer
    given by the lowest sample index; the vote counts are plain counts."""
    weight: dict[str, float] = {}
    votes: dict[str, int] = {}
    first: dict[str, int] = {}
    for s in sorted(counted, key=lambda s: s["index"]):
        k = s["answer"]
        if k is None:
            continue
        weight[k] = weight.get(k, 0.0) + _weight(s, aggregation)
        votes[k] = votes.get(k, 0) + 1
        first.setdefault(k, s["index"])
    if not votes:
        return None, 0, 0, 0, 0.0
    leader = max(weight, key=lambda k: (weight[k], -first[k]))
    runner = max((v for k, v in votes.items() if k != leader), default=0)
    total = sum(weight.values())
    share = weight[leader] / total if total > 0 else 0.0
    return leader, votes[leader], runner, sum(votes.values()), share


def replay(row: dict, first: int = 2, wave: int = 2, confidence: float = 0.8,
           hopeless_after: int = 4, hopeless_share: float = 0.51, n: int = 16,
           aggregation: str = "majority") -> tuple[str | None, int, int]:
    """(answer, tokens generated, samples launched) of `auto` on one sc16 row."""
    samples = sorted(row["samples"], key=lambda s: s["index"])
    counted: list[dict] = []
    launched = tokens = 0
    count = first
    while True:
        wave_idx = list(range(launched, min(launched + count, n)))
        launched += len(wave_idx)
        order = sorted(wave_idx, key=lambda i: (samples[i]["tokens"], i))
        for k, i in enumerate(order):
            counted.append(samples[i])
            leader, a, b, _, _ = _standing(counted, aggregation)
            if leader is not None and p_majority(a, b) >= confidence:
                at = samples[i]["tokens"]
                tokens += sum(samples[j]["tokens"] for j in order[: k + 1])
                tokens += sum(min(samples[j]["tokens"], at) for j in order[k + 1:])
                return leader, tokens, launched
        tokens += sum(samples[i]["tokens"] for i in wave_idx)
        leader, _, _, _, share = _standing(counted, aggregation)
        if launched >= n:
            return leader, tokens, launched
        if len(counted) >= hopeless_after and share < hopeless_share:
            return leader, tokens, launched
        count = wave


def evaluate(rows: list[dict], **params) -> tuple[float, float, float]:
    """(accuracy, mean tokens per problem, mean samples per problem)."""
    acc = tok = launched = 0
    for row in rows:
        answer, t, n = replay(row, **params)
        acc += is_correct(answer, row["expected"])
        tok += t
        launched += n
    k = len(rows)
    return acc / k, tok / k, launched / k


def majority8(rows: list[dict]) -> tuple[float, float]:
    acc = tok = 0
    for row in rows:
        first8 = sorted(row["samples"], key=lambda s: s["index"])[:8]
        leader, *_ = _standing(first8)
        acc += is_correct(leader, row["expected"])
        tok += sum(s["tokens"] for s in first8)
    return acc / len(rows), tok / len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default="docs/ttc-eval/results.json")
    p.add_argument("--grid", action="store_true",
                   help="search the parameters on the even problems (token cap: 40%% of majority-8)")
    args = p.parse_args(argv)
    doc = json.loads(Path(args.results).read_text())
    rows = next(r for r in doc["runs"] if r["name"] == "sc16")["rows"]
    halves = {"even": [r for r in rows if r["problem"] % 2 == 0],
              "odd": [r for r in rows if r["problem"] % 2 == 1], "all": rows}
    if args.grid:
        acc8, tok8 = majority8(halves["even"])
        found = []
        grid = itertools.product(("majority", "confidence_weighted"), (1, 2, 3, 4), (1, 2, 3),
                                 (0.75, 0.8, 0.85, 0.9), (2, 3, 4, 5, 6),
                                 (0.34, 0.5, 0.51, 0.6, 0.67))
        for agg, first, wave, confidence, after, share in grid:
            kw = dict(first=first, wave=wave, confidence=confidence, hopeless_after=after,
                      hopeless_share=share, aggregation=agg)
            a, t, _ = evaluate(halves["even"], **kw)
            if t <= 0.4 * tok8:
                found.append((a, -t, kw))
        found.sort(key=lambda x: (x[0], x[1]), reverse=True)
        print(f"even problems: majority-8 {acc8:.3f} at {tok8:.1f} tokens")
        for a, t, kw in found[:10]:
            print(f"  {a:.3f} at {-t:.1f} tokens: {kw}")
        return 0
    print("| problems | majority-8 acc | majority-8 tokens | wave / confidence / hopeless_after / "
          "hopeless_share / aggregation | auto acc | auto tokens | tokens vs majority-8 | samples |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    settings = {
        "2 / 0.85 / 6 / 0.34 / majority": dict(confidence=0.85, hopeless_after=6,
                                              hopeless_share=0.34),
        "2 / 0.8 / 4 / 0.51 / majority": dict(),
        "1 / 0.8 / 3 / 0.51 / confidence_weighted (default)": dict(
            wave=1, hopeless_after=3, aggregation="confidence_weighted"),
    }
    for half, rs in halves.items():
        acc8, tok8 = majority8(rs)
        for label, kw in settings.items():
            a, t, n = evaluate(rs, **kw)
            print(f"| {half} ({len(rs)}) | {acc8:.3f} | {tok8:.1f} | {label} | {a:.3f} | {t:.1f} "
                  f"| {t / tok8:.2f} | {n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
