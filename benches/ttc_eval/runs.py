"""The runs of the evaluation: which requests go to the server, one per problem per run.

One run serves many policies (policies.py derives them offline):

  sc16            self_consistency, n = min_samples = 16, scorer self_verify. Sample i's
                  random stream depends only on (request seed, i) (the server's
                  `sample_seed(seed, i)`; a token is `uniform(sample seed, step)`), and
                  verification probes are greedy and run on forks, so the first N samples
                  of this request are exactly the samples of an N-sample request: fixed-N
                  majority (N = 1, 2, 4, 8, 16), best-of-8 by verifier score, the
                  verifier-weighted vote at N = 8 and pass@N all come from it. The `check`
                  run tests that claim on a few problems.
  cdx8            the fixed-8 shape with certaindex early exit; its sample 0 is the 1-sample
                  certaindex policy (checked by `check` too).
  auto-s0..-s2    strategy "auto" (the server decides), three request seeds, with the
                  policy's parameters spelled out (AUTO: the server's defaults, so that the
                  results JSON records what ran). A server that does not know "auto"
                  answers 400: the run is skipped with that message.
  auto-large      the same on the large model, seed 0 (a confirmation run).
  greedy          1 sample at temperature 0, on the small model (the baseline) and on the
                  large one (run `greedy-large`, its own server).
  check           real fixed-N requests (N = 1, 4, 8, plain majority, no scorer) and a real
                  1-sample certaindex request on the first CHECK_PROBLEMS problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from problems import EXAMPLES, SYSTEM_PROMPT, Problem

# How every request reads and compares answers. The system prompt asks for "The answer is
# N." after the thinking; `last_number` of the content (the text after </think>) reads it
# and also accepts an answer given as a bare number or with units after it.
COMMON_TTC = {"extract": "last_number", "equivalence": "numeric"}

# Sampling of every sampled request (why: docs/ttc-eval.md, "Sampling").
SAMPLING = {
    "temperature": 0.7,
    "top_p": 0.8,
    "max_completion_tokens": 512,
    "thinking_token_budget": 448,
}
GREEDY = {**SAMPLING, "temperature": 0.0}

# Certaindex: the server's defaults. Probe the intermediate answer every 32 thinking tokens
# (at most 16 answer tokens per probe), end the thinking once 2 probes in a row agree.
# (A sweep of probe_every 16 / 32 / 48 on 20 problems: README.md, "Certaindex".)
CERTAINDEX = {"probe_every": 32, "agree": 2, "max_tokens": 16}

FIXED_N = (1, 2, 4, 8, 16)
CHECK_N = (1, 4, 8)
CHECK_PROBLEMS = 5
# The `auto` policy's parameters (`ttc.auto`): the server's defaults (src/budget/strategy.rs,
# `AutoPolicy`), chosen by replaying sc16's samples of the even-numbered problems.
AUTO = {"first": 2, "wave": 1, "confidence": 0.8, "hopeless_after": 3, "hopeless_share": 0.51}
# ... and the server's default aggregation of `auto`: votes weigh exp(mean token logprob).
AUTO_AGGREGATION = "confidence_weighted"

# The `auto` runs' request seeds: seed + AUTO_SEED_STEP * k (mod 2^31) for k in AUTO_SEEDS.
# k = 0 draws sc16's samples (where the parameters were chosen); 1 and 2 draw new ones.
AUTO_SEED_STEP = 1_000_003
AUTO_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Run:
    """One request per problem, all with the same shape."""

    name: str
    model: str  # "small" | "large": which server answers it
    ttc: dict = field(hash=False)
    sampling: dict = field(hash=False)
    seed_index: int = 0  # 0: the problem's seed; k: seed + k * AUTO_SEED_STEP
    optional: bool = False  # a 400 skips the run instead of failing it


def _sc(n: int, **extra) -> dict:
    return {"strategy": "self_consistency", "n": n, "min_samples": n,
            "aggregation": "majority", **extra, **COMMON_TTC}


def all_runs(certaindex: dict | None = None) -> list[Run]:
    """Every run in execution order (the small model's first, then the large one's);
    `certaindex` replaces CERTAINDEX."""
    certaindex = certaindex or CERTAINDEX
    return [
        Run("sc16", "small", _sc(16, scorer="self_verify"), SAMPLING),
        Run("cdx8", "small", _sc(8, certaindex=certaindex), SAMPLING),
        *(Run(f"auto-s{k}", "small", {"strategy": "auto", "n": 16, "auto": AUTO,
                                      "aggregation": AUTO_AGGREGATION, **COMMON_TTC},
              SAMPLING, seed_index=k, optional=True) for k in AUTO_SEEDS),
        Run("greedy-small", "small", _sc(1), GREEDY),
        Run("greedy-large", "large", _sc(1), GREEDY),
        # the confirmation run on the large model (seed 0, the server's `auto` defaults)
        Run("auto-large", "large", {"strategy": "auto", "n": 16, "auto": AUTO,
                                    "aggregation": AUTO_AGGREGATION, **COMMON_TTC},
            SAMPLING, seed_index=0, optional=True),
    ]


def check_runs(certaindex: dict | None = None) -> list[Run]:
    """The real requests that the subsampling claim is checked against."""
    certaindex = certaindex or CERTAINDEX
    fixed = [Run(f"check-fixed-{n}", "small", _sc(n), SAMPLING) for n in CHECK_N]
    return fixed + [Run("check-cdx1", "small", _sc(1, certaindex=certaindex), SAMPLING)]


# Groups of runs the command line selects with --runs.
GROUPS = {
    "main": ("sc16",),
    "certaindex": ("cdx8",),
    "auto": tuple(f"auto-s{k}" for k in AUTO_SEEDS),
    "greedy": ("greedy-small",),
    "large": ("greedy-large",),
    "auto-large": ("auto-large",),
    "check": tuple(r.name for r in check_runs()),
}
DEFAULT_GROUPS = ("main", "certaindex", "auto", "greedy", "large", "auto-large", "check")


def select(groups: str | None, certaindex: dict | None = None) -> list[Run]:
    """The runs of a comma list of groups (default: all), in execution order."""
    wanted = DEFAULT_GROUPS if not groups else tuple(g.strip() for g in groups.split(",")
                                                     if g.strip())
    unknown = [g for g in wanted if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown run groups {unknown}; known: {list(GROUPS)}")
    names = {n for g in wanted for n in GROUPS[g]}
    runs = [r for r in all_runs(certaindex) + check_runs(certaindex) if r.name in names]
    # the large model's runs last: one server switch
    return sorted(runs, key=lambda r: r.model == "large")


def request_seed(problem: Problem, run: Run) -> int:
    return (problem.seed + run.seed_index * AUTO_SEED_STEP) % (1 << 31)


def messages(problem: Problem) -> list[dict]:
    """System message, the worked examples as earlier turns, then the problem."""
    out = [{"role": "system", "content": SYSTEM_PROMPT}]
    for question, answer in EXAMPLES:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out + [{"role": "user", "content": problem.prompt}]


def request_body(model: str, problem: Problem, run: Run) -> dict:
    """The JSON body of POST /v1/chat/completions for one (problem, run)."""
    return {
        "model": model,
        "messages": messages(problem),
        **run.sampling,
        "seed": request_seed(problem, run),
        "ttc": run.ttc,
    }
