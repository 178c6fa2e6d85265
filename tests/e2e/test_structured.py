"""Structured output and tool calling through the official OpenAI SDK against the real binary:
`beta.chat.completions.parse` with a Pydantic model, JSON-schema responses that validate
(`jsonschema`) for 20 seeded prompts at temperature 1, and a tool-call round trip
(call -> tool result -> answer), streaming and not."""
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

MODEL = "SmolLM2-135M-Instruct.Q4_1"


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0, le=100_000_000)


def parse_api(client):
    # Older SDKs keep `parse` under `beta`; newer ones also on `chat.completions`.
    beta = getattr(client, "beta", None)
    if beta is not None and hasattr(beta, "chat"):
        return beta.chat.completions.parse
    return client.chat.completions.parse


def test_parse_with_a_pydantic_model_returns_a_parsed_object(client):
    r = parse_api(client)(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City, temperature=0, max_tokens=96,
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop", msg.content
    assert isinstance(msg.parsed, City)
    assert msg.parsed == City.model_validate_json(msg.content)


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "rating": {"type": "number"},
        "seen": {"type": "boolean"},
    },
    "required": ["title", "year", "tags", "rating", "seen"],
    "additionalProperties": False,
}


def test_json_schema_responses_validate_for_20_seeded_prompts(client):
    topics = ["a film", "a book", "a song", "a game", "a play"]
    done = 0
    for seed in range(20):
        r = client.chat.completions.create(
            model=MODEL, temperature=1.0, seed=seed, max_tokens=160,
            messages=[{"role": "user", "content": f"Describe {topics[seed % 5]} as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}},
        )
        c = r.choices[0]
        if c.finish_reason == "length":
            continue  # cut off by max_tokens: a prefix of valid JSON, not a document
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.message.content), SCHEMA)
        done += 1
    assert done >= 18, f"only {done} of 20 finished within max_tokens"


def test_schema_errors_are_400_naming_the_problem(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}},
        )
    assert e.value.body["param"] == "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4,
            response_format={"type": "bogus"},
        )
    assert e.value.body["param"] == "response_format.type"


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def answer_after(call_id, name, args):
    return ASK + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp_c": 18, "sky": "sunny"})},
    ]


def test_tool_call_round_trip(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0, max_tokens=64)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    r2 = client.chat.completions.create(
        model=MODEL, messages=answer_after(call.id, call.function.name, call.function.arguments),
        tools=TOOLS, tool_choice="none", temperature=0, max_tokens=32)
    assert r2.choices[0].message.tool_calls is None
    assert r2.choices[0].message.content


def test_tool_call_round_trip_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, temperature=0, max_tokens=64, stream=True)
    calls, finish, content = {}, None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            slot["name"] += tc.function.name or ""
            slot["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    args = json.loads(calls[0]["arguments"])
    answer = ""
    for chunk in client.chat.completions.create(
            model=MODEL, messages=answer_after(calls[0]["id"], "get_weather", json.dumps(args)),
            tools=TOOLS, temperature=0, max_tokens=32, stream=True, tool_choice="none"):
        if chunk.choices:
            answer += chunk.choices[0].delta.content or ""
    assert answer
