"""Clients that vanish mid-stream must not leak KV blocks: 20 streams are cut after a few
chunks, then /metrics must show no running request and kv_cache_usage_perc == 0."""
import threading
import time
import urllib.request

MODEL = "SmolLM2-135M-Instruct.Q4_1"


def metric(server, name):
    body = urllib.request.urlopen(server + "/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_twenty_streams_cut_mid_stream_free_all_blocks(server, client):
    got = []

    def one(i):
        stream = client.chat.completions.create(
            model=MODEL, stream=True, max_tokens=400, temperature=0.9, seed=i,
            messages=[{"role": "user", "content": f"Write a long essay about topic {i}."}],
        )
        n = 0
        for _ in stream:
            n += 1
            if n == 3:
                break
        stream.close()  # drops the connection mid-stream
        got.append(n)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == [3] * 20
    deadline = time.time() + 20
    while time.time() < deadline:
        running = metric(server, "ponder_num_requests_running")
        usage = metric(server, "ponder_kv_cache_usage_perc")
        if running == 0 and usage == 0:
            break
        time.sleep(0.2)
    assert metric(server, "ponder_num_requests_running") == 0
    assert metric(server, "ponder_kv_cache_usage_perc") == 0
