"""Sends the requests of one policy concurrently and turns each response into a result row.

Rules:
  - at most `concurrency` requests in flight (the server batches them);
  - every request has a bounded timeout (connect 10 s, the rest `timeout` s);
  - 429 is retried after its Retry-After (seconds; 1 s when absent, capped at 30 s),
    at most `max_retries` times;
  - anything else that is not a 200 with a `ttc` object is an error row (status + message):
    it is counted and reported, never dropped.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from policies import Policy, request_body
from problems import Problem
from scoring import is_correct

MAX_RETRY_AFTER_S = 30.0
# The returned (winning) sample's text is kept in the results, cut to this length.
MAX_TEXT_CHARS = 400


def result_row(problem: Problem, policy: Policy) -> dict:
    """A result with every field present; the run fills it in."""
    return {
        "policy": policy.name,
        "kind": policy.kind,
        "problem": problem.id,
        "level": problem.level,
        "expected": problem.answer,
        "answer": None,
        "correct": False,
        "completion_tokens": None,
        "samples_launched": None,
        "samples_completed": None,
        "samples_stopped": None,
        "winning_share": None,
        "stop_reasons": None,
        "votes": None,
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
    for k in ("samples_launched", "samples_completed", "samples_stopped", "winning_share",
              "stop_reasons", "votes"):
        row[k] = ttc.get(k)
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
    text = message.get("content")
    row["text"] = text[:MAX_TEXT_CHARS] if isinstance(text, str) else None
    if row["completion_tokens"] is None:
        row["error"] = "HTTP 200 without usage.completion_tokens"
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


async def run_policy(base_url: str, model: str, problems: list[Problem], policy: Policy,
                     sampling: dict, concurrency: int, timeout_s: float,
                     max_retries: int = 20, progress=None,
                     transport: httpx.AsyncBaseTransport | None = None) -> list[dict]:
    """Result rows of `policy` over `problems`, in problem order. `progress(row)` is
    called as each request ends; `transport` replaces the network (tests)."""
    url = base_url.rstrip("/") + "/v1/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:

        async def one(p: Problem) -> dict:
            async with sem:
                row = await run_one(client, url, request_body(model, p, policy, sampling),
                                    result_row(p, policy), max_retries)
            if progress is not None:
                progress(row)
            return row

        return list(await asyncio.gather(*(one(p) for p in problems)))


async def fetch_model(base_url: str, timeout_s: float = 10.0) -> str:
    """The first model id of GET /v1/models."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        resp = await client.get(base_url.rstrip("/") + "/v1/models")
        resp.raise_for_status()
        return resp.json()["data"][0]["id"]
