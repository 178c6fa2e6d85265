#!/usr/bin/env python3
"""End-to-end check of `ponder serve --device cuda` on a GPU machine (stdlib only).

    scripts/gpu-serve-check.py BIN MODEL OUT_DIR [DEVICES]

DEVICES defaults to `cuda,cpu` (`cpu` alone dry-runs the script on a machine without a GPU).

Starts the server on the GPU and then on the CPU (same binary, same model), and on each:
greedy chat completions, a seeded n=4 sampled request (sent twice: the GPU must repeat
itself), a streamed greedy request (its text must equal the non-streamed one), 32
concurrent requests (output tokens/s), and /metrics. Prints a summary, writes every
response to OUT_DIR/serve-check.json and the servers' logs beside it; exits 1 when a check
fails. Greedy text may differ between CPU and GPU (the CPU multiplies integer-quantized
activations, the GPU bf16 ones): the common prefix is reported, not asserted.
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
]


def post(port, body, timeout=300):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if body.get("stream"):
            text, chunks = "", 0
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunks += 1
                for c in json.loads(line[6:]).get("choices", []):
                    text += (c.get("delta") or {}).get("content") or ""
            return {"text": text, "chunks": chunks}
        return json.loads(r.read())


MODEL = {"id": None}  # the served model name, read from /v1/models at start


def chat(prompt, **kw):
    return {"model": MODEL["id"], "messages": [{"role": "user", "content": prompt}], **kw}


def serve(binary, model, device, port, log):
    p = subprocess.Popen(
        [binary, "serve", "--model", model, "--device", device, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        if p.poll() is not None:
            raise RuntimeError(f"{device} server exited with {p.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p
        except Exception:
            time.sleep(0.2)
    p.kill()
    raise RuntimeError(f"{device} server did not become healthy in 120 s")


def run_device(binary, model, device, port, out_dir):
    res = {"device": device}
    with open(os.path.join(out_dir, f"server-{device}.log"), "w") as log:
        t0 = time.time()
        p = serve(binary, model, device, port, log)
        res["startup_s"] = round(time.time() - t0, 2)
        models = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        MODEL["id"] = json.loads(models.read())["data"][0]["id"]
        try:
            res["greedy"] = [
                post(port, chat(q, temperature=0, max_tokens=48))["choices"][0]["message"][
                    "content"
                ]
                for q in PROMPTS
            ]
            sampled = [
                [
                    c["message"]["content"]
                    for c in post(
                        port, chat(PROMPTS[1], n=4, temperature=0.8, seed=7, max_tokens=32)
                    )["choices"]
                ]
                for _ in range(2)
            ]
            res["sampled"] = sampled
            res["sampled_repeat"] = sampled[0] == sampled[1]
            res["sampled_distinct"] = len(set(sampled[0]))
            st = post(port, chat(PROMPTS[0], temperature=0, max_tokens=48, stream=True))
            res["stream_chunks"] = st["chunks"]
            res["stream_equals_greedy"] = st["text"] == res["greedy"][0]
            # Load: 32 concurrent sampled requests of 128 tokens.
            toks, errs = [], []

            def one(i):
                try:
                    r = post(port, chat(PROMPTS[i % 3], temperature=0.7, seed=i, max_tokens=128))
                    toks.append(r["usage"]["completion_tokens"])
                except Exception as e:  # noqa: BLE001 - reported below
                    errs.append(str(e))

            t0 = time.time()
            th = [threading.Thread(target=one, args=(i,)) for i in range(32)]
            for t in th:
                t.start()
            for t in th:
                t.join()
            wall = time.time() - t0
            res["load"] = {
                "requests": 32,
                "errors": errs,
                "completion_tokens": sum(toks),
                "wall_s": round(wall, 2),
                "tokens_per_s": round(sum(toks) / wall, 1),
            }
            m = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            res["metrics_lines"] = sum(
                1 for line in m.decode().splitlines() if line.startswith("ponder_")
            )
        finally:
            p.terminate()
            p.wait(timeout=60)
    return res


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main():
    binary, model, out_dir = sys.argv[1:4]
    devices = sys.argv[4].split(",") if len(sys.argv) > 4 else ["cuda", "cpu"]
    os.makedirs(out_dir, exist_ok=True)
    results = {d: run_device(binary, model, d, 8301 + i, out_dir) for i, d in enumerate(devices)}
    g = results[devices[0]]
    c = results.get("cpu", g)
    fails = []
    for name, ok in [
        (f"{devices[0]} sampled n=4 repeats with the same seed", g["sampled_repeat"]),
        (f"{devices[0]} sampled n=4 gives distinct samples", g["sampled_distinct"] > 1),
        (f"{devices[0]} stream text equals greedy text", g["stream_equals_greedy"]),
        (f"{devices[0]} load: no errors", not g["load"]["errors"]),
        (f"{devices[0]} /metrics has ponder_ series", g["metrics_lines"] > 0),
        (f"{devices[0]} greedy answers are non-empty", all(t.strip() for t in g["greedy"])),
    ]:
        print(f"check: {name}: {'ok' if ok else 'FAILED'}")
        if not ok:
            fails.append(name)
    for i, q in enumerate(PROMPTS):
        n = common_prefix(g["greedy"][i], c["greedy"][i])
        same = g["greedy"][i] == c["greedy"][i]
        print(f"greedy {i}: {devices[0]} vs cpu {'identical' if same else f'common prefix {n} chars'}")
        print(f"  {devices[0]}: {g['greedy'][i]!r}")
        print(f"  cpu:  {c['greedy'][i]!r}")
    for d in devices:
        r = results[d]
        print(
            f"{d}: startup {r['startup_s']} s, 32 x 128-token requests: "
            f"{r['load']['completion_tokens']} tokens in {r['load']['wall_s']} s = "
            f"{r['load']['tokens_per_s']} tokens/s, errors {len(r['load']['errors'])}"
        )
    with open(os.path.join(out_dir, "serve-check.json"), "w") as f:
        json.dump(results, f, indent=1)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
