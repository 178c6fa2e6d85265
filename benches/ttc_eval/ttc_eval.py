"""ttc evaluation on a real model: accuracy versus generated tokens of fixed-N majority,
verifier, certaindex, auto and greedy policies, through live ponder servers.

    python ttc_eval.py [--problems 200] [--runs main,certaindex,...] [--model-small F]
    python ttc_eval.py --base-url http://127.0.0.1:8000 --runs main   # a running server
    python ttc_eval.py --dry-run                     # problems + request bodies, no server
    python ttc_eval.py --report-only docs/ttc-eval/results.json   # re-render

Usually started by scripts/ttc-eval. Runs (runs.py) go one after another, `--concurrency`
requests in flight within a run; the small model's server runs first, then the large
model's. After every run the raw results JSON is rewritten, and `--resume` reuses the runs
it already holds (same problems, seed and request shapes). The policies are then derived
offline (policies.py), checked (check.py) and written: results JSON, markdown report,
plot. Exit status: 0, or 1 when any request failed (the reports are still written), 2 on
bad arguments or a server that does not start.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import check  # noqa: E402
import client  # noqa: E402
import gguf_info  # noqa: E402
import policies as pol  # noqa: E402
import problems as prob  # noqa: E402
import report  # noqa: E402
import runs as rn  # noqa: E402
import scoring  # noqa: E402
from server import Server, ServerError  # noqa: E402

DEFAULT_SMALL = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_LARGE = "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# relative to the working directory (the repository root under scripts/ttc-eval), so the
# report shows the path a reader types
DEFAULT_TEMPLATE = os.path.relpath(HERE / "qwen-think.jinja")
# `ponder serve` flags of every server unless given after `--`: a KV cache far above what
# 2 requests of 16 samples use (~17k tokens of 175k for the 0.5B model), so the server never
# reaches its load levels and shrinks nothing (a shrunk request is counted as failed).
DEFAULT_SERVE_ARGS = (("--kv-cache-memory", "2GiB"),)
NOTES = """Method, generator design, calibration and the choice of sampling:
`benches/ttc_eval/README.md`. Every policy row is derived from the per-sample reports of
the runs listed at the end (`sc16`: one 16-sample request per problem; the first N samples
of it are an N-sample request's samples, checked above against real requests). The previous
evaluation (SmolLM2-135M-Instruct on one-line arithmetic, policies run one by one) is in git
history: `git show 2ce2540:docs/ttc-eval.md`."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-small", default=DEFAULT_SMALL, help="GGUF of the sampled runs")
    p.add_argument("--model-large", default=DEFAULT_LARGE, help="GGUF of the greedy-large run")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="--chat-template of the servers")
    p.add_argument("--binary", default=os.environ.get("PONDER_BIN", "target/release/ponder"))
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra `ponder serve` argument (repeat for several)")
    p.add_argument("--base-url", help="a running server for the small model's runs")
    p.add_argument("--base-url-large", help="a running server for the large model's runs")
    p.add_argument("--problems", type=int, default=200,
                   help=f"a multiple of {len(prob.STEPS)} (default 200)")
    p.add_argument("--seed", type=int, default=0, help="problem + request seeds, bootstrap")
    p.add_argument("--runs", help=f"comma list of run groups (default: all): {list(rn.GROUPS)}")
    p.add_argument("--check-problems", type=int, default=rn.CHECK_PROBLEMS,
                   help="problems the check runs use (the first ones)")
    p.add_argument("--certaindex-every", type=int, default=rn.CERTAINDEX["probe_every"],
                   help="certaindex: probe every this many thinking tokens")
    p.add_argument("--certaindex-agree", type=int, default=rn.CERTAINDEX["agree"],
                   help="certaindex: exit once this many probes in a row agree")
    p.add_argument("--concurrency", type=int, default=2,
                   help="requests in flight (each sampled one is 8-16 sequences)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=20, help="429 retries per request")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--out-dir", default="docs/ttc-eval", help="raw results JSON goes here")
    p.add_argument("--report", default="docs/ttc-eval.md")
    p.add_argument("--plot", default="docs/ttc-eval.png")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs already in <out-dir>/results.json")
    p.add_argument("--note", help="a line shown at the top of the report")
    p.add_argument("--dry-run", action="store_true",
                   help="print problems and request bodies; no server needed")
    p.add_argument("--report-only", metavar="RESULTS_JSON",
                   help="re-render the report and plot from a raw results JSON")
    p.add_argument("--command", help="the command line to record (set by scripts/ttc-eval)")
    return p.parse_args(argv)


def dry_run(args: argparse.Namespace, runs: list[rn.Run], out=None) -> None:
    out = out or sys.stdout
    problems = prob.generate(args.problems, args.seed)
    print(f"# {len(problems)} problems (seed {args.seed}); the first of each difficulty:",
          file=out)
    for steps in prob.STEPS:
        p = next(p for p in problems if p.level == steps)
        print(f"{steps} steps #{p.id}: {p.question} -> {p.answer}  ({p.expr})", file=out)
    print(f"\n# request bodies for problem #{problems[0].id}:", file=out)
    for run in runs:
        print(f"{run.name}: {json.dumps(rn.request_body('<model>', problems[0], run))}",
              file=out)


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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_meta(path: str) -> dict:
    info = gguf_info.model_info(path)
    info.pop("chat_template", None)
    info["path"] = path
    return info


def run_record(run: rn.Run, n_problems: int) -> dict:
    """The results JSON's entry for one run (rows and status filled in as it goes)."""
    return {**asdict(run), "problems": n_problems, "requests": 0, "errors": 0,
            "wall_s": None, "status": "not run", "git_commit": None, "date": None, "rows": []}


def build_doc(meta: dict, records: list[dict]) -> dict:
    """Derives policies, checks and the summary from the runs' rows."""
    run_rows = {r["name"]: r["rows"] for r in records if r["rows"]}
    policies, results = pol.derive_all(run_rows)
    order = [p.name for p in policies]
    summary = scoring.summarize(results, order, resamples=meta["bootstrap"]["resamples"],
                                seed=meta["bootstrap"]["seed"])
    sc16 = [s for row in run_rows.get("sc16", []) if row["error"] is None
            for s in row["samples"]]
    sample_acc = None
    if sc16:
        expected = {row["problem"]: row["expected"] for row in run_rows["sc16"]}
        by_sample = [(row["problem"], s) for row in run_rows["sc16"] if row["error"] is None
                     for s in row["samples"]]
        sample_acc = sum(scoring.is_correct(s["answer"], expected[p])
                         for p, s in by_sample) / len(by_sample)
    return {"meta": meta, "runs": records, "policies": [asdict(p) for p in policies],
            "summary": summary, "checks": check.check_all(run_rows),
            "sample_accuracy": sample_acc,
            "verifier": scoring.verifier_signal(run_rows.get("sc16", [])),
            "results": results}


def write_outputs(doc: dict, args: argparse.Namespace) -> None:
    report.write_markdown(args.report, doc)
    report.write_plot(args.plot, doc)


def print_summary(doc: dict) -> None:
    for r in doc["summary"]:
        lo, hi = r["ci"]
        print(f"{r['policy']:>16}  acc {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"tokens {r['mean_tokens']:8.1f}  x{r['rel_tokens']:.2f}  errors {r['errors']}")
    for c in doc["checks"]:
        print(f"check {c['run']}: {c['identical']}/{c['samples']} samples identical, "
              f"{c['answers_equal']}/{c['problems']} answers equal")


def resumable(path: Path, meta: dict, runs: list[rn.Run]) -> tuple[dict[str, dict], dict]:
    """Runs of an earlier results JSON that can be reused, and the earlier server command
    lines: the same problems, seed and template, and per run the same model file (sha256),
    request shape (ttc, sampling, seed) and no failed request."""
    if not path.exists():
        return {}, {}
    old = json.loads(path.read_text())
    if any(old["meta"].get(k) != meta.get(k) for k in ("problems", "seed", "template_sha256")):
        return {}, {}
    shas = {role: m["sha256"] for role, m in meta["models"].items()}
    old_shas = {role: m["sha256"] for role, m in old["meta"].get("models", {}).items()}
    wanted = {r.name: asdict(r) for r in runs}
    shape = ("model", "ttc", "sampling", "seed_index")
    reuse = {r["name"]: r for r in old["runs"]
             if r["name"] in wanted and r["status"] == "done" and r["errors"] == 0
             and old_shas.get(r["model"]) == shas.get(r["model"])
             and all(r.get(k) == wanted[r["name"]][k] for k in shape)}
    return reuse, old["meta"].get("servers", {})


async def run_one_run(args, url: str, model_id: str, run: rn.Run,
                      problems: list[prob.Problem], record: dict) -> None:
    """Sends one run's requests and fills its record."""
    done = {"n": 0, "errors": 0}

    def progress(row: dict) -> None:
        done["n"] += 1
        done["errors"] += row["error"] is not None
        if row["error"] is not None and done["errors"] <= 3:
            print(f"  {run.name} problem {row['problem']}: {row['error']}", file=sys.stderr)
        if done["n"] % 10 == 0 or done["n"] == len(problems):
            print(f"  {run.name}: {done['n']}/{len(problems)} ({done['errors']} errors, "
                  f"{time.monotonic() - t0:.0f} s)", file=sys.stderr)

    t0 = time.monotonic()
    try:
        rows = await client.run_requests(url, model_id, problems, run, args.concurrency,
                                         args.timeout, args.max_retries, progress)
    except client.RunSkipped as e:
        record["status"] = f"skipped: the server answered {e}"
        print(f"{run.name}: {record['status']}", file=sys.stderr)
        return
    record.update(rows=rows, requests=len(rows), wall_s=round(time.monotonic() - t0, 1),
                  git_commit=git_commit(), date=dt.datetime.now(dt.timezone.utc).strftime(
                      "%Y-%m-%d %H:%M:%S"),
                  errors=sum(r["error"] is not None for r in rows), status="done")
    acc = sum(r["correct"] for r in rows) / len(rows)
    print(f"{run.name}: server answer accuracy {acc:.3f} in {record['wall_s']:.0f} s",
          file=sys.stderr)


async def run_model(args, role: str, runs: list[rn.Run], records: dict[str, dict],
                    problems: list[prob.Problem], meta: dict, save) -> None:
    """Every run of one model, on a running server or one started here."""
    base = args.base_url if role == "small" else args.base_url_large
    model_file = args.model_small if role == "small" else args.model_large
    server = None
    if base is None:
        server = Server(args.binary, model_file, args.template, serve_args(args.serve_arg))
        print(f"starting: {server.command_line()} (log: {server.log})", file=sys.stderr)
        base = server.__enter__()
        meta["servers"][role] = server.command_line()
        meta.setdefault("activation_bits", {})[role] = server.activation_bits()
    else:
        meta["servers"][role] = f"running server at {base}"
    try:
        model_id = await client.fetch_model(base)
        for run in runs:
            subset = problems[:args.check_problems] if run.name.startswith("check") else problems
            await run_one_run(args, base, model_id, run, subset, records[run.name])
            save()
    finally:
        if server is not None:
            server.stop()


def certaindex_of(args: argparse.Namespace) -> dict:
    return {**rn.CERTAINDEX, "probe_every": args.certaindex_every,
            "agree": args.certaindex_agree}


def serve_args(given: list[str]) -> list[str]:
    """DEFAULT_SERVE_ARGS (each unless its flag is among `given`), then `given`."""
    flags = {a.split("=", 1)[0] for a in given}
    defaults = [part for flag, value in DEFAULT_SERVE_ARGS if flag not in flags
                for part in (flag, value)]
    return defaults + list(given)


def base_meta(args: argparse.Namespace, problems: list[prob.Problem]) -> dict:
    models = {"small": model_meta(args.model_small)}
    if any(r.model == "large" for r in rn.select(args.runs)):
        models["large"] = model_meta(args.model_large)
    per = len(problems) // len(prob.STEPS)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "title": f"ttc eval: {models['small']['file']}, {len(problems)} problems",
        "command": args.command or shlex.join([sys.executable, *sys.argv]),
        "git_commit": git_commit(),
        "host": host_info(),
        "problems": f"{len(problems)} ({per} per difficulty {prob.STEPS[0]}..{prob.STEPS[-1]} "
                    f"steps), generator benches/ttc_eval/problems.py",
        "seed": args.seed,
        "concurrency": args.concurrency,
        "sampling": rn.SAMPLING,
        "greedy_sampling": rn.GREEDY,
        "certaindex": certaindex_of(args),
        "template": args.template,
        "template_sha256": gguf_info.sha256_of(args.template),
        "system_prompt": prob.SYSTEM_PROMPT,
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed},
        "models": models,
        "servers": {},
        "validation_note": args.note,
        "notes": NOTES,
    }


async def evaluate(args: argparse.Namespace, runs: list[rn.Run]) -> int:
    problems = prob.generate(args.problems, args.seed)
    meta = base_meta(args, problems)
    out = Path(args.out_dir) / "results.json"
    reuse, servers = resumable(out, meta, runs) if args.resume else ({}, {})
    if reuse:
        print(f"reusing runs {sorted(reuse)} of {out}", file=sys.stderr)
        meta["servers"] = servers
    records = {r.name: reuse.get(r.name) or run_record(r, len(problems)) for r in runs}

    def save() -> None:
        # the runs' own wall times, reused ones included (server starts not counted)
        meta["wall_s"] = round(sum(r["wall_s"] or 0 for r in records.values()), 1)
        report.write_json(out, build_doc(meta, list(records.values())))

    for role in ("small", "large"):
        todo = [r for r in runs if r.model == role and records[r.name]["status"] != "done"]
        if todo:
            await run_model(args, role, todo, records, problems, meta, save)
    save()
    doc = build_doc(meta, list(records.values()))
    write_outputs(doc, args)
    print_summary(doc)
    print(f"wrote {out}, {args.report}, {args.plot}", file=sys.stderr)
    return 1 if any(r["errors"] for r in records.values()) else 0


def report_only(args: argparse.Namespace) -> int:
    old = json.loads(Path(args.report_only).read_text())
    # the notes are the method's pointer text: today's, not the run's
    doc = build_doc({**old["meta"], "notes": NOTES}, old["runs"])
    write_outputs(doc, args)
    print_summary(doc)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = rn.select(args.runs, certaindex_of(args))
        prob.generate(args.problems, args.seed)  # validates --problems
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(args, runs)
        return 0
    if args.report_only:
        return report_only(args)
    for path in [args.model_small, args.template] + (
            [args.model_large] if any(r.model == "large" for r in runs) else []):
        if not Path(path).is_file():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    if args.base_url is None and not Path(args.binary).is_file():
        print(f"error: {args.binary} not found; build it (cargo build --release --bin ponder) "
              "or set PONDER_BIN / --binary", file=sys.stderr)
        return 2
    try:
        return asyncio.run(evaluate(args, runs))
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except client.httpx.HTTPError as e:
        print(f"error: cannot talk to the server: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
