"""End-to-end: the official OpenAI Python SDK against the real ponder binary on loopback."""
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct.Q4_1"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_chat_non_stream_greedy(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=32)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 37
    assert r.usage.completion_tokens == 8  # 7 text tokens + <|im_end|>
    assert r.usage.total_tokens == 45


def test_chat_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, temperature=0, max_tokens=32, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 37 and chunks[-1].usage.completion_tokens == 8


def test_n3_samples_and_usage_counts_prompt_once(client):
    r = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=1.0, seed=11, n=3, max_tokens=8
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.prompt_tokens == 37
    per_choice = [c.finish_reason for c in r.choices]
    assert all(f in ("stop", "length") for f in per_choice)
    assert r.usage.completion_tokens <= 3 * 8 and r.usage.completion_tokens >= 3


def test_max_tokens_gives_length(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert r.choices[0].message.content == "The capital of"


def test_stop_string(client):
    r = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=32, stop=[" is"]
    )
    assert r.choices[0].message.content == "The capital of France"
    assert r.choices[0].finish_reason == "stop"


def test_seed_reproducible(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
              temperature=1.0, seed=1234, max_tokens=24)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b and len(a) > 0


def test_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=4, logprobs=True, top_logprobs=2
    )
    lp = r.choices[0].logprobs.content
    assert [t.token for t in lp] == ["The", " capital", " of", " France"]
    for t in lp:
        assert t.logprob <= 0.0
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely token


def test_completions_endpoint(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", temperature=0, max_tokens=11)
    assert r.choices[0].text == " 5, 6, 7, 8"
    assert r.choices[0].finish_reason == "length"


def test_errors_are_typed(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=5)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=FRANCE)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=100000)
    assert "8192" in str(e.value)
