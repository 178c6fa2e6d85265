"""Writers: raw results JSON, the markdown report and the accuracy-vs-tokens plot.

Each writer takes plain data (the rows of `scoring.summarize`, the result rows, a
`meta` dict) and one output path, and creates the parent directory when needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

from policies import REFERENCE  # noqa: E402

# meta keys shown in the report header, in order, with their labels.
META_LABELS = (
    ("date", "Date (UTC)"),
    ("command", "Command"),
    ("server", "Server"),
    ("model", "Model"),
    ("host", "Host"),
    ("git_commit", "Repository commit (eval working tree)"),
    ("problems", "Problems"),
    ("seed", "Seed"),
    ("concurrency", "Concurrency"),
    ("sampling", "Sampling"),
    ("common_ttc", "Answer extraction"),
    ("prompt_template", "Prompt template"),
    ("bootstrap", "Bootstrap"),
    ("wall_s", "Wall time (s)"),
)


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_results_json(path: str | Path, results: list[dict], rows: list[dict],
                       meta: dict, policies: list[dict]) -> Path:
    path = _prepare(path)
    doc = {"meta": meta, "policies": policies, "summary": rows, "results": results}
    path.write_text(json.dumps(doc, indent=1, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(rows: list[dict], verdict: str, meta: dict, policies: list[dict]) -> str:
    levels = sorted({lv for r in rows for lv in r["per_level"]})
    out = ["# ttc evaluation: accuracy vs generated tokens", ""]
    for key, label in META_LABELS:
        if key in meta and meta[key] not in (None, ""):
            value = meta[key]
            if isinstance(value, dict):
                value = json.dumps(value, sort_keys=True)
            out.append(f"- {label}: `{value}`")
    out += ["", f"**{verdict}**", ""]
    head = ["policy", "accuracy", "95% CI", "mean completion tokens / problem",
            f"tokens vs {REFERENCE}", "mean samples launched"]
    head += [f"acc L{lv}" for lv in levels] + ["p50 latency (s)", "errors"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in rows:
        lo, hi = r["ci"]
        cells = [
            f"`{r['policy']}`",
            f"{r['accuracy']:.3f}",
            f"[{lo:.3f}, {hi:.3f}]",
            _fmt(r["mean_tokens"], ".1f"),
            _fmt(r["rel_tokens"], ".2f"),
            _fmt(r["mean_samples"], ".2f"),
        ]
        cells += [_fmt(r["per_level"].get(lv), ".3f") for lv in levels]
        cells += [_fmt(r["p50_latency_s"], ".2f"), str(r["errors"])]
        out.append("| " + " | ".join(cells) + " |")
    errors = sum(r["errors"] for r in rows)
    out += [""]
    if errors:
        out += [f"**{errors} request(s) failed** (counted as wrong; see the raw results "
                "JSON for their status and message).", ""]
    out += ["Accuracy counts every problem (a failed request is wrong); token and latency "
            "means are over the requests that succeeded. Latency depends on the concurrency "
            "and on the other requests in the batch.", ""]
    out += ["## Policies", "", "| policy | ttc |", "|---|---|"]
    out += [f"| `{p['name']}` | `{json.dumps(p['ttc'], sort_keys=True)}` |" for p in policies]
    out.append("")
    return "\n".join(out)


def write_markdown(path: str | Path, rows: list[dict], verdict: str, meta: dict,
                   policies: list[dict]) -> Path:
    path = _prepare(path)
    path.write_text(markdown(rows, verdict, meta, policies))
    return path


def write_plot(path: str | Path, rows: list[dict], title: str = "") -> Path:
    """x = mean completion tokens per problem (log), y = accuracy with 95% CI bars;
    fixed-N as one connected line, adaptive policies as labeled points."""
    path = _prepare(path)
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    usable = [r for r in rows if r["mean_tokens"] > 0 and not math.isnan(r["mean_tokens"])]

    def draw(rs, fmt, label, color, connect, dy=6):
        if not rs:
            return
        x = [r["mean_tokens"] for r in rs]
        y = [r["accuracy"] for r in rs]
        err = [[max(0.0, r["accuracy"] - r["ci"][0]) for r in rs],
               [max(0.0, r["ci"][1] - r["accuracy"]) for r in rs]]
        ax.errorbar(x, y, yerr=err, fmt=fmt, color=color, capsize=3, label=label,
                    linestyle="-" if connect else "none", markersize=6)
        for r, xi, yi in zip(rs, x, y):
            ax.annotate(r["policy"], (xi, yi), textcoords="offset points", xytext=(6, dy),
                        fontsize=8, color=color)

    fixed = sorted((r for r in usable if r["kind"] == "fixed"), key=lambda r: r["mean_tokens"])
    draw(fixed, "o", "fixed-N majority", "tab:blue", True)
    for i, r in enumerate(r for r in usable if r["kind"] == "adaptive"):
        # staggered labels: adaptive points often sit on top of each other
        draw([r], "s^Dvp*"[i % 6], r["policy"], f"C{(i + 1) % 10}", False, dy=-14 - 11 * i)
    ref = next((r for r in usable if r["policy"] == REFERENCE), None)
    if ref is not None:
        # The verdict's target: >= the reference's CI low end with <= 50% of its tokens.
        ax.axhline(ref["ci"][0], color="gray", linestyle=":", linewidth=1)
        ax.axvline(ref["mean_tokens"] / 2, color="gray", linestyle=":", linewidth=1)
        ax.fill_between([min(r["mean_tokens"] for r in usable) / 1.5, ref["mean_tokens"] / 2],
                        ref["ci"][0], 1.02, color="tab:green", alpha=0.08,
                        label=f"target: >= {REFERENCE} CI low, <= 50% tokens")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("mean generated tokens per problem (log scale)")
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "ttc: accuracy vs generated tokens")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
