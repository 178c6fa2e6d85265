"""The Dockerfile without a Docker engine: its runtime stages are parsed, and the binary is
started the way the image starts it (the stage's ENV, ENTRYPOINT; the model directory the
image mounts or bakes in), then probed with the stage's HEALTHCHECK command. The RUN lines
are checked by scripts/check-dockerfile (hadolint + "CI runs the same command")."""
import json
import os
import re
import signal
import subprocess

import pytest
from conftest import BIN, ROOT, free_port, wait_ready

RELEASE = os.path.join(ROOT, "target", "release", "ponder")


def stages():
    """{stage name: [(keyword, args)]} from the Dockerfile (continuations joined)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("check_dockerfile", os.path.join(ROOT, "scripts", "check-dockerfile"))
    spec = importlib.util.spec_from_loader("check_dockerfile", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    out, cur = {}, None
    for kw, args in mod.instructions(open(os.path.join(ROOT, "Dockerfile")).read()):
        if kw == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.I)
            cur = m.group(1) if m else args
            out[cur] = [(kw, args)]
        elif cur is not None:
            out[cur].append((kw, args))
    return out


def stage_env(instrs):
    env = {}
    for kw, args in instrs:
        if kw == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                env[k] = v
    return env


def one(instrs, kw):
    found = [a for k, a in instrs if k == kw]
    assert len(found) == 1, (kw, found)
    return found[0]


def healthcheck_cmd(instrs):
    args = one(instrs, "HEALTHCHECK")
    return json.loads(args[args.index("CMD") + 3:].strip())


def test_runtime_stages_are_non_root_with_healthcheck_and_serve_entrypoint():
    s = stages()
    assert list(s)[-1] == "cpu", "the CPU image must be the default (last) target"
    for name in ("cpu", "cuda"):
        instrs = s[name]
        assert one(instrs, "USER") == "65532:65532"
        assert json.loads(one(instrs, "ENTRYPOINT")) == ["ponder", "serve"]
        assert healthcheck_cmd(instrs) == ["ponder", "healthcheck"]
        assert one(instrs, "EXPOSE") == stage_env(instrs)["PONDER_PORT"] == "8000"
        assert stage_env(instrs)["PONDER_HOST"] == "0.0.0.0"
    assert one(s["cuda"], "FROM").startswith("nvidia/cuda:") and "-runtime-" in one(s["cuda"], "FROM")
    assert stage_env(s["cpu"])["PONDER_DEVICE"] == "cpu"
    assert stage_env(s["cuda"])["PONDER_DEVICE"] == "cuda"


def image_env(stage, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
    env.update(stage_env(stages()[stage]))
    # The image's /app/models is the repository's models/; the test listens on loopback only.
    env.update(PONDER_MODEL_DIR=os.path.join(ROOT, "models"), PONDER_HOST="127.0.0.1", PONDER_PORT=str(port))
    return env


def run_cmd(cmd, binary, env):
    assert cmd[0] == "ponder"
    return subprocess.run([binary, *cmd[1:]], env=env, capture_output=True, text=True, timeout=60)


def test_cpu_image_entrypoint_serves_and_healthcheck_passes(tmp_path):
    s = stages()["cpu"]
    port = free_port()
    env = image_env("cpu", port)
    health = healthcheck_cmd(s)
    # Before the server is up the health check fails.
    r = run_cmd(health, BIN, env)
    assert r.returncode == 1 and "cannot connect to 127.0.0.1" in r.stderr
    entry = json.loads(one(s, "ENTRYPOINT"))
    log_path = os.path.join(ROOT, "target", "e2e-container.log")
    proc = subprocess.Popen([BIN, *entry[1:]], env=env, cwd=str(tmp_path),
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log_path)
        r = run_cmd(health, BIN, env)
        assert (r.returncode, r.stdout.strip()) == (0, "ok: GET /health answered 200")
        r = run_cmd(health + ["--path", "/nope"], BIN, env)
        assert (r.returncode, r.stderr.strip()) == (1, "error: GET /nope answered 404")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = open(log_path).read()
    assert "device: cpu" in log


def test_cuda_image_entrypoint_without_a_gpu_fails_clearly():
    """The image's binary is built with `--features cuda` (the Dockerfile's build stage, which
    CI runs too); on a machine with no usable GPU the CUDA image must exit 1 with the reason."""
    if not os.path.exists(RELEASE):
        if os.environ.get("CI"):
            pytest.fail(f"{RELEASE} missing: scripts/test builds it before the e2e tests")
        pytest.skip(f"{RELEASE} not built")
    s = stages()["cuda"]
    env = image_env("cuda", free_port())
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True) if os.path.exists("/usr/bin/nvidia-smi") else None
    if probe is not None and probe.returncode == 0:
        pytest.skip("a GPU is present: the CUDA image would start")
    entry = json.loads(one(s, "ENTRYPOINT"))
    r = subprocess.run([RELEASE, *entry[1:]], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1]
    assert "built without CUDA support" not in last, (
        f"{RELEASE} was not built with `--features cuda` (the Dockerfile's build command)")
    assert r.returncode == 1
    assert last.startswith("error: --device cuda: no usable CUDA device: "), last


def test_model_stage_runs_in_the_image_layout(tmp_path):
    """The model-fetched stage, replayed in an empty directory: only what its COPY lines bring
    from the build context, then its RUN, from its WORKDIR. The model must come out whole."""
    instrs = stages()["model-fetched"]
    workdir = tmp_path / one(instrs, "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    for kw, args in instrs:
        if kw == "COPY":
            src, dst = args.split()
            target = workdir / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(open(os.path.join(ROOT, src), "rb").read())
            os.chmod(target, 0o755)
    r = subprocess.run(one(instrs, "RUN"), shell=True, cwd=workdir, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model = workdir / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.stat().st_size == 98362432
