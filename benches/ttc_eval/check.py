"""The subsampling claim, checked: the first N samples of the 16-sample request (and
sample 0 of the 8-sample certaindex request) are the samples of a real N-sample request
(a real 1-sample certaindex request) with the same seed.

For every problem of a `check-*` run, the real request's samples are compared field by
field with the derived ones, and its answer with the derived policy's answer.
"""

from __future__ import annotations

from policies import first_n, majority

# run -> (the run it is derived from, samples, fields compared per sample)
_FIELDS = ("answer", "tokens", "reasoning_tokens", "mean_logprob")
CHECKS = {
    "check-fixed-1": ("sc16", 1, _FIELDS),
    "check-fixed-4": ("sc16", 4, _FIELDS),
    "check-fixed-8": ("sc16", 8, _FIELDS),
    "check-cdx1": ("cdx8", 1, _FIELDS + ("probe_tokens", "certaindex_exit_at")),
}


def _by_problem(rows: list[dict]) -> dict[int, dict]:
    return {r["problem"]: r for r in rows if r["error"] is None}


def compare(real: dict, base: dict, n: int, fields: tuple[str, ...]) -> dict:
    """One problem: identical samples, differing fields, and whether the answers agree."""
    derived = first_n(base, n)
    real_samples = sorted(real["samples"], key=lambda s: s["index"])
    diffs = []
    same = 0
    for a, b in zip(real_samples, derived):
        bad = [f for f in fields if a.get(f) != b.get(f)]
        same += not bad
        if bad:
            diffs.append({"index": a["index"], "fields": {f: [a.get(f), b.get(f)] for f in bad}})
    if len(real_samples) != n:
        diffs.append({"index": None, "fields": {"samples": [len(real_samples), n]}})
    return {"problem": real["problem"], "samples": n, "identical": same,
            "answer_real": real["answer"], "answer_derived": majority(derived),
            "diffs": diffs}


def check_all(run_rows: dict[str, list[dict]]) -> list[dict]:
    """One summary per check run whose base run is present."""
    out = []
    for name, (base_name, n, fields) in CHECKS.items():
        if name not in run_rows or base_name not in run_rows:
            continue
        base = _by_problem(run_rows[base_name])
        per_problem = [compare(r, base[p], n, fields)
                       for p, r in sorted(_by_problem(run_rows[name]).items()) if p in base]
        out.append({
            "run": name, "against": f"{base_name}, first {n}", "problems": len(per_problem),
            "samples": sum(c["samples"] for c in per_problem),
            "identical": sum(c["identical"] for c in per_problem),
            "answers_equal": sum(c["answer_real"] == c["answer_derived"] for c in per_problem),
            "details": [c for c in per_problem if c["diffs"]
                        or c["answer_real"] != c["answer_derived"]],
        })
    return out
