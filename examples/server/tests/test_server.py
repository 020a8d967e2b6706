"""`dsv4 serve` on the tiny random model (CPU backend) through the official `openai` client and raw
HTTP: completions and chat (streamed and not), n, tools with every tool_choice, reasoning on/off,
usage, logprobs, stop strings, tokenize, the error classes, SSE framing, /metrics, the model card's
curl, a client that disconnects mid-stream, and the graceful stop.

The model's weights are random, so tests check shapes and invariants (greedy streamed == greedy
non-streamed, counts, markers never leaking), not meaningful text."""
import json
import subprocess
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")

from conftest import Server, wait_idle  # noqa: E402

KEY = "test-key-123"
CARD_MODEL = "cloudyu/DeepSeek-V4-Flash-4Expert"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
MARKERS = ["<think>", "</think>", "｜DSML｜", "<｜end▁of▁sentence｜>"]


@pytest.fixture(scope="module")
def server():
    s = Server(["--served-model-name", f"{CARD_MODEL},tiny", "--max-model-len", "4096", "--max-body-bytes", "65536",
                "--max-n", "4"], api_key=KEY)
    yield s
    assert s.stop() == 0, s.log_path.read_text()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def auth():
    return {"Authorization": f"Bearer {KEY}"}


def no_markup(text):
    return text is None or not any(m in text for m in MARKERS)


# ---- lifecycle, models ---------------------------------------------------------------------------

def test_health_was_503_loading_before_ready(server):
    # The listener is up before Model::load finishes: the first probes saw 503 {"status": "loading"}.
    assert server.health_before_ready, "no /health probe landed during loading"
    for status, body in server.health_before_ready:
        assert status == 503
        assert json.loads(body) == {"status": "loading"}
    assert server.request("GET", "/health")[0] == 200


def test_models_and_version(server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [CARD_MODEL, "tiny"]
    status, body, _ = server.request("GET", "/version")
    assert status == 200 and "version" in json.loads(body)


def test_model_card_curl(server):
    # The model card's command, only host and port adapted (plus the key this server requires).
    out = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{server.url}/v1/completions", "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {KEY}", "--data",
         '{"model": "cloudyu/DeepSeek-V4-Flash-4Expert", "prompt": "Once upon a time,", "max_tokens": 512, '
         '"temperature": 0.5}'],
        capture_output=True, text=True, timeout=300, check=True)
    r = json.loads(out.stdout)
    assert r["object"] == "text_completion"
    assert r["model"] == CARD_MODEL
    assert r["choices"][0]["text"]
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    assert 1 <= r["usage"]["completion_tokens"] <= 512
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]


# ---- completions ---------------------------------------------------------------------------------

def test_completions_stream_equals_non_stream(client):
    kw = dict(model="tiny", prompt="The capital of France is", max_tokens=12, temperature=0)
    full = client.completions.create(**kw)
    assert full.choices[0].finish_reason in ("stop", "length")
    assert full.usage.completion_tokens == 12 or full.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [full.choices[0].finish_reason]


def test_completions_prompt_forms_n_and_indices(client, server):
    r = client.completions.create(model="tiny", prompt=["Hello", "World"], n=2, max_tokens=5, temperature=0)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    by = {c.index: c.text for c in r.choices}
    assert by[0] == by[1] and by[2] == by[3]  # greedy: the n samples of a prompt agree
    status, body, _ = server.request("POST", "/tokenize", {"prompt": "Hello"}, auth())
    ids = json.loads(body)["tokens"]
    alone = client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=0)
    assert alone.choices[0].text == by[0]  # token-id prompt == the text prompt (BOS included)
    world = json.loads(server.request("POST", "/tokenize", {"prompt": "World"}, auth())[1])["tokens"]
    assert r.usage.prompt_tokens == len(ids) + len(world)  # each prompt once, not once per sample
    echo = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0, echo=True)
    assert echo.choices[0].text.startswith("Hello")
    batch = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=3, temperature=0)
    assert len(batch.choices) == 2 and batch.choices[0].text == batch.choices[1].text


def test_completions_sampling_n_seeded(client):
    r = client.completions.create(model="tiny", prompt="Hi", n=3, max_tokens=8, temperature=1.0, seed=5)
    again = client.completions.create(model="tiny", prompt="Hi", n=3, max_tokens=8, temperature=1.0, seed=5)
    assert [c.text for c in r.choices] == [c.text for c in again.choices]


def test_completions_logprobs(client):
    r = client.completions.create(model="tiny", prompt="Hi", max_tokens=6, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(2 <= len(t) <= 3 for t in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)
    streamed = list(client.completions.create(model="tiny", prompt="Hi", max_tokens=6, temperature=0, logprobs=2,
                                              stream=True))
    toks = [t for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert toks == lp.tokens


def test_stop_string(client):
    base = client.completions.create(model="tiny", prompt="Once", max_tokens=16, temperature=0).choices[0].text
    stop = base[len(base) // 2:len(base) // 2 + 2]
    if not stop.strip():
        pytest.skip("greedy text has no usable stop substring")
    r = client.completions.create(model="tiny", prompt="Once", max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == base[:base.index(stop)]


# ---- chat ----------------------------------------------------------------------------------------

def test_chat_stream_equals_non_stream_and_usage(client):
    kw = dict(model=CARD_MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=10, temperature=0)
    full = client.chat.completions.create(**kw)
    msg = full.choices[0].message
    assert msg.role == "assistant" and no_markup(msg.content)
    assert getattr(msg, "reasoning_content", None) is None  # chat mode: no reasoning field
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == (msg.content or "")
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_usage_prompt_tokens_match_tokenize(client, server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    status, body, _ = server.request("POST", "/tokenize", {"messages": messages}, auth())
    assert status == 200
    tk = json.loads(body)
    assert tk["count"] == len(tk["tokens"]) and tk["max_model_len"] == 4096
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens == tk["count"]
    status, body, _ = server.request("POST", "/detokenize", {"tokens": tk["tokens"]}, auth())
    assert json.loads(body)["prompt"].endswith("<｜Assistant｜></think>")


def test_chat_reasoning_on_off(client):
    msgs = [{"role": "user", "content": "Think about it"}]
    on = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                        extra_body={"chat_template_kwargs": {"thinking": True}})
    m = on.choices[0].message
    assert isinstance(m.reasoning_content, str) and no_markup(m.reasoning_content) and no_markup(m.content)
    # The random model never closes its thoughts: every token is reasoning.
    assert on.usage.completion_tokens_details.reasoning_tokens == on.usage.completion_tokens
    top = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                         extra_body={"thinking": True})
    assert top.choices[0].message.reasoning_content == m.reasoning_content
    effort = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=2, temperature=0,
                                            reasoning_effort="high")
    assert isinstance(effort.choices[0].message.reasoning_content, str)
    off = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                         extra_body={"chat_template_kwargs": {"thinking": False}})
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True,
                                                 extra_body={"thinking": True}))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == m.reasoning_content
    assert all(not c.choices[0].delta.content for c in chunks[1:] if c.choices)


def test_chat_n2_and_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2, max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content
    lp = r.choices[0].logprobs.content
    assert len(lp) == 5 and all(len(e.top_logprobs) == 3 for e in lp)
    assert all(e.logprob <= 0 and e.bytes is not None for e in lp)
    assert r.usage.completion_tokens == 10
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2,
                                                 max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
                                                 stream=True))
    streamed = [e.token for c in chunks if c.choices and c.choices[0].index == 0 and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert streamed == [e.token for e in lp]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["auto", "none", "required", "named"])
def test_chat_tools_each_tool_choice(client, choice, stream):
    tc = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else choice
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, tool_choice=tc,
              max_tokens=8, temperature=0)
    if not stream:
        r = client.chat.completions.create(**kw)
        c = r.choices[0]
        assert no_markup(c.message.content)
        for call in c.message.tool_calls or []:
            assert call.id.startswith("call_") and call.type == "function" and no_markup(call.function.arguments)
        reason = c.finish_reason
    else:
        chunks = list(client.chat.completions.create(stream=True, **kw))
        for ch in chunks:
            if ch.choices:
                assert no_markup(ch.choices[0].delta.content)
        reason = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason][0]
    # A random model cannot finish a DSML call in 8 tokens: forced choices run out of tokens.
    if choice in ("required", "named"):
        assert reason in ("length", "tool_calls", "error")
    else:
        assert reason in ("length", "stop", "tool_calls")


def test_forced_tool_choice_enforcement(client, server):
    # logit_bias makes the model end at once, right after the server's prefill.
    status, body, _ = server.request("POST", "/tokenize", {"prompt": "<｜end▁of▁sentence｜>", "add_special_tokens": False},
                                     auth())
    eos = json.loads(body)["tokens"][0]
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, max_tokens=8,
              temperature=0, logit_bias={str(eos): 100})
    # Named: the prefill holds the whole invoke header, so even an immediate end is a call of it.
    r = client.chat.completions.create(tool_choice={"type": "function", "function": {"name": "get_weather"}}, **kw)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert [t.function.name for t in c.message.tool_calls] == ["get_weather"]
    assert json.loads(c.message.tool_calls[0].function.arguments) == {}
    assert c.message.content is None and r.usage.completion_tokens == 1
    chunks = list(client.chat.completions.create(tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                                 stream=True, **kw))
    deltas = [t for ch in chunks if ch.choices for t in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].index == 0 and deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Required: the model must write the name itself; ending at once leaves no call → "error".
    r = client.chat.completions.create(tool_choice="required", **kw)
    c = r.choices[0]
    assert c.finish_reason == "error"
    assert c.model_extra["error"]["code"] == "tool_call_missing"
    assert not c.message.tool_calls and no_markup(c.message.content)


# ---- errors --------------------------------------------------------------------------------------

def test_401_without_or_with_wrong_key(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401
    status, body, headers = server.request("POST", "/v1/completions", {"prompt": "a"})
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert headers.get("WWW-Authenticate") == "Bearer"
    assert server.request("GET", "/health")[0] == 200  # probes need no key
    assert server.request("GET", "/metrics")[0] == 200


def test_404_unknown_model_and_path_and_model_folder_accepted(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="a", max_tokens=1)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    r = client.completions.create(model=server.model, prompt="a", max_tokens=1)  # the folder path
    assert r.model == server.model
    status, body, _ = server.request("GET", "/v1/nothing", headers=auth())
    assert status == 404 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_405_wrong_method(server):
    status, body, headers = server.request("GET", "/v1/chat/completions", headers=auth())
    assert status == 405 and headers.get("Allow") == "POST"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    assert server.request("DELETE", "/health")[0] == 405


def test_400_malformed_json_wrong_type_out_of_range(server, client):
    for raw in ['{"prompt": ', "[1, 2]", "not json", '{"prompt": "\xff"}']:
        status, body, _ = server.request("POST", "/v1/completions", raw, auth())
        assert status == 400, raw
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    deep = '{"prompt": "a", "x": ' + "[" * 64 + "]" * 64 + "}"
    status, body, _ = server.request("POST", "/v1/completions", deep, auth())
    assert status == 400 and "64" in json.loads(body)["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="a", temperature="hot")
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}], temperature=2.5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages="hello")
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="a", n=5)  # --max-n 4
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="a", logit_bias={"-1": 5})
    assert e.value.body["param"] == "logit_bias"


def test_413_body_too_large(server):
    big = json.dumps({"model": "tiny", "prompt": "x" * 70000})
    status, body, _ = server.request("POST", "/v1/completions", big, auth())
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_400_context_exceeded(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=5000)
    assert "maximum context length is 4096 tokens" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 5000}], max_tokens=1)
    assert "maximum context length is 4096 tokens" in e.value.body["message"]


def test_fuzzed_bodies_never_crash(server):
    # Random values of random types in every field the endpoints read: always a JSON answer with a
    # 2xx / 4xx status (never a 500, never a dead server).
    import random
    rnd = random.Random(7)
    values = [None, True, False, 0, -1, 1, 2.5, -1e308, 1e308, 2 ** 63, -(2 ** 63) - 5, "", "x", "\u0000", "<｜DSML｜",
              [], [1, 2], ["a", 3], [[1], [2, "b"]], {}, {"type": "function"}, {"a": {"b": []}},
              [{"role": "user", "content": 5}], [{"role": "tool", "content": [{"type": "x"}]}],
              [{"role": "assistant", "tool_calls": [{"function": {"name": 1}}]}],
              [{"role": "user", "content": "hi", "reasoning_content": 3, "tool_call_id": []}]]
    fields = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
              "min_p", "seed", "n", "stop", "stream", "stream_options", "logprobs", "top_logprobs", "logit_bias",
              "tools", "tool_choice", "echo", "presence_penalty", "frequency_penalty", "repetition_penalty",
              "stop_token_ids", "ignore_eos", "chat_template_kwargs", "thinking", "reasoning_effort", "user",
              "response_format", "parallel_tool_calls", "tokens", "add_special_tokens", "best_of", "suffix"]
    for i in range(300):
        body = {f: rnd.choice(values) for f in rnd.sample(fields, rnd.randint(1, 8))}
        if rnd.random() < 0.5:
            body["model"] = "tiny"
        if "max_tokens" not in body or (isinstance(body["max_tokens"], int) and not isinstance(body["max_tokens"], bool)):
            body["max_tokens"] = 2  # keep accepted requests short (a chat default runs to the context)
        body.pop("max_completion_tokens", None)
        body["stream"] = False
        path = rnd.choice(["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
        status, raw, _ = server.request("POST", path, body, auth())
        assert status in (200, 400, 404), (path, body, status, raw[:300])
        json.loads(raw)
    assert server.request("GET", "/health")[0] == 200


# ---- SSE framing, metrics, disconnects, shutdown -------------------------------------------------

def test_sse_framing_raw(server):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions",
                 body=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                  "temperature": 0, "stream": True}),
                 headers={**auth(), "Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("text/event-stream")
    assert r.getheader("Transfer-Encoding") == "chunked"
    raw = r.read().decode()
    conn.close()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")
    assert events[-1] == ""
    for ev in events[:-1]:
        assert ev.startswith("data: ") and "\n" not in ev, ev
    payloads = [json.loads(ev[6:]) for ev in events[:-2]]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    # The same through curl (what a shell user sees).
    out = subprocess.run(["curl", "-sN", f"{server.url}/v1/completions", "-H", "Content-Type: application/json",
                          "-H", f"Authorization: Bearer {KEY}", "-d",
                          '{"model": "tiny", "prompt": "a", "max_tokens": 3, "stream": true}'],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.split("\n")
    assert [ln for ln in lines if ln][-1] == "data: [DONE]"
    assert all(ln == "" or ln.startswith("data: ") for ln in lines)
    assert all(lines[i + 1] == "" for i, ln in enumerate(lines) if ln.startswith("data: "))


def test_client_disconnect_cancels(server, client):
    before = server.metrics()["dsv4_request_success"]
    aborted = sum(s.value for s in before.samples if s.labels.get("finished_reason") == "abort")
    stream = client.completions.create(model="tiny", prompt="Tell a long story", max_tokens=3000, temperature=0,
                                       stream=True)
    got = 0
    for _ in stream:
        got += 1
        if got == 3:
            break
    stream.close()
    wait_idle(server)
    deadline = time.time() + 10
    while True:  # the request is recorded once its handler has reaped it, just after it stopped
        m = server.metrics()
        after = sum(s.value for s in m["dsv4_request_success"].samples if s.labels.get("finished_reason") == "abort")
        if after == aborted + 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert after == aborted + 1
    gen = m["dsv4_generation_tokens"].samples[0].value
    assert gen > 0


def test_metrics_exposition(server):
    m = wait_idle(server)
    for name in ["dsv4_http_requests", "dsv4_prompt_tokens", "dsv4_generation_tokens", "dsv4_num_requests_running",
                 "dsv4_num_requests_waiting", "dsv4_state_memory_used_bytes", "dsv4_state_memory_budget_bytes",
                 "dsv4_time_to_first_token_seconds", "dsv4_inter_token_latency_seconds",
                 "dsv4_e2e_request_latency_seconds", "dsv4_request_success"]:
        assert name in m, name
    http = {(s.labels["endpoint"], s.labels["status"]): s.value for s in m["dsv4_http_requests"].samples}
    assert http[("/v1/completions", "200")] > 0 and http[("/v1/chat/completions", "200")] > 0
    assert http[("/v1/completions", "400")] > 0 and http[("/v1/completions", "401")] > 0
    assert http[("/v1/completions", "413")] > 0 and http[("other", "404")] > 0
    for h in ["dsv4_time_to_first_token_seconds", "dsv4_inter_token_latency_seconds", "dsv4_e2e_request_latency_seconds"]:
        fam = m[h]
        assert fam.type == "histogram"
        count = [s.value for s in fam.samples if s.name.endswith("_count")][0]
        inf = [s.value for s in fam.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"][0]
        assert count == inf > 0
    assert m["dsv4_num_requests_running"].samples[0].value == 0
    assert m["dsv4_state_memory_used_bytes"].samples[0].value == 0


def test_graceful_stop_ends_open_streams():
    s = Server(["--max-model-len", "4096"])
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "a", "max_tokens": 3000, "stream": True}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    first = r.readline()
    assert first.startswith(b"data: ")
    t0 = time.time()
    rc = s.stop()  # SIGINT: the open stream is cancelled and ends with [DONE]
    rest = r.read().decode()
    assert rc == 0 and time.time() - t0 < 15
    assert rest.endswith("data: [DONE]\n\n")
    assert '"finish_reason":"abort"' in rest
