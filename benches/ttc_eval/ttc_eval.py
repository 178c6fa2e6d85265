"""ttc evaluation: accuracy versus generated tokens of fixed-N and adaptive
test-time-compute policies, through a live ponder server.

    python ttc_eval.py --base-url http://127.0.0.1:8000 [--problems 200] [--seed 0]
    python ttc_eval.py --dry-run                      # problems + request bodies, no server
    python ttc_eval.py --report-only docs/ttc-eval/results.json   # re-render from raw results

Usually started by scripts/ttc-eval, which also starts and stops the server.
Every policy runs over every problem (policies one after another, `--concurrency`
requests in flight within a policy); then the raw results JSON, the markdown report
and the plot are written. Exit status: 0, or 1 when any request failed (the
reports are still written), 2 on bad arguments / no server.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402
import policies as pol  # noqa: E402
import problems as prob  # noqa: E402
import report  # noqa: E402
import scoring  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", help="a running ponder server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", help="model id to send (default: the first of /v1/models)")
    p.add_argument("--problems", type=int, default=200, help="a multiple of 4 (default 200)")
    p.add_argument("--seed", type=int, default=0, help="problem + request seeds, bootstrap")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=20, help="429 retries per request")
    p.add_argument("--policies", help="comma list of policy names (default: all)")
    p.add_argument("--max-tokens", type=int, default=pol.SAMPLING["max_completion_tokens"])
    p.add_argument("--temperature", type=float, default=pol.SAMPLING["temperature"])
    p.add_argument("--top-p", type=float, default=pol.SAMPLING["top_p"])
    p.add_argument("--prompt-template", default=prob.PROMPT_TEMPLATE,
                   help='the chat message around "{question}" (default: %(default)r)')
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--out-dir", default="docs/ttc-eval", help="raw results JSON goes here")
    p.add_argument("--report", default="docs/ttc-eval.md")
    p.add_argument("--plot", default="docs/ttc-eval.png")
    p.add_argument("--dry-run", action="store_true",
                   help="print problems and request bodies; no server needed")
    p.add_argument("--report-only", metavar="RESULTS_JSON",
                   help="re-render the report and plot from a raw results JSON")
    p.add_argument("--command", help="the command line to record (set by scripts/ttc-eval)")
    p.add_argument("--server-cmd", help="the server command line to record")
    return p.parse_args(argv)


def sampling_of(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p,
            "max_completion_tokens": args.max_tokens, "stop": pol.SAMPLING["stop"]}


def dry_run(args: argparse.Namespace, policies: list[pol.Policy], out=None) -> None:
    out = out or sys.stdout
    problems = prob.generate(args.problems, args.seed, args.prompt_template)
    print(f"# {len(problems)} problems (seed {args.seed}); the first two of each level:", file=out)
    for level in prob.LEVELS:
        for p in [p for p in problems if p.level == level][:2]:
            print(f"L{p.level} #{p.id}: {p.prompt!r} -> {p.answer}  ({p.expr})", file=out)
    print(f"\n# request bodies for problem #{problems[0].id}:", file=out)
    for policy in policies:
        body = pol.request_body(args.model or "<model>", problems[0], policy, sampling_of(args))
        print(f"{policy.name}: {json.dumps(body)}", file=out)


def host_info() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {cpu} ({os.cpu_count()} CPUs), Python {platform.python_version()}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def render(results: list[dict], meta: dict, policy_dicts: list[dict],
           args: argparse.Namespace) -> tuple[list[dict], str]:
    order = [p["name"] for p in policy_dicts]
    rows = scoring.summarize(results, order, resamples=meta["bootstrap"]["resamples"],
                             seed=meta["bootstrap"]["seed"])
    verdict = scoring.verdict(rows)
    report.write_markdown(args.report, rows, verdict, meta, policy_dicts)
    report.write_plot(args.plot, rows, title=f"ttc eval: {meta.get('model', '')}, "
                      f"{meta.get('problems', '')} problems")
    return rows, verdict


def print_summary(rows: list[dict], verdict: str) -> None:
    for r in rows:
        lo, hi = r["ci"]
        print(f"{r['policy']:>12}  acc {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"tokens {r['mean_tokens']:8.1f}  x{r['rel_tokens']:.2f}  errors {r['errors']}")
    print(verdict)


async def evaluate(args: argparse.Namespace, policies: list[pol.Policy]) -> int:
    base = args.base_url.rstrip("/")
    model = args.model or await client.fetch_model(base)
    problems = prob.generate(args.problems, args.seed, args.prompt_template)
    sampling = sampling_of(args)
    started = time.monotonic()
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "command": args.command or shlex.join([sys.executable, *sys.argv]),
        "server": args.server_cmd or base,
        "model": model,
        "host": host_info(),
        "git_commit": git_commit(),
        "problems": f"{len(problems)} ({len(problems) // len(prob.LEVELS)} per level 1..4)",
        "seed": args.seed,
        "concurrency": args.concurrency,
        "sampling": sampling,
        "common_ttc": pol.COMMON_TTC,
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed},
        "prompt_template": args.prompt_template,
    }
    results: list[dict] = []
    for policy in policies:
        done = {"n": 0, "errors": 0}

        def progress(row: dict, name=policy.name, done=done) -> None:
            done["n"] += 1
            done["errors"] += row["error"] is not None
            if row["error"] is not None and done["errors"] <= 3:
                print(f"  {name} problem {row['problem']}: {row['error']}", file=sys.stderr)
            if done["n"] % 25 == 0 or done["n"] == len(problems):
                print(f"  {name}: {done['n']}/{len(problems)} ({done['errors']} errors)",
                      file=sys.stderr)

        t0 = time.monotonic()
        rows = await client.run_policy(base, model, problems, policy, sampling,
                                       args.concurrency, args.timeout, args.max_retries,
                                       progress)
        acc = sum(r["correct"] for r in rows) / len(rows)
        print(f"{policy.name}: accuracy {acc:.3f} in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        results += rows
    meta["wall_s"] = round(time.monotonic() - started, 1)
    policy_dicts = [asdict(p) for p in policies]
    summary, verdict = render(results, meta, policy_dicts, args)
    out = report.write_results_json(Path(args.out_dir) / "results.json", results, summary,
                                    meta, policy_dicts)
    print_summary(summary, verdict)
    print(f"wrote {out}, {args.report}, {args.plot}", file=sys.stderr)
    return 1 if any(r["error"] is not None for r in results) else 0


def report_only(args: argparse.Namespace) -> int:
    doc = json.loads(Path(args.report_only).read_text())
    summary, verdict = render(doc["results"], doc["meta"], doc["policies"], args)
    print_summary(summary, verdict)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        policies = pol.select(pol.all_policies(), args.policies)
        prob.generate(args.problems, args.seed, args.prompt_template)  # validates --problems
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(args, policies)
        return 0
    if args.report_only:
        return report_only(args)
    if not args.base_url:
        print("error: --base-url is required (or --dry-run / --report-only)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(evaluate(args, policies))
    except client.httpx.HTTPError as e:
        print(f"error: cannot talk to {args.base_url}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
