"""What operators see: JSON logs carrying the client's X-Request-Id, no ANSI colour codes when
stdout is not a terminal, and the SDK's `models.retrieve`."""
import json
import signal

import openai
from conftest import spawn_server
from test_faults import MODEL, post


def test_json_logs_carry_the_incoming_request_id():
    proc, base, log_path = spawn_server(["--log-format", "json"], "e2e-json-logs.log")
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        status, headers, _ = post(base, "/v1/chat/completions", json.dumps(body).encode(),
                                  headers={"X-Request-Id": "trace-7f3a"})
        assert status == 200
        assert headers["x-request-id"] == "trace-7f3a"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    text = open(log_path, encoding="utf-8").read()
    assert "\x1b[" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    done = [r for r in lines if r["fields"].get("message") == "request"]
    assert len(done) == 1, lines
    assert done[0]["fields"]["request_id"] == "trace-7f3a"
    assert done[0]["fields"]["status"] == 200
    assert done[0]["level"] == "INFO"


def test_text_logs_have_no_colour_codes_off_a_terminal(server, client):
    client.models.list()
    import os
    from conftest import ROOT

    text = open(os.path.join(ROOT, "target", "e2e-server.log"), encoding="utf-8").read()
    assert "listening" in text and "\x1b[" not in text


def test_models_retrieve(client):
    m = client.models.retrieve(MODEL)
    assert (m.id, m.object, m.owned_by) == (MODEL, "model", "ponder")
    try:
        client.models.retrieve("gpt-4o")
        raise AssertionError("expected 404")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found"


def test_api_keys_wrong_or_missing_401_right_200(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nsk-file-1\n\n")
    proc, base, _ = spawn_server(["--api-key", "sk-test", "--api-key-file", str(keys)], "e2e-auth.log")
    try:
        kw = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        for key in ["sk-test", "sk-file-1"]:
            ok = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
            assert ok.chat.completions.create(**kw).choices[0].finish_reason in ("stop", "length")
        bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            bad.chat.completions.create(**kw)
            raise AssertionError("expected 401")
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and e.body["code"] == "invalid_api_key"
        status, headers, data = post(base, "/v1/chat/completions", json.dumps(kw).encode())
        assert status == 401 and headers["www-authenticate"] == "Bearer", data
        # Probes and metrics stay open.
        import urllib.request
        assert urllib.request.urlopen(base + "/health", timeout=10).status == 200
        assert urllib.request.urlopen(base + "/metrics", timeout=10).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_api_key_from_the_environment():
    import os
    import urllib.error
    import urllib.request

    proc, base, _ = spawn_server([], "e2e-auth-env.log", env={**os.environ, "PONDER_API_KEY": "sk-env"})
    try:
        try:
            urllib.request.urlopen(base + "/v1/models", timeout=10)
            raise AssertionError("expected 401")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        req = urllib.request.Request(base + "/v1/models", headers={"Authorization": "Bearer sk-env"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
