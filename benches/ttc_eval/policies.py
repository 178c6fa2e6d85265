"""The policies under test and the request body each one sends.

Edit the tables below to change what is measured. A policy is a name plus the `ttc`
object of POST /v1/chat/completions; fixed-N policies launch exactly N samples
(min_samples = n = N), adaptive ones may stop early.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from problems import Problem

# Answer extraction and equivalence the server uses for every policy.
COMMON_TTC = {
    "extract": "last_number",
    "equivalence": "numeric",
}

# Sampling parameters of every request (the per-problem `seed` is added per request).
SAMPLING = {
    # 0.4: where majority voting helps this model (fixed-8 beats fixed-1); at 0.8 its samples
    # scatter so widely that votes add nothing.
    "temperature": 0.4,
    "top_p": 0.95,
    "max_completion_tokens": 96,
    "stop": ["\n\n"],
}

FIXED_N = (1, 2, 4, 8, 16)

# The reference policy for "tokens relative to" and the verdict.
REFERENCE = "fixed-8"

ADAPTIVE = {
    # ESC with waves of 2 (the `auto` effort preset): stop once 2 consecutive answers agree.
    "esc-2": {
        "strategy": "self_consistency",
        "n": 8,
        "min_samples": 2,
        "esc_window": 2,
        "aggregation": "majority",
    },
    # esc-2 plus a DeepConf-style gate: samples after the first wave stop once their 8-token
    # window mean logprob falls below the median of the first wave's lowest window means.
    "esc-2-gate": {
        "strategy": "self_consistency",
        "n": 8,
        "min_samples": 2,
        "esc_window": 2,
        "confidence_gate": {"window": 8, "percentile": 50},
        "aggregation": "majority",
    },
    # esc-2 plus DeepConf-low's aggressive gate (keep the most confident ~10%): later samples
    # stop once their 8-token window mean logprob falls below the 90th percentile of the
    # first wave's lowest window means.
    "esc-2-deepconf-low": {
        "strategy": "self_consistency",
        "n": 8,
        "min_samples": 2,
        "esc_window": 2,
        "confidence_gate": {"window": 8, "percentile": 90},
        "aggregation": "majority",
    },
    # esc-2 plus difficulty-adaptive stopping: after two waves (4 answers), end the request
    # when the leading answer holds less than 60% of them; scattered answers mean the
    # problem is beyond the model and more votes rarely change the winner.
    "esc-2-agree": {
        "strategy": "self_consistency",
        "n": 8,
        "min_samples": 2,
        "esc_window": 2,
        "min_agreement": {"after": 4, "share": 0.6},
        "aggregation": "majority",
    },
    # esc-2-agree plus the DeepConf-low gate of esc-2-deepconf-low.
    "esc-2-agree-deepconf-low": {
        "strategy": "self_consistency",
        "n": 8,
        "min_samples": 2,
        "esc_window": 2,
        "min_agreement": {"after": 4, "share": 0.6},
        "confidence_gate": {"window": 8, "percentile": 90},
        "aggregation": "majority",
    },
    # Early-stopping self-consistency: stop once the last 4 completed samples agree.
    "esc": {
        "strategy": "self_consistency",
        "n": 16,
        "min_samples": 4,
        "esc_window": 4,
        "aggregation": "majority",
    },
    # Stop once the leading answer holds >= 75% of the votes (after >= 4 samples).
    "consensus": {
        "strategy": "self_consistency",
        "n": 16,
        "min_samples": 4,
        "consensus": 0.75,
        "aggregation": "majority",
    },
    # DeepConf-style: the first wave sets a confidence threshold (10th percentile of
    # the lowest 16-token window mean logprob); later samples falling below it stop.
    "deepconf": {
        "strategy": "self_consistency",
        "n": 16,
        "min_samples": 4,
        "consensus": 0.75,
        "confidence_gate": {"window": 16, "percentile": 10},
        "aggregation": "confidence_weighted",
    },
}


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # "fixed" | "adaptive"
    ttc: dict = field(hash=False)


def all_policies() -> list[Policy]:
    """Fixed-N (ascending N), then the adaptive table in its order."""
    fixed = [
        Policy(
            f"fixed-{n}",
            "fixed",
            {
                "strategy": "self_consistency",
                "n": n,
                "min_samples": n,
                "aggregation": "majority",
                **COMMON_TTC,
            },
        )
        for n in FIXED_N
    ]
    adaptive = [Policy(name, "adaptive", {**ttc, **COMMON_TTC}) for name, ttc in ADAPTIVE.items()]
    return fixed + adaptive


def select(policies: list[Policy], names: str | None) -> list[Policy]:
    """The policies named in a comma list (all when `names` is empty), in table order."""
    if not names:
        return policies
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {p.name for p in policies}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {sorted(known)}")
    return [p for p in policies if p.name in wanted]


def request_body(model: str, problem: Problem, policy: Policy, sampling: dict | None = None) -> dict:
    """The JSON body of POST /v1/chat/completions for one (problem, policy)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": problem.prompt}],
        **(SAMPLING if sampling is None else sampling),
        "seed": problem.seed,
        "ttc": policy.ttc,
    }
