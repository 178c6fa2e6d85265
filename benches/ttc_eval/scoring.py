"""Scoring: answer parsing, bootstrap confidence intervals, per-policy summary, verdict.

Conventions:
  - A result is correct when `ttc.answer` parses to exactly the expected integer
    (Fraction arithmetic: "12", "12.0", "$12", "12%", "24/2" and "1.2e1" are all 12;
    null or unparsable is wrong).
  - A request that errored counts as wrong in the accuracy (the denominator is always
    every problem), and its tokens are unknown: mean tokens are over the requests
    that succeeded. Error counts are shown next to every row.
  - The bootstrap resamples problems with replacement (`resamples` draws, seeded);
    the index matrix depends only on (number of problems, seed), so every policy is
    resampled with the same draws (a paired bootstrap). CI = the 2.5 / 97.5 percentiles
    (numpy's linear interpolation) of the resampled accuracies.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np

from policies import REFERENCE

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


def summarize(results: list[dict], policy_order: list[str], resamples: int = 2000,
              seed: int = 0) -> list[dict]:
    """One row per policy (in `policy_order`, skipping policies without results)."""
    rows = []
    for name in policy_order:
        rs = sorted((r for r in results if r["policy"] == name), key=lambda r: r["problem"])
        if not rs:
            continue
        correct = [bool(r["correct"]) for r in rs]
        ok = [r for r in rs if r["error"] is None]
        tokens = [r["completion_tokens"] for r in ok]
        launched = [r["samples_launched"] for r in ok if r["samples_launched"] is not None]
        latency = [r["latency_s"] for r in ok if r["latency_s"] is not None]
        per_level = {}
        for level in sorted({r["level"] for r in rs}):
            lv = [bool(r["correct"]) for r in rs if r["level"] == level]
            per_level[level] = sum(lv) / len(lv)
        rows.append({
            "policy": name,
            "kind": rs[0]["kind"],
            "problems": len(rs),
            "errors": len(rs) - len(ok),
            "accuracy": sum(correct) / len(correct),
            "ci": bootstrap_ci(correct, resamples, seed),
            "mean_tokens": float(np.mean(tokens)) if tokens else float("nan"),
            "mean_samples": float(np.mean(launched)) if launched else float("nan"),
            "p50_latency_s": float(np.median(latency)) if latency else float("nan"),
            "per_level": per_level,
        })
    ref = next((r for r in rows if r["policy"] == REFERENCE), None)
    for r in rows:
        ok_ref = ref is not None and ref["mean_tokens"] > 0
        r["rel_tokens"] = r["mean_tokens"] / ref["mean_tokens"] if ok_ref else float("nan")
    return rows


def verdict(rows: list[dict], max_rel_tokens: float = 0.5) -> str:
    """Does an adaptive policy reach the reference's accuracy (>= the lower end of its CI)
    with <= `max_rel_tokens` of its tokens? Names the best such policy (highest accuracy,
    then fewest tokens), or, if none, the best adaptive policy by accuracy."""
    ref = next((r for r in rows if r["policy"] == REFERENCE), None)
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    if ref is None or not adaptive:
        return f"Verdict: n/a (needs {REFERENCE} and at least one adaptive policy)."
    lo, hi = ref["ci"]
    best_key = lambda r: (-r["accuracy"], r["mean_tokens"])  # noqa: E731
    passing = [r for r in adaptive
               if r["accuracy"] >= lo and r["rel_tokens"] <= max_rel_tokens]
    pct = f"{100 * max_rel_tokens:.0f}%"
    ref_txt = f"{REFERENCE} accuracy {ref['accuracy']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]"
    if passing:
        b = min(passing, key=best_key)
        return (f"Verdict: YES. `{b['policy']}` reaches {b['accuracy']:.3f} (within {ref_txt}) "
                f"using {100 * b['rel_tokens']:.0f}% of {REFERENCE}'s tokens (<= {pct}).")
    b = min(adaptive, key=best_key)
    why = []
    if b["accuracy"] < lo:
        why.append("accuracy below the CI")
    if not b["rel_tokens"] <= max_rel_tokens:
        why.append(f"tokens above {pct}")
    return (f"Verdict: NO. Best adaptive policy `{b['policy']}`: accuracy {b['accuracy']:.3f} "
            f"({ref_txt}) using {100 * b['rel_tokens']:.0f}% of {REFERENCE}'s tokens "
            f"({', '.join(why)}).")
