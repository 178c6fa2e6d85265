"""Every request field of OpenAI's chat and completions APIs, as the pinned `openai` SDK's own
type definitions list them, is either honoured (200) or rejected with a 400 that names it:
never accepted and ignored. A field the SDK gains fails this test until it is classified here
(and in src/api/fields.rs)."""
import json

import pytest
from openai.types import completion_create_params as completion_params
from openai.types.chat import completion_create_params as chat_params
from test_faults import MODEL, post

TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}

# field -> (a value to send, expected status). 200 = honoured (other tests check the effect).
CHAT = {
    "messages": ([{"role": "user", "content": "hi"}], 200),
    "model": (MODEL, 200),
    "audio": ({"voice": "alloy", "format": "mp3"}, 400),
    "frequency_penalty": (0.5, 200),
    "function_call": ("auto", 400),
    "functions": ([{"name": "f"}], 400),
    "logit_bias": ({"2": -100}, 200),
    "logprobs": (True, 200),
    "max_completion_tokens": (2, 200),
    "max_tokens": (2, 200),
    "metadata": ({"k": "v"}, 400),
    "modalities": (["text"], 200),
    "moderation": ({"model": "omni-moderation-latest"}, 400),
    "n": (2, 200),
    "parallel_tool_calls": (True, 200),
    "prediction": ({"type": "content", "content": "x"}, 400),
    "presence_penalty": (0.5, 200),
    "prompt_cache_key": ("k", 400),
    "prompt_cache_options": ({"mode": "implicit"}, 400),
    "prompt_cache_retention": ("24h", 400),
    "reasoning_effort": ("low", 200),
    "response_format": ({"type": "json_object"}, 200),
    "safety_identifier": ("h1", 200),
    "seed": (7, 200),
    "service_tier": ("auto", 200),
    "stop": (["\n\n"], 200),
    "store": (False, 200),
    "stream": (False, 200),
    "stream_options": ({"include_usage": True}, 400),  # only with stream: true (next test)
    "temperature": (0.5, 200),
    "tool_choice": ("none", 200),
    "tools": ([TOOL], 200),
    "top_logprobs": (2, 400),  # needs logprobs: true (OpenAI's rule too)
    "top_p": (0.5, 200),
    "user": ("alice", 200),
    "verbosity": ("low", 400),
    "web_search_options": ({}, 400),
}

COMPLETIONS = {
    "model": (MODEL, 200),
    "prompt": ("Once upon a time", 200),
    "best_of": (1, 200),
    "echo": (True, 200),
    "frequency_penalty": (0.5, 200),
    "logit_bias": ({"2": -100}, 200),
    "logprobs": (2, 200),
    "max_tokens": (2, 200),
    "n": (1, 200),
    "presence_penalty": (0.5, 200),
    "seed": (7, 200),
    "stop": (["\n"], 200),
    "stream": (False, 200),
    "stream_options": ({"include_usage": True}, 400),
    "suffix": ("The end.", 400),  # SmolLM2 has no fill-in-the-middle tokens
    "temperature": (0.5, 200),
    "top_p": (0.5, 200),
    "user": ("alice", 200),
}


def sdk_fields(module):
    t = module.CompletionCreateParamsStreaming
    return set(t.__required_keys__) | set(t.__optional_keys__)


def test_every_sdk_field_is_classified():
    assert sdk_fields(chat_params) == set(CHAT)
    assert sdk_fields(completion_params) == set(COMPLETIONS)


@pytest.mark.parametrize("field", sorted(CHAT))
def test_chat_field_is_honoured_or_400(server, field):
    value, want = CHAT[field]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, field: value}
    status, _, data = post(server, "/v1/chat/completions", json.dumps(body).encode())
    assert status == want, data
    if want == 400:
        assert data["error"]["param"] == field, data


@pytest.mark.parametrize("field", sorted(COMPLETIONS))
def test_completions_field_is_honoured_or_400(server, field):
    value, want = COMPLETIONS[field]
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2, field: value}
    status, _, data = post(server, "/v1/completions", json.dumps(body).encode())
    assert status == want, data
    if want == 400:
        assert data["error"]["param"] == field, data


def test_conditional_fields_with_their_condition(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": True, "stream_options": {"include_usage": True}}
    assert post(server, "/v1/chat/completions", json.dumps(body).encode())[0] == 200
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "logprobs": True, "top_logprobs": 2}
    assert post(server, "/v1/chat/completions", json.dumps(body).encode())[0] == 200


def test_logit_bias_changes_the_greedy_answer(server, client):
    """`logit_bias` is applied in the sampler: -100 on the greedy first token replaces it."""
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
              temperature=0, max_tokens=3, logprobs=True)
    first = client.chat.completions.create(**kw).choices[0].logprobs.content[0]
    assert first.token == "The"
    status, _, tok = post(server, "/tokenize", json.dumps({"prompt": "The", "add_special_tokens": False}).encode())
    assert status == 200 and tok["count"] == 1
    banned = client.chat.completions.create(**kw, logit_bias={str(tok["tokens"][0]): -100})
    assert banned.choices[0].logprobs.content[0].token != "The"
