"""Scheduling under load: a mixed workload of plain and `auto` requests, Poisson arrivals at
fractions of the server's capacity, run against `--wave-priority certainty` and `fcfs`.

  calibrate   one server (fcfs), closed loop: --calibrate-requests of the mix with
              --calibrate-concurrency clients; capacity = completed requests / wall seconds
  runs        for each load fraction f and each policy, in both orders (certainty first,
              then fcfs first): a fresh server, the same seeded arrival sequence (Poisson at
              f x capacity, each arrival plain or auto with --plain-fraction, problem i of
              the GSM-style generator), every request's latency, answer and tokens
  report      per run: mean / p50 / p99 latency of all, plain and auto requests; accuracy
              of each class with a bootstrap 95% CI; generated tokens; load-shrunk requests

A plain request is one chat completion (the eval's sampling, no `ttc`): its answer is the
last number of its content. An auto request adds `ttc: {"strategy": "auto", "n": N}` (N =
--auto-n, default 16; the server refuses an N above its --max-num-seqs) and its answer is
`ttc.answer`. Both use the eval's prompt, template and seeds
(benches/ttc_eval/), so accuracy is comparable across policies: a request's tokens depend
only on its seed (batch invariance), but `auto`'s decisions read the server's load, so a
policy that keeps the load lower may also grant more compute.
Every request ends counted: an error (non-200, timeout) is reported, never dropped.

--auto-deadline-ms D gives every auto request `ttc.deadline_ms: D`; --baseline-binary B then
compares two builds instead of two policies (both `--wave-priority certainty`: "new" is
--binary, "baseline" is B), in both orders, and the report adds each run's wasted tokens
(samples stopped unfinished) and the auto requests the deadline ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ttc_eval"))

from problems import generate  # noqa: E402
from runs import COMMON_TTC, SAMPLING, messages  # noqa: E402
from scoring import bootstrap_ci, is_correct  # noqa: E402
from server import Server  # noqa: E402

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str | None) -> str | None:
    found = NUMBER.findall(text or "")
    return found[-1].rstrip(".").replace(",", "") if found else None


def arrivals(n: int, rate: float, plain_fraction: float, seed: int) -> list[tuple[float, str]]:
    """(arrival time in s, "plain" | "auto") of request i, deterministic in `seed`."""
    rng = random.Random(f"mixed:{seed}")
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append((t, "plain" if rng.random() < plain_fraction else "auto"))
    return out


# ttc.deadline_ms of every auto request (None: no deadline); set from --auto-deadline-ms.
AUTO_DEADLINE_MS: int | None = None


def body(model: str, problem, kind: str, auto_n: int) -> dict:
    b = {"model": model, "messages": messages(problem), **SAMPLING, "seed": problem.seed}
    if kind == "auto":
        b["ttc"] = {"strategy": "auto", "n": auto_n, **COMMON_TTC}
        if AUTO_DEADLINE_MS is not None:
            b["ttc"]["deadline_ms"] = AUTO_DEADLINE_MS
    return b


async def send(client: httpx.AsyncClient, url: str, model: str, problem, kind: str,
               auto_n: int) -> dict:
    row = {"problem": problem.id, "kind": kind, "expected": problem.answer, "status": None,
           "error": None, "answer": None, "correct": False, "tokens": None,
           "load_level": None, "latency_s": None, "wasted": 0, "stop_reason": None}
    start = time.monotonic()
    try:
        resp = await client.post(url, json=body(model, problem, kind, auto_n))
    except httpx.HTTPError as e:
        row["error"] = f"{type(e).__name__}: {e}"
        row["latency_s"] = time.monotonic() - start
        return row
    row["latency_s"] = time.monotonic() - start
    row["status"] = resp.status_code
    if resp.status_code != 200:
        row["error"] = resp.text[:300]
        return row
    j = resp.json()
    row["tokens"] = (j.get("usage") or {}).get("completion_tokens")
    if kind == "auto":
        ttc = j.get("ttc") or {}
        row["answer"] = ttc.get("answer")
        row["load_level"] = (ttc.get("granted") or {}).get("load_level")
        row["wasted"] = (ttc.get("tokens") or {}).get("wasted", 0)
        row["stop_reason"] = ttc.get("stop_reason")
    else:
        row["answer"] = last_number(j["choices"][0]["message"].get("content"))
    row["correct"] = is_correct(row["answer"], problem.answer)
    return row


async def closed_loop(base: str, model: str, problems, kinds, concurrency: int,
                      timeout_s: float, auto_n: int) -> tuple[list[dict], float]:
    url = base + "/v1/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0)) as client:
        async def one(p, k):
            async with sem:
                return await send(client, url, model, p, k, auto_n)
        start = time.monotonic()
        rows = await asyncio.gather(*(one(p, k) for p, k in zip(problems, kinds)))
        return list(rows), time.monotonic() - start


async def open_loop(base: str, model: str, problems, plan, timeout_s: float,
                    auto_n: int) -> list[dict]:
    url = base + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0),
                                 limits=limits) as client:
        start = time.monotonic()

        async def one(p, at, kind):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            return await send(client, url, model, p, kind, auto_n)
        return list(await asyncio.gather(*(one(p, at, k) for p, (at, k) in zip(problems, plan))))


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def summary(rows: list[dict], seed: int) -> dict:
    out = {}
    for cls in ("all", "plain", "auto"):
        rs = [r for r in rows if cls == "all" or r["kind"] == cls]
        lat = [r["latency_s"] for r in rs if r["latency_s"] is not None]
        acc = [bool(r["correct"]) for r in rs]
        lo, hi = bootstrap_ci(acc, 2000, seed) if acc else (float("nan"), float("nan"))
        out[cls] = {
            "requests": len(rs),
            "errors": sum(1 for r in rs if r["error"]),
            "mean_s": statistics.fmean(lat) if lat else float("nan"),
            "p50_s": pct(lat, 0.50) if lat else float("nan"),
            "p99_s": pct(lat, 0.99) if lat else float("nan"),
            "accuracy": sum(acc) / len(acc) if acc else float("nan"),
            "ci": [lo, hi],
            "tokens": sum(r["tokens"] or 0 for r in rs),
            "load_shrunk": sum(1 for r in rs if (r["load_level"] or 0) > 0),
            "wasted": sum(r.get("wasted") or 0 for r in rs),
            "deadline_ended": sum(1 for r in rs if r.get("stop_reason") == "deadline"),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default="target/release/ponder")
    p.add_argument("--model", default="models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    p.add_argument("--template", default="benches/ttc_eval/qwen-think.jinja")
    p.add_argument("--requests", type=int, default=60, help="arrivals per run")
    p.add_argument("--loads", default="0.5,0.9", help="fractions of capacity")
    p.add_argument("--plain-fraction", type=float, default=0.5)
    p.add_argument("--auto-n", type=int, default=16, help="ttc.n of the auto requests")
    p.add_argument("--calibrate-requests", type=int, default=40)
    p.add_argument("--calibrate-concurrency", type=int, default=8)
    p.add_argument("--capacity", type=float, help="req/s; skips calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--out", default="target/mixed-load.json")
    p.add_argument("--serve-arg", action="append", default=[])
    p.add_argument("--auto-deadline-ms", type=int, help="ttc.deadline_ms of auto requests")
    p.add_argument("--baseline-binary",
                   help="compare --binary (new) with this build (baseline), both certainty")
    a = p.parse_args()
    global AUTO_DEADLINE_MS
    AUTO_DEADLINE_MS = a.auto_deadline_ms

    loads = [float(x) for x in a.loads.split(",")]
    n_problems = -(-max(a.requests, a.calibrate_requests) // 5) * 5
    problems = generate(n_problems, a.seed)
    base_args = ["--kv-cache-memory", "2GiB", *a.serve_arg]
    result = {"command": " ".join(sys.argv), "seed": a.seed, "requests": a.requests,
              "auto_n": a.auto_n, "auto_deadline_ms": a.auto_deadline_ms,
              "baseline_binary": a.baseline_binary,
              "plain_fraction": a.plain_fraction, "runs": []}

    def server(variant: str) -> Server:
        """A policy of --binary, or with --baseline-binary: "new" / "baseline" (certainty)."""
        if variant in ("new", "baseline"):
            binary = a.binary if variant == "new" else a.baseline_binary
            return Server(binary, a.model, a.template,
                          base_args + ["--wave-priority", "certainty"])
        return Server(a.binary, a.model, a.template, base_args + ["--wave-priority", variant])

    pair = ("new", "baseline") if a.baseline_binary else ("certainty", "fcfs")

    capacity = a.capacity
    if capacity is None:
        # calibration arrivals: problems from the far end of the list, the same mix
        cal = problems[-a.calibrate_requests:]
        kinds = [k for _, k in arrivals(len(cal), 1.0, a.plain_fraction, a.seed + 1)]
        with server(pair[1]) as base:
            model = httpx.get(base + "/v1/models").json()["data"][0]["id"]
            rows, wall = asyncio.run(closed_loop(base, model, cal, kinds,
                                                 a.calibrate_concurrency, a.timeout,
                                                 a.auto_n))
        ok = sum(1 for r in rows if not r["error"])
        capacity = ok / wall
        print(f"capacity: {ok} requests in {wall:.1f} s = {capacity:.3f} req/s", flush=True)
        result["calibration"] = {"requests": len(rows), "ok": ok, "wall_s": wall,
                                 "concurrency": a.calibrate_concurrency}
    result["capacity_rps"] = capacity

    for f in loads:
        plan = arrivals(a.requests, f * capacity, a.plain_fraction, a.seed)
        for order in (pair, pair[::-1]):
            for policy in order:
                with server(policy) as base:
                    model = httpx.get(base + "/v1/models").json()["data"][0]["id"]
                    t0 = time.monotonic()
                    rows = asyncio.run(open_loop(base, model, problems[:a.requests], plan,
                                                 a.timeout, a.auto_n))
                    wall = time.monotonic() - t0
                s = summary(rows, a.seed)
                run = {"load": f, "rate_rps": f * capacity, "order": "-".join(order),
                       "policy": policy, "wall_s": wall, "summary": s, "rows": rows}
                result["runs"].append(run)
                print(f"load {f} order {run['order']} {policy}: "
                      f"mean {s['all']['mean_s']:.2f}s p99 {s['all']['p99_s']:.2f}s "
                      f"auto mean {s['auto']['mean_s']:.2f}s acc {s['all']['accuracy']:.3f} "
                      f"errors {s['all']['errors']} shrunk {s['all']['load_shrunk']} "
                      f"wasted {s['all']['wasted']} deadline {s['all']['deadline_ended']}",
                      flush=True)
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                Path(a.out).write_text(json.dumps(result, indent=1))

    print(table(result))
    return 1 if any(r["summary"]["all"]["errors"] for r in result["runs"]) else 0


def table(result: dict) -> str:
    lines = ["| load | order | policy | mean s | p99 s | plain mean s | plain p99 s | "
             "auto mean s | auto p99 s | plain acc | auto acc [95% CI] | tokens | shrunk | "
             "wasted | deadline |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        s = r["summary"]
        lines.append(
            f"| {r['load']} | {r['order']} | {r['policy']} | {s['all']['mean_s']:.2f} | "
            f"{s['all']['p99_s']:.2f} | {s['plain']['mean_s']:.2f} | {s['plain']['p99_s']:.2f} | "
            f"{s['auto']['mean_s']:.2f} | {s['auto']['p99_s']:.2f} | "
            f"{s['plain']['accuracy']:.3f} | {s['auto']['accuracy']:.3f} "
            f"[{s['auto']['ci'][0]:.2f}, {s['auto']['ci'][1]:.2f}] | {s['all']['tokens']} | "
            f"{s['all']['load_shrunk']} | {s['all']['wasted']} | {s['all']['deadline_ended']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
