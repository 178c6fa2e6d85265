"""Starts the real `ponder serve` binary on a free loopback port for the e2e tests."""
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PONDER_BIN", os.path.join(ROOT, "target", "debug", "ponder"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc, base, log_path, timeout=180):
    """Polls /ready until 200; fails when the process exits first or the deadline passes."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server not ready within {timeout} s; see {log_path}")
        time.sleep(0.5)


def spawn_server(args, log_name, env=None, bin_path=None):
    """Starts `ponder serve` on a free loopback port with extra `args`; returns (proc, base
    URL, log path) once /ready answers 200. The caller stops it."""
    port = free_port()
    log_path = os.path.join(ROOT, "target", log_name)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [bin_path or BIN, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, base, log_path)
    return proc, base, log_path


@pytest.fixture(scope="session")
def server():
    proc, base, _ = spawn_server(["--max-waiting", "64"], "e2e-server.log")
    yield base
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "graceful shutdown must exit 0"


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)
