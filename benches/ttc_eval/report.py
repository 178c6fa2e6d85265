"""Writers: raw results JSON, the markdown report and the Pareto plot.

Each writer takes plain data (`doc`: meta, runs, summary rows, checks) and one output
path, and creates the parent directory when needed. The markdown is built section by
section (one small function each) so a section can be read on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from scoring import REFERENCE  # noqa: E402

# Where each kind of policy is drawn (marker, colour) and its legend label.
STYLE = {
    "majority": ("o", "tab:blue", "majority of the first N (fixed N)"),
    "pass": ("^", "tab:gray", "pass@N (ceiling, not a policy)"),
    "verifier": ("s", "tab:orange", "verifier at N = 8"),
    "certaindex": ("D", "tab:green", "certaindex"),
    "auto": ("*", "tab:red", "auto"),
    "greedy": ("P", "tab:purple", "greedy, 1 sample"),
}


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: str | Path, doc: dict) -> Path:
    path = _prepare(path)
    path.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _fmt(x, spec: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1))
           + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _params(doc: dict, policy: dict) -> int | None:
    """Parameters of the model that ran `policy` (tied embeddings counted once)."""
    run_name = next((p["run"] for p in doc.get("policies", []) if p["name"] == policy["policy"]),
                    None)
    run = next((r for r in doc.get("runs", []) if r["name"] == run_name), None)
    role = run["model"] if run else "small"
    info = doc["meta"].get("models", {}).get(role)
    return info.get("parameters_tied") if info else None


def section_header(doc: dict) -> list[str]:
    m = doc["meta"]
    out = ["# ttc evaluation: accuracy vs generated tokens on a real model", ""]
    if m.get("validation_note"):
        out += [f"> {m['validation_note']}", ""]
    keys = (("date", "Date (UTC, last invocation)"), ("command", "Command"),
            ("git_commit", "Commit (last invocation; each run's own is in the runs table)"),
            ("host", "Host"), ("problems", "Problems"), ("seed", "Seed"),
            ("concurrency", "Concurrency"), ("sampling", "Sampling"),
            ("greedy_sampling", "Greedy sampling"), ("certaindex", "Certaindex"),
            ("template", "Chat template"), ("system_prompt", "System prompt"),
            ("bootstrap", "Bootstrap"), ("wall_s", "Wall time of the runs (s)"))
    for key, label in keys:
        if m.get(key) not in (None, ""):
            value = m[key]
            value = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
            out.append(f"- {label}: `{value}`")
    for role, info in sorted(m.get("models", {}).items(), key=lambda kv: kv[0] != "small"):
        out.append(f"- Model ({role}): `{info['file']}` ({info['name']}, {info['bytes']:,} "
                   f"bytes, sha256 `{info['sha256']}`), {info['parameters_tied'] / 1e6:.0f}M "
                   f"parameters ({info['parameters'] / 1e6:.0f}M tensors in the file)")
    for role, cmd in sorted(m.get("servers", {}).items(), key=lambda kv: kv[0] != "small"):
        out.append(f"- Server ({role}): `{cmd}`")
    for role, bits in sorted(m.get("activation_bits", {}).items(), key=lambda kv: kv[0] != "small"):
        out.append(f"- CPU GEMM activations ({role}): "
                   + (f"{bits}-bit" if bits else "not logged (not the CPU backend)"))
    return out + [""]


def section_runs(doc: dict) -> list[str]:
    out = ["## Runs", ""]
    rows = []
    for r in doc["runs"]:
        rows.append([f"`{r['name']}`", r["model"], f"`{json.dumps(r['ttc'], sort_keys=True)}`",
                     str(r.get("requests", 0)), str(r.get("errors", 0)),
                     _fmt(r.get("wall_s"), ".0f"), r.get("date") or "", r.get("git_commit") or "",
                     r.get("status", "")])
    out += _table(["run", "model", "ttc", "requests", "errors", "wall (s)", "finished (UTC)",
                   "commit", "status"], rows)
    return out + [""]


def section_policies(doc: dict) -> list[str]:
    rows = [r for r in doc["summary"] if r["kind"] != "pass"]
    levels = sorted({lv for r in rows for lv in r["per_level"]}, key=int)
    walls = {r["name"]: r.get("wall_s") for r in doc["runs"]}
    source = {p["name"]: p for p in doc["policies"]}
    head = ["policy", "accuracy", "95% CI", "tokens / problem", f"vs {REFERENCE}",
            "samples", "thinking / sample", "compute (1e9 param-tokens)"]
    head += [f"acc {lv} steps" for lv in levels] + ["run", "run wall (s)", "errors"]
    table = []
    for r in rows:
        lo, hi = r["ci"]
        params = _params(doc, r)
        compute = r["mean_tokens"] * params / 1e9 if params else float("nan")
        run = source[r["policy"]]["run"]
        cells = [f"`{r['policy']}`", f"{r['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]",
                 _fmt(r["mean_tokens"], ".1f"), _fmt(r["rel_tokens"], ".2f"),
                 _fmt(r["mean_samples"], ".2f"), _fmt(r["reasoning_per_sample"], ".1f"),
                 _fmt(compute, ".1f")]
        cells += [_fmt(r["per_level"].get(lv, r["per_level"].get(str(lv))), ".2f")
                  for lv in levels]
        cells += [f"`{run}`", _fmt(walls.get(run), ".0f"), str(r["errors"])]
        table.append(cells)
    out = ["## Policies", ""] + _table(head, table)
    out += ["", "Tokens: every generated token of the samples a policy uses (thinking, answer "
            "and wasted), plus their probe tokens for the verifier and certaindex policies; "
            "prompt tokens are not counted. Compute = model parameters (tied embeddings once) "
            "x tokens. Policies derived from one run share its wall time. A failed request "
            "counts as wrong.", ""]
    out += ["| policy | how |", "|---|---|"]
    out += [f"| `{p['name']}` | {p['ttc_note']} |" for p in doc["policies"]
            if p["kind"] != "pass"]
    return out + [""]


def section_pass(doc: dict) -> list[str]:
    rows = [r for r in doc["summary"] if r["kind"] == "pass"]
    if not rows:
        return []
    maj = {r["policy"].split("-")[1]: r for r in doc["summary"] if r["kind"] == "majority"}
    table = []
    for r in rows:
        n = r["policy"].split("@")[1]
        lo, hi = r["ci"]
        m = maj.get(n)
        table.append([n, f"{r['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]",
                      _fmt(m["accuracy"] if m else None, ".3f")])
    out = ["## pass@N (any of the first N samples correct: the ceiling of a perfect selector)",
           ""] + _table(["N", "pass@N", "95% CI", "majority of N"], table)
    if doc.get("sample_accuracy") is not None:
        out += ["", f"Mean per-sample accuracy over all samples of `sc16`: "
                f"{doc['sample_accuracy']:.3f}."]
    return out + [""]


def section_verifier(doc: dict) -> list[str]:
    v = doc.get("verifier")
    if not v:
        return []
    return ["## Verifier signal (self-verification scores of the `sc16` samples)", "",
            f"Answered samples: {v['right']} right, {v['wrong']} wrong. Mean score "
            f"{_fmt(v['mean_right'], '.3f')} right, {_fmt(v['mean_wrong'], '.3f')} wrong; "
            f"scores range {v['min']:.3f}..{v['max']:.3f}; AUROC (right above wrong) "
            f"{_fmt(v['auroc'], '.3f')} (0.5 = no signal).", ""]


def section_certaindex(doc: dict) -> list[str]:
    by = {r["policy"]: r for r in doc["summary"]}
    pairs = [("1 sample", "majority-1", "certaindex-1"), ("8 samples", "majority-8",
                                                          "certaindex-8")]
    table = []
    for shape, base, cdx in pairs:
        if cdx not in by or base not in by:
            continue
        b, c = by[base], by[cdx]
        table.append([shape, f"{b['accuracy']:.3f}", f"{c['accuracy']:.3f}",
                      _fmt(b["reasoning_per_sample"], ".1f"),
                      _fmt(c["reasoning_per_sample"], ".1f"),
                      _fmt(b["mean_tokens"], ".1f"), _fmt(c["mean_tokens"], ".1f"),
                      _fmt(c["probe_per_1k_thinking"], ".0f"), _fmt(c["exit_share"], ".2f")])
    if not table:
        return []
    head = ["shape", "acc without", "acc with", "thinking / sample without",
            "thinking / sample with", "tokens / problem without", "tokens / problem with",
            "probe tokens per 1,000 thinking", "samples exited"]
    return (["## Certaindex early exit against the same shape without it", ""]
            + _table(head, table)
            + ["", "Without = the same samples (same seeds) from `sc16` (the first 1 or 8), "
               "where certaindex never ran; tokens with = samples' tokens + probe tokens.",
               ""])


def section_checks(doc: dict) -> list[str]:
    checks = doc.get("checks") or []
    if not checks:
        return []
    table = [[f"`{c['run']}`", c["against"], str(c["problems"]),
              f"{c['identical']}/{c['samples']}", f"{c['answers_equal']}/{c['problems']}"]
             for c in checks]
    out = ["## Subsampling check (real requests against the derived samples)", ""]
    out += _table(["real run", "derived from", "problems", "identical samples",
                   "same answer"], table)
    bad = [d for c in checks for d in c["details"]]
    out += ["", "Compared per sample: answer key, tokens, reasoning tokens, mean logprob "
            "(and probe tokens and the exit point for certaindex)."]
    if bad:
        out += ["", f"**{len(bad)} problem(s) differ**; details in the results JSON."]
    return out + [""]


def section_skipped(doc: dict) -> list[str]:
    skipped = [r for r in doc["runs"] if r.get("status", "").startswith("skipped")]
    if not skipped:
        return []
    out = ["## Skipped runs", ""]
    out += [f"- `{r['name']}`: {r['status']}" for r in skipped]
    return out + [""]


def markdown(doc: dict) -> str:
    parts = (section_header, section_policies, section_pass, section_verifier,
             section_certaindex,
             section_checks, section_skipped, section_runs)
    out: list[str] = []
    for part in parts:
        out += part(doc)
    notes = doc["meta"].get("notes")
    if notes:
        out += ["## Notes", "", notes.strip(), ""]
    return "\n".join(out)


def write_markdown(path: str | Path, doc: dict) -> Path:
    path = _prepare(path)
    path.write_text(markdown(doc))
    return path


def _draw(ax, rows: list[dict], x_of) -> None:
    """Accuracy (95% CI bars) against x_of(row), one series per policy kind."""
    for kind, (marker, color, label) in STYLE.items():
        rs = sorted((r for r in rows if r["kind"] == kind and x_of(r)), key=x_of)
        if not rs:
            continue
        x = [x_of(r) for r in rs]
        y = [r["accuracy"] for r in rs]
        err = [[max(0.0, r["accuracy"] - r["ci"][0]) for r in rs],
               [max(0.0, r["ci"][1] - r["accuracy"]) for r in rs]]
        connect = kind in ("majority", "pass")
        ax.errorbar(x, y, yerr=err, fmt=marker, color=color, capsize=3, label=label,
                    linestyle="-" if connect else "none", markersize=6, alpha=0.9)
        # one label per point (policies on the same point joined), alternating heights
        labels: dict[tuple[float, float], list[str]] = {}
        for r, xi, yi in zip(rs, x, y):
            labels.setdefault((xi, yi), []).append(r["policy"])
        for i, ((xi, yi), names) in enumerate(labels.items()):
            ax.annotate(" = ".join(names), (xi, yi), textcoords="offset points",
                        xytext=(5, (4, -11, 12)[i % 3]), fontsize=7, color=color)


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (cost, accuracy, name) points no other point beats (cheaper or as cheap, and at
    least as accurate, one of them strictly), by increasing cost."""
    front: list[tuple[float, float, str]] = []
    for x, y, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y, name))
    return front


def _draw_front(ax, rows: list[dict], x_of) -> None:
    """The Pareto frontier of the policies (pass@N excluded: not a policy) as a dashed step."""
    front = pareto_front([(x_of(r), r["accuracy"], r["policy"]) for r in rows
                          if r["kind"] != "pass" and x_of(r)])
    if front:
        xs = [p[0] for p in front]
        ys = [p[1] for p in front]
        ax.step(xs + [xs[-1] * 1.5], ys + [ys[-1]], where="post", color="black",
                linestyle="--", linewidth=0.8, alpha=0.6, label="Pareto frontier")


def _axis(ax, xlabel: str) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)


def write_plot(path: str | Path, doc: dict) -> Path:
    """Left: accuracy vs mean generated tokens per problem; right: vs compute
    (parameters x tokens), where the large model's greedy run sits."""
    path = _prepare(path)
    rows = [r for r in doc["summary"]
            if r["mean_tokens"] > 0 and not math.isnan(r["mean_tokens"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110)
    small = [r for r in rows if r["policy"] != "greedy-large"]
    _draw(left, small, lambda r: r["mean_tokens"])
    _draw_front(left, small, lambda r: r["mean_tokens"])
    _axis(left, "mean generated tokens per problem (probe + wasted incl.; log)")
    left.set_ylabel("accuracy (95% bootstrap CI)")
    left.set_title("small model: accuracy vs tokens")
    def compute(r):
        return (r["mean_tokens"] * (_params(doc, r) or 0)) / 1e9

    _draw(right, [r for r in rows if r["kind"] != "pass"], compute)
    _draw_front(right, rows, compute)
    _axis(right, "compute per problem: parameters x tokens (1e9; log)")
    right.set_title("accuracy vs compute (incl. the large model)")
    handles, labels = left.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    for h, lab in zip(h2, l2):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, framealpha=0.85)
    fig.suptitle(doc["meta"].get("title", "ttc evaluation"), fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path
