"""Scoring: answer parsing, bootstrap confidence intervals and the per-policy summary.

Conventions:
  - An answer is correct when it parses to exactly the expected integer (Fraction
    arithmetic: "12", "12.0", "$12", "12%", "24/2" and "1.2e1" are all 12; null or
    unparsable is wrong).
  - A request that failed counts as wrong (the denominator is always every problem), and
    its tokens are unknown: token means are over the requests that succeeded. Error counts
    are shown next to every row.
  - The bootstrap resamples problems with replacement (`resamples` draws, seeded); the
    index matrix depends only on (number of problems, seed), so every policy is resampled
    with the same draws (a paired bootstrap). CI = the 2.5 / 97.5 percentiles (numpy's
    linear interpolation) of the resampled accuracies.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np

# The policy that "tokens vs" compares with.
REFERENCE = "majority-8"

_GROUPED = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
_FRAC = re.compile(r"([-+]?)\s*\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def parse_answer(answer: object) -> Fraction | None:
    """The exact value of an answer string, or None: optional surrounding `$`, a trailing
    `.` or `%`, "1,234" grouping, a decimal / exponent, `a/b`, or `\\frac{a}{b}`."""
    if answer is None:
        return None
    s = str(answer).strip().replace("\u2212", "-")
    s = s.strip("$").strip().rstrip(".").strip()
    s = s.removesuffix("\\%").removesuffix("%").strip()
    if _GROUPED.match(s):
        s = s.replace(",", "")
    try:
        m = _FRAC.fullmatch(s)
        if m:
            value = Fraction(m.group(2).strip()) / Fraction(m.group(3).strip())
            return -value if m.group(1) == "-" else value
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(num.strip()) / Fraction(den.strip())
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def is_correct(answer: object, expected: int) -> bool:
    value = parse_answer(answer)
    return value is not None and value == expected


def bootstrap_ci(correct, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of a 0/1 vector (over problems)."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return (float(lo), float(hi))


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def summarize_policy(name: str, rs: list[dict], resamples: int, seed: int) -> dict:
    """One summary row from one policy's per-problem results."""
    rs = sorted(rs, key=lambda r: r["problem"])
    correct = [bool(r["correct"]) for r in rs]
    ok = [r for r in rs if r["error"] is None]
    samples = sum(r["samples"] for r in ok)
    thinking = sum(r["reasoning_tokens"] for r in ok)
    per_level = {}
    for level in sorted({r["level"] for r in rs}):
        lv = [bool(r["correct"]) for r in rs if r["level"] == level]
        per_level[level] = sum(lv) / len(lv)
    return {
        "policy": name,
        "kind": rs[0]["kind"],
        "problems": len(rs),
        "errors": len(rs) - len(ok),
        "accuracy": sum(correct) / len(correct),
        "ci": bootstrap_ci(correct, resamples, seed),
        "mean_tokens": _mean(r["tokens"] for r in ok),
        "mean_samples": samples / len(ok) if ok else float("nan"),
        "reasoning_per_sample": thinking / samples if samples else float("nan"),
        "mean_probe_tokens": _mean(r["probe_tokens"] for r in ok),
        "probe_per_1k_thinking": (1000.0 * sum(r["probe_tokens"] for r in ok) / thinking
                                  if thinking else float("nan")),
        "exit_share": sum(r["exits"] for r in ok) / samples if samples else float("nan"),
        "per_level": per_level,
    }


def summarize(results: list[dict], policy_order: list[str], resamples: int = 2000,
              seed: int = 0) -> list[dict]:
    """One row per policy (in `policy_order`, skipping policies without results), with
    `rel_tokens` = mean tokens / the REFERENCE policy's."""
    rows = []
    for name in policy_order:
        rs = [r for r in results if r["policy"] == name]
        if rs:
            rows.append(summarize_policy(name, rs, resamples, seed))
    ref = next((r for r in rows if r["policy"] == REFERENCE), None)
    for r in rows:
        ok_ref = ref is not None and ref["mean_tokens"] > 0
        r["rel_tokens"] = r["mean_tokens"] / ref["mean_tokens"] if ok_ref else float("nan")
    return rows


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half (the
    Mann-Whitney statistic); NaN when either list is empty."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def verifier_signal(rows: list[dict]) -> dict | None:
    """How well self-verification scores separate right from wrong answered samples in
    the result rows of a scored run (None when no sample has a score)."""
    right, wrong = [], []
    for row in rows:
        if row["error"] is not None:
            continue
        for s in row["samples"]:
            if s["answer"] is None or s.get("score") is None:
                continue
            (right if is_correct(s["answer"], row["expected"]) else wrong).append(s["score"])
    if not right and not wrong:
        return None
    scores = right + wrong
    return {"right": len(right), "wrong": len(wrong),
            "mean_right": float(np.mean(right)) if right else float("nan"),
            "mean_wrong": float(np.mean(wrong)) if wrong else float("nan"),
            "min": min(scores), "max": max(scores), "auroc": auroc(right, wrong)}
