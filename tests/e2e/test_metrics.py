"""/metrics passes Prometheus's own linter (`promtool check metrics`, Debian's prometheus
package, installed by scripts/test), and `--metrics-compat vllm` adds vLLM's names."""
import shutil
import signal
import subprocess
import urllib.request

import pytest
from conftest import spawn_server

MODEL = "SmolLM2-135M-Instruct.Q4_1"


def promtool(text):
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed (scripts/test installs Debian's prometheus package)")
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).decode()


def scrape(base):
    return urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()


def test_live_metrics_pass_promtool(server, client):
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    text = scrape(server)
    assert "ponder_num_requests_waiting 0" in text.splitlines()
    code, out = promtool(text)
    assert code == 0, out


def test_vllm_compat_names_for_dashboards_and_routers():
    proc, base, _ = spawn_server(["--metrics-compat", "vllm", "--served-model-name", "smol"], "e2e-metrics-compat.log")
    try:
        text = scrape(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    lines = text.splitlines()
    for line in ['vllm:num_requests_waiting{model_name="smol"} 0', 'vllm:num_requests_running{model_name="smol"} 0',
                 'vllm:kv_cache_usage_perc{model_name="smol"} 0', 'vllm:prompt_tokens_total{model_name="smol"} 0']:
        assert line in lines, text
    # promtool's only complaint is the ':' in vLLM's own names (kept for compatibility).
    code, out = promtool(text)
    problems = [l for l in out.splitlines() if l.strip()]
    assert code != 0 and problems
    assert all(p.startswith("vllm:") and p.endswith("metric names should not contain ':'") for p in problems), out
