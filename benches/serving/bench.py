#!/usr/bin/env python3
"""Serving benchmark driver: drives any OpenAI-compatible server's /v1/completions with
streaming requests at fixed concurrency levels and reports output tokens/s, TTFT and ITL.

Workload (identical for every server): request i sends a fixed prompt of the same token
count for every i (a zero-padded request number in front, so no server gets prefix-cache
hits from its neighbours), temperature 0 (greedy), `max_tokens` = --output-tokens, and the
`--extra` fields that make EOS impossible (`{"ignore_eos": true}` for ponder and llama.cpp's
llama-server alike; another server may need `logit_bias` on its end-of-generation tokens),
so every request generates exactly --output-tokens tokens. A sanity request per server
checks that count and the prompt length.

Per concurrency level c: a closed loop of c clients sends `max(--min-requests, 2c)`
requests. Metrics (streamed chunks carrying non-empty text are "token events"):
  TTFT  send -> first token event;  ITL  gaps between consecutive token events (pooled);
  output tokens/s  = requests x output tokens / (first send -> last response) of the level.
  With --pid (the server's process id, same machine): server CPU seconds (user + system, all
  its threads) over the level, and cores = CPU seconds / wall time, i.e. how much CPU the
  server got (on a shared machine: less than its thread count when others compete) or
  burned (spinning threads count too). The 1-minute load average at the level's end is kept.
  --append adds the levels to an existing --json file of the same label, so a script can run
  one level at a time and alternate servers between levels.

  bench.py run --url http://127.0.0.1:8000 --label ponder --extra '{"ignore_eos": true}' \
      --concurrency 1 4 16 64 --json out.json
  bench.py report ponder.json llamacpp.json      (markdown table with the ratio a/b)
"""
import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp

FILLER = (
    "The history of bread begins with wild grains ground between stones, mixed with water and "
    "baked on hot rocks. Over thousands of years, bakers learned to keep a piece of dough "
    "from one day to the next, and the loaves rose. "
)


def prompt(i, words):
    """Fixed-length prompt: a zero-padded request number, then `words` filler words."""
    w = (FILLER * (words // len(FILLER.split()) + 1)).split()[:words]
    return f"Request {i:06d}. " + " ".join(w)


def cpu_seconds(pid):
    """utime + stime of process `pid` (all its threads) in seconds; None without it."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load1():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def pct(v, p):
    """Nearest-rank percentile; None when empty."""
    if not v:
        return None
    s = sorted(v)
    k = max(1, min(len(s), int(-(-p * len(s) // 100))))
    return s[k - 1]


async def one(session, url, model, i, args, extra):
    body = {"prompt": prompt(i, args.prompt_words), "max_tokens": args.output_tokens,
            "temperature": 0, "stream": True, **extra}
    if model:
        body["model"] = model
    t0 = time.perf_counter()
    times, finish, err = [], None, None
    async with session.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            return {"error": f"status {r.status}: {(await r.text())[:200]}"}
        buf = b""
        async for data in r.content.iter_any():
            now = time.perf_counter()
            buf += data
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                for line in ev.decode("utf-8", "replace").splitlines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    try:
                        v = json.loads(line[6:])
                    except ValueError:
                        err = f"unparsable event {line[:120]!r}"
                        continue
                    if "error" in v:
                        err = str(v["error"])[:200]
                    for c in v.get("choices") or []:
                        if c.get("text"):
                            times.append(now)
                        if c.get("finish_reason"):
                            finish = c["finish_reason"]
    end = time.perf_counter()
    if err:
        return {"error": err}
    if finish != "length":
        return {"error": f"finish_reason {finish!r}: the output must run to max_tokens"}
    if not times:
        return {"error": "no token events"}
    return {"ttft": times[0] - t0, "itl": [b - a for a, b in zip(times, times[1:])],
            "latency": end - t0, "start": t0, "end": end}


async def sanity(session, url, model, args, extra):
    """One non-streamed request: usage must show the prompt length and exactly N outputs."""
    body = {"prompt": prompt(0, args.prompt_words), "max_tokens": args.output_tokens,
            "temperature": 0, **extra}
    if model:
        body["model"] = model
    async with session.post(url + "/v1/completions", json=body) as r:
        v = await r.json(content_type=None)
        if r.status != 200:
            sys.exit(f"sanity request failed: {r.status} {v}")
    u = v.get("usage") or {}
    if u.get("completion_tokens") != args.output_tokens:
        sys.exit(f"sanity: {u.get('completion_tokens')} completion tokens, expected "
                 f"{args.output_tokens} (is EOS suppressed? --extra {json.dumps(extra)})")
    return u.get("prompt_tokens")


async def level(session, url, model, c, n, args, extra, first_index):
    queue = list(range(first_index, first_index + n))
    results = []

    async def worker():
        while queue:
            i = queue.pop(0)
            results.append(await one(session, url, model, i, args, extra))

    cpu0 = cpu_seconds(args.pid)
    await asyncio.gather(*(worker() for _ in range(c)))
    cpu1 = cpu_seconds(args.pid)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        sys.exit(f"c={c}: {len(errors)} of {n} requests failed, first: {errors[0]}")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    ttft = [r["ttft"] for r in results]
    itl = [x for r in results for x in r["itl"]]
    ms = lambda s: None if s is None else round(s * 1000, 2)  # noqa: E731
    return {"concurrency": c, "requests": n, "wall_s": round(wall, 3),
            "output_tok_s": round(n * args.output_tokens / wall, 2),
            "ttft_ms_p50": ms(pct(ttft, 50)), "ttft_ms_p99": ms(pct(ttft, 99)),
            "itl_ms_p50": ms(pct(itl, 50)), "itl_ms_p99": ms(pct(itl, 99)),
            "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
            "server_cores": None if cpu0 is None or cpu1 is None else round((cpu1 - cpu0) / wall, 2),
            "load1_end": load1()}


async def run(args):
    extra = json.loads(args.extra)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # A fresh connection per request: llama-server's HTTP layer (cpp-httplib) drops idle
    # keep-alive connections, and aiohttp would send the next request into a closed socket.
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
        async with s.get(args.url + "/v1/models") as r:
            models = await r.json(content_type=None)
        model = args.model or models["data"][0]["id"]
        prompt_tokens = await sanity(s, args.url, model, args, extra)
        for i in range(args.warmup):
            await one(s, args.url, model, 900000 + i, args, extra)
        out = {"label": args.label, "model": model, "prompt_tokens": prompt_tokens,
               "output_tokens": args.output_tokens, "levels": []}
        index = args.first_index
        for c in args.concurrency:
            n = max(args.min_requests, 2 * c) if args.requests is None else args.requests
            r = await level(s, args.url, model, c, n, args, extra, index)
            index += n
            print(f"{args.label} c={c}: {json.dumps(r)}", flush=True)
            out["levels"].append(r)
    if args.json and args.append and os.path.exists(args.json):
        with open(args.json) as f:
            prev = json.load(f)
        if (prev["label"], prev["output_tokens"]) != (out["label"], out["output_tokens"]):
            sys.exit(f"--append: {args.json} holds another run ({prev['label']})")
        prev["levels"] += out["levels"]
        out = prev
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:.{nd}f}"


def report(paths):
    a, b = (json.load(open(p)) for p in paths)
    la, lb = a["label"], b["label"]
    lines = [
        f"Prompt {a['prompt_tokens']} tokens ({lb}: {b['prompt_tokens']}), output "
        f"{a['output_tokens']} tokens, greedy, streamed /v1/completions.",
        "",
        f"| concurrency | requests | output tok/s {la} | output tok/s {lb} | ratio {la}/{lb} "
        f"| TTFT p50 ms {la} | TTFT p50 ms {lb} | TTFT p99 ms {la} | TTFT p99 ms {lb} "
        f"| ITL p50 ms {la} | ITL p50 ms {lb} | ITL p99 ms {la} | ITL p99 ms {lb} "
        f"| cores {la} | cores {lb} |",
        "|" + "---|" * 15,
    ]
    for x, y in zip(a["levels"], b["levels"]):
        ratio = x["output_tok_s"] / y["output_tok_s"] if y["output_tok_s"] else None
        lines.append(
            f"| {x['concurrency']} | {x['requests']} | {fmt(x['output_tok_s'])} | "
            f"{fmt(y['output_tok_s'])} | {fmt(ratio, 2)}x | {fmt(x['ttft_ms_p50'], 0)} | "
            f"{fmt(y['ttft_ms_p50'], 0)} | {fmt(x['ttft_ms_p99'], 0)} | {fmt(y['ttft_ms_p99'], 0)} | "
            f"{fmt(x['itl_ms_p50'])} | {fmt(y['itl_ms_p50'])} | {fmt(x['itl_ms_p99'])} | "
            f"{fmt(y['itl_ms_p99'])} | {fmt(x.get('server_cores'), 2)} | "
            f"{fmt(y.get('server_cores'), 2)} |")
    if any(x.get("load1_end") is not None for x in a["levels"] + b["levels"]):
        loads = lambda r: ", ".join(fmt(x.get("load1_end"), 2) for x in r["levels"])  # noqa: E731
        lines += ["", f"1-minute load average at the end of each level: {la} {loads(a)}; "
                      f"{lb} {loads(b)}."]
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--model", help="model id (default: the first of /v1/models)")
    r.add_argument("--extra", default="{}", help="JSON fields added to every request")
    r.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    r.add_argument("--requests", type=int, help="requests per level (default: max(--min-requests, 2c))")
    r.add_argument("--min-requests", type=int, default=8)
    r.add_argument("--prompt-words", type=int, default=96)
    r.add_argument("--output-tokens", type=int, default=64)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--timeout", type=float, default=1800)
    r.add_argument("--json")
    r.add_argument("--append", action="store_true", help="add the levels to an existing --json")
    r.add_argument("--first-index", type=int, default=1, help="request number of the first request")
    r.add_argument("--pid", type=int, help="the server's process id: report its CPU use per level")
    rep = sub.add_parser("report")
    rep.add_argument("paths", nargs=2)
    args = p.parse_args()
    if args.cmd == "run":
        asyncio.run(run(args))
    else:
        report(args.paths)


if __name__ == "__main__":
    main()
