"""Sends the requests of one run concurrently and turns each response into a result row.

Rules:
  - at most `concurrency` requests in flight (the server batches them);
  - every request has a bounded timeout (connect 10 s, the rest `timeout` s);
  - 429 is retried after its Retry-After (seconds; 1 s when absent, capped at 30 s),
    at most `max_retries` times;
  - anything else that is not a 200 with a `ttc` object is an error row (status + message):
    it is counted and reported, never dropped;
  - a 200 whose `ttc.granted.load_level` is above 0 (the server shrank samples or thinking
    budgets under load) is an error row too: it is not the policy under test;
  - an optional run (runs.Run.optional) first sends its first problem alone; a 400 then
    skips the whole run (RunSkipped, with the server's message).

A row keeps the per-sample account of the `ttc` report (answer key, tokens, reasoning
tokens, mean logprob, verifier score, probe tokens, certaindex exit), which is what the
policies are derived from (policies.py).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from problems import Problem
from runs import Run, request_body, request_seed
from scoring import is_correct

MAX_RETRY_AFTER_S = 30.0
# The returned (winning) sample's content is kept in the results, cut to this length.
MAX_TEXT_CHARS = 300
# Per-sample fields kept from `ttc.samples` (the rest: probe_answers, probes).
SAMPLE_FIELDS = ("index", "answer", "tokens", "reasoning_tokens", "mean_logprob", "stopped",
                 "score", "probe_tokens", "certaindex_exit_at")


class RunSkipped(Exception):
    """An optional run the server does not support (it answered 400)."""


def result_row(problem: Problem, run: Run) -> dict:
    """A result with every field present; the request fills it in."""
    return {
        "run": run.name,
        "problem": problem.id,
        "level": problem.level,
        "expected": problem.answer,
        "seed": request_seed(problem, run),
        "answer": None,
        "correct": False,
        "completion_tokens": None,
        "tokens": None,
        "samples": None,
        "stop_reason": None,
        "winner_sample": None,
        "granted": None,
        "text": None,
        "latency_s": None,
        "retries": 0,
        "status": None,
        "error": None,
    }


def fill_from_response(row: dict, status: int, body: object) -> dict:
    """Fills `row` from a response status + parsed JSON body (or the error text)."""
    row["status"] = status
    if status != 200:
        msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
        row["error"] = f"HTTP {status}: {msg or str(body)[:300]}"
        return row
    if not isinstance(body, dict) or not isinstance(body.get("ttc"), dict):
        row["error"] = "HTTP 200 without a `ttc` object (does the server implement ttc?)"
        return row
    ttc = body["ttc"]
    usage = body.get("usage") or {}
    row["answer"] = ttc.get("answer")
    row["correct"] = is_correct(row["answer"], row["expected"])
    row["completion_tokens"] = usage.get("completion_tokens")
    row["tokens"] = ttc.get("tokens")
    row["stop_reason"] = ttc.get("stop_reason")
    row["winner_sample"] = ttc.get("winner_sample")
    row["granted"] = ttc.get("granted")
    samples = ttc.get("samples")
    if isinstance(samples, list):
        row["samples"] = [{k: s.get(k) for k in SAMPLE_FIELDS} for s in samples]
    choices = body.get("choices") or [{}]
    message = (choices[0].get("message") or {}) if isinstance(choices[0], dict) else {}
    text = message.get("content")
    row["text"] = text[:MAX_TEXT_CHARS] if isinstance(text, str) else None
    if row["completion_tokens"] is None or row["samples"] is None or row["tokens"] is None:
        row["error"] = "HTTP 200 without usage.completion_tokens, ttc.samples or ttc.tokens"
    elif (row["granted"] or {}).get("load_level", 0) > 0:
        # the server shrank samples / thinking budgets under load: not the policy measured
        row["error"] = f"load-shrunk request: granted {row['granted']}"
    return row


async def run_one(client: httpx.AsyncClient, url: str, body: dict, row: dict,
                  max_retries: int) -> dict:
    while True:
        start = time.monotonic()
        try:
            resp = await client.post(url, json=body)
        except httpx.HTTPError as e:
            row["error"] = f"{type(e).__name__}: {e}"
            row["latency_s"] = time.monotonic() - start
            return row
        row["latency_s"] = time.monotonic() - start
        if resp.status_code == 429 and row["retries"] < max_retries:
            row["retries"] += 1
            await asyncio.sleep(retry_after_s(resp.headers.get("retry-after")))
            continue
        try:
            parsed = resp.json()
        except ValueError:
            parsed = resp.text
        return fill_from_response(row, resp.status_code, parsed)


def retry_after_s(header: str | None) -> float:
    try:
        value = float(header) if header is not None else 1.0
    except ValueError:
        value = 1.0
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


async def run_requests(base_url: str, model: str, problems: list[Problem], run: Run,
                       concurrency: int, timeout_s: float, max_retries: int = 20,
                       progress=None,
                       transport: httpx.AsyncBaseTransport | None = None) -> list[dict]:
    """Result rows of `run` over `problems`, in problem order. `progress(row)` is called
    as each request ends; `transport` replaces the network (tests). Raises RunSkipped
    when an optional run's first request gets a 400."""
    url = base_url.rstrip("/") + "/v1/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:

        async def one(p: Problem) -> dict:
            async with sem:
                row = await run_one(client, url, request_body(model, p, run),
                                    result_row(p, run), max_retries)
            if progress is not None:
                progress(row)
            return row

        first: list[dict] = []
        rest = problems
        if run.optional and problems:
            first = [await one(problems[0])]
            if first[0]["status"] == 400:
                raise RunSkipped(first[0]["error"])
            rest = problems[1:]
        return first + list(await asyncio.gather(*(one(p) for p in rest)))


async def fetch_model(base_url: str, timeout_s: float = 10.0) -> str:
    """The first model id of GET /v1/models."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        resp = await client.get(base_url.rstrip("/") + "/v1/models")
        resp.raise_for_status()
        return resp.json()["data"][0]["id"]
