"""Starts and stops `ponder serve` for one model (the eval switches models between runs).

    with Server(binary, model_file, template, extra_args) as url:
        ...   # http://127.0.0.1:<free port>, ready (GET /ready answered 200)

The server's output goes to a log file (its path is in errors and in `Server.log`). On exit
the server gets SIGTERM (it drains), then SIGKILL after `stop_timeout_s`.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def activation_bits_in(log: str) -> str | None:
    """`8` / `12` from the engine's "cpu integer GEMM" log line (text or JSON logs)."""
    m = re.search(r'activation_bits"?[=:]"?(\d+)', log)
    return m.group(1) if m else None


class ServerError(RuntimeError):
    """The server exited or was not ready in time (the message ends with its log tail)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(binary: str, model: str, template: str | None, port: int,
                  extra: list[str]) -> list[str]:
    cmd = [binary, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model]
    if template:
        cmd += ["--chat-template", template]
    return cmd + list(extra)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Server:
    """A `ponder serve` child process, ready on entry, stopped on exit."""

    def __init__(self, binary: str, model: str, template: str | None, extra: list[str],
                 ready_timeout_s: float = 600.0, stop_timeout_s: float = 60.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = serve_command(binary, model, template, self.port, extra)
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        fd, name = tempfile.mkstemp(prefix="ponder-ttc-eval.", suffix=".log")
        os.close(fd)
        self.log = Path(name)
        self.proc: subprocess.Popen | None = None

    def command_line(self) -> str:
        return shlex.join(self.cmd)

    def activation_bits(self) -> str | None:
        """The CPU GEMM's activation precision from the server's start-up log (`auto`
        resolves per model at load), or None where it logged none (the CUDA backend)."""
        return activation_bits_in(self.log.read_text(errors="replace"))

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def __enter__(self) -> str:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._ready():
            if self.proc.poll() is not None:
                raise ServerError(f"the server exited ({self.proc.returncode}) before it was "
                                  f"ready: {self.command_line()}\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the server was not ready after {self.ready_timeout_s:.0f}"
                                  f" s: {self.command_line()}\n{_tail(self.log)}")
            time.sleep(1.0)
        return self.url

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
