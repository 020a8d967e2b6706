"""Tests of the Python module `dsv4` (bindings/) over the C API: models, sessions, tokenizer,
generate / streaming, chat(), the encoding_dsv4-compatible functions against the chat vectors,
exceptions carrying the C error text, and the GIL being released during compute.
Environment (CTest sets it): PYTHONPATH=<build>/python, DSV4_TEST_MODEL (generated tiny model with
tokenizer), optional DSV4_TINY_A (reference fixture) and DSV4_CHAT_VECTORS. Skips as a whole when
the module was not built (no pybind11) or the model is absent.
"""
import ast
import glob
import json
import os
import threading
import time

import pytest


def _import_dsv4():
    try:
        import dsv4
        return dsv4
    except ImportError:
        # Built but not importable is a failure; never built (no pybind11) is a skip.
        for d in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            if d and glob.glob(os.path.join(d, "dsv4", "_dsv4*.so")):
                raise
        pytest.skip("the dsv4 module was not built (pybind11 missing or DSV4_PYTHON=OFF)", allow_module_level=True)


dsv4 = _import_dsv4()
np = pytest.importorskip("numpy")

MODEL = os.environ.get("DSV4_TEST_MODEL", "")
TINY_A = os.environ.get("DSV4_TINY_A", "")
VECTORS = os.environ.get("DSV4_CHAT_VECTORS", "")
if not os.path.isfile(os.path.join(MODEL, "config.json")):
    pytest.skip("DSV4_TEST_MODEL not set (run through CTest)", allow_module_level=True)

EOS = "<｜end▁of▁sentence｜>"
GREEDY = dict(temperature=0.0, stop_on_eos=False)


@pytest.fixture(scope="module")
def model():
    return dsv4.Model(MODEL, threads=2, log_level=3)


@pytest.fixture(scope="module")
def tok(model):
    return model.tokenizer


# ---- module, errors ------------------------------------------------------------------------------

def test_version_and_exports():
    assert dsv4.__version__.count(".") == 2
    assert dsv4.ABI_VERSION >= 1
    for name in ("Model", "Session", "Tokenizer", "generate", "chat", "encode_messages",
                 "parse_message_from_completion_text", "Error"):
        assert hasattr(dsv4, name)
    from dsv4 import encode_messages, parse_message_from_completion_text  # noqa: F401


def test_errors_carry_the_c_text():
    with pytest.raises(dsv4.FileError) as e:
        dsv4.Model("/nonexistent/dsv4-model")
    assert isinstance(e.value, OSError) and isinstance(e.value, dsv4.Error)
    assert e.value.status == "io"
    assert "/nonexistent/dsv4-model" in str(e.value)
    with pytest.raises(dsv4.InvalidArgumentError) as e:
        dsv4.Model(MODEL, threads=-1)
    assert isinstance(e.value, ValueError) and "threads" in str(e.value)
    with pytest.raises(dsv4.FileError):
        dsv4.Tokenizer("/nonexistent/tokenizer.json")


# ---- tokenizer -------------------------------------------------------------------------------------

def test_tokenizer(model, tok):
    text = "<｜User｜>你好<｜Assistant｜><think>推理</think>答案" + EOS
    assert tok.encode(text) == [128803, 30594, 128804, 128821, 36101, 128822, 7624, 1]
    assert tok.decode(tok.encode(text)) == text
    assert EOS not in tok.decode(tok.encode(text), skip_special=True)
    assert tok.token_to_id("<think>") == 128821 and tok.token_to_id("surely-not-a-token") is None
    assert (tok.bos_id, tok.eos_id, tok.vocab_size, len(tok)) == (0, 1, 129280, 129280)
    with pytest.raises(dsv4.InvalidArgumentError, match="129280"):
        tok.decode([1, 129280])
    standalone = dsv4.Tokenizer(os.path.join(MODEL, "tokenizer.json"))
    assert standalone.encode("Hello world") == tok.encode("Hello world")


def test_model_options():
    m = dsv4.Model(MODEL, backend_params={"threads": 2}, log_level=3, rollback_tokens=8)
    assert m.info["backend"] == "cpu"
    with pytest.raises(dsv4.InvalidArgumentError, match="no_such_setting"):
        dsv4.Model(MODEL, backend_params={"no_such_setting": 1}, log_level=3)
    with pytest.raises(dsv4.InvalidArgumentError, match="threads"):
        dsv4.Model(MODEL, threads=2, backend_params={"threads": 3}, log_level=3)
    # the null backend: the whole contract, no computation (ids from a hash); threads does not apply
    n = dsv4.Model(MODEL, backend="null", threads=4, log_level=3)
    assert n.info["backend"] == "null"
    r = n.session(64).generate([5, 6, 7], max_new_tokens=4, **GREEDY)
    assert len(r.tokens) == 4 and all(0 <= t < 129280 for t in r.tokens)
    with pytest.raises(dsv4.UnsupportedError, match="no-such-backend"):
        dsv4.Model(MODEL, backend="no-such-backend")
    # numerics: the official bf16 run is a different arithmetic than the f32 reference
    ref, off = (dsv4.Model(MODEL, numerics=v, log_level=3) for v in ("reference", "official"))
    a, b = ref.session(16), off.session(16)
    a.append([5, 6, 7])
    b.append([5, 6, 7])
    d = np.abs(a.logits() - b.logits()).max()
    assert np.isfinite(d) and d > 0
    with pytest.raises(ValueError, match="numerics"):
        dsv4.Model(MODEL, numerics="fp64", log_level=3)


def test_tokenizer_keeps_model_alive():
    t = dsv4.Model(MODEL, threads=1, log_level=3).tokenizer  # the Model object is dropped at once
    assert t.decode(t.encode("still alive")) == "still alive"


# ---- sessions --------------------------------------------------------------------------------------

def test_session_append_chunked_equals_full(model):
    prompt = [5, 17, 300, 42, 9, 1000, 77, 3]
    a = model.session(64)
    a.append(prompt, logits="all")
    full = a.logits()
    assert full.shape == (8, 129280) and np.isfinite(full).all()
    b = model.session(64)
    b.append(prompt[:3], logits="none")
    assert b.logits().shape == (0, 129280)
    b.append(prompt[3:], logits="all")
    assert np.abs(b.logits() - full[3:]).max() <= 1e-3
    c = model.session(64)
    calls = []
    c.prefill(prompt, chunk=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 8), (6, 8), (8, 8)]
    assert np.abs(c.logits()[0] - full[7]).max() <= 1e-3
    assert c.tokens == prompt and c.position == 8 and c.max_context == 64
    # a progress callback that returns True cancels; one that raises propagates its exception
    d = model.session(64)
    with pytest.raises(dsv4.CancelledError):
        d.prefill(prompt, chunk=3, progress=lambda done, total: True)
    assert d.position == 3

    def boom(done, total):
        raise KeyError("from the callback")
    with pytest.raises(KeyError):
        model.session(64).prefill(prompt, chunk=2, progress=boom)


def test_session_errors_leave_state(model):
    s = model.session(16)
    s.append([1, 2, 3])
    with pytest.raises(dsv4.InvalidArgumentError, match="-1"):
        s.append([4, -1])
    with pytest.raises(dsv4.ContextOverflowError):
        s.append(list(range(10, 24)))
    with pytest.raises(ValueError):
        s.append([4], logits="some")
    with pytest.raises(dsv4.InvalidArgumentError):
        s.append([])
    assert s.tokens == [1, 2, 3]


def test_truncate(model):
    s = model.session(64)
    s.append([10, 20, 30, 40])
    ref = model.session(64)
    ref.append([10, 20, 30, 50])
    s.truncate(3)
    assert s.tokens == [10, 20, 30] and s.position == 3 and s.logits().shape[0] == 0
    s.append([50])
    assert np.abs(s.logits() - ref.logits()).max() <= 1e-4
    with pytest.raises(dsv4.InvalidArgumentError):
        s.truncate(5)
    s.append(list(range(100, 120)))
    with pytest.raises(dsv4.InvalidArgumentError, match="16"):
        s.truncate(4)  # 20 tokens back: beyond rollback_tokens
    assert s.position == 24
    s.truncate(0)
    assert s.tokens == []


def test_fork_reset_sample(model):
    s = model.session(64)
    s.append([10, 20, 30])
    f = s.fork()
    s.append([40])
    f.append([40])
    assert np.abs(s.logits() - f.logits()).max() <= 1e-4
    f.append([50, 60])
    assert s.position == 4 and f.position == 6
    greedy = dsv4.Sampler(temperature=0)
    assert s.sample(greedy) == int(np.argmax(s.logits()[0]))
    assert greedy.sample(s.logits()[0]) == int(np.argmax(s.logits()[0]))
    with pytest.raises(dsv4.InvalidArgumentError):
        dsv4.Sampler(temperature=-1)
    s.reset()
    assert s.position == 0 and s.tokens == []
    assert s.stats["n_prompt_tokens"] == 4


# ---- generation ------------------------------------------------------------------------------------

def test_generate_deterministic_and_callback(model, tok):
    prompt = tok.encode("Once upon a time")
    r1 = model.session(128).generate(prompt, max_new_tokens=6, **GREEDY)
    r2 = model.session(128).generate(prompt, max_new_tokens=6, **GREEDY)
    assert r1.tokens == r2.tokens and len(r1.tokens) == 6 and r1.stop_reason == "max_tokens"
    assert r1.text == tok.decode(r1.tokens) and r1.n_prompt_tokens == len(prompt)
    seen = []
    r3 = model.session(128).generate(prompt, max_new_tokens=50, callback=lambda t, p: seen.append(t) or len(seen) >= 3,
                                     **GREEDY)
    assert r3.stop_reason == "cancelled" and seen == r1.tokens[:3] and r3.tokens == seen

    def boom(t, p):
        raise RuntimeError("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        model.session(128).generate(prompt, max_new_tokens=5, callback=boom)
    with pytest.raises(dsv4.InvalidArgumentError):
        model.session(128).generate([129280])
    with pytest.raises(dsv4.InvalidArgumentError):
        model.session(128).generate(prompt, temperature=-2.0)
    assert dsv4.generate(model, "Once upon a time", max_new_tokens=6, **GREEDY) == r1.text


def test_generate_keeps_every_token_and_stop_ids(model, tok):
    prompt = tok.encode("Once upon a time")
    s = model.session(128)
    r = s.generate(prompt, max_new_tokens=5, **GREEDY)
    assert s.tokens == prompt + r.tokens and len(r.tokens) == 5
    assert s.logits().shape == (0, 129280)  # sampling ran inside the backend
    # a second turn continues after every generated token
    r2 = s.generate([3], max_new_tokens=2, **GREEDY)
    assert s.tokens == prompt + r.tokens + [3] + r2.tokens
    stop_id = r.tokens[2]
    k = r.tokens.index(stop_id)
    r3 = model.session(128).generate(prompt, max_new_tokens=5, stop_token_ids=[stop_id], **GREEDY)
    assert r3.stop_reason == "stop_token" and r3.tokens == r.tokens[:k + 1]
    with pytest.raises(dsv4.InvalidArgumentError):
        model.session(128).generate(prompt, stop_token_ids=[129280])


def test_stream(model, tok):
    prompt = tok.encode("Once upon a time")
    full = model.session(128).generate(prompt, max_new_tokens=6, **GREEDY)
    s = model.session(128)
    it = s.stream(prompt, max_new_tokens=6, **GREEDY)
    with pytest.raises(RuntimeError, match="generating"):
        s.append([1])  # busy while the stream runs
    pairs = list(it)
    assert [t for t, _ in pairs] == full.tokens
    assert "".join(p for _, p in pairs) == full.text
    assert it.result.stop_reason == "max_tokens" and it.result.tokens == full.tokens
    # closing early cancels, and the session is usable again
    it = s.stream(prompt, max_new_tokens=10000, **GREEDY)
    next(it)
    it.close()
    assert it.result is None or it.result.stop_reason == "cancelled"
    s.reset()
    assert "".join(dsv4.generate(model, prompt, stream=True, max_new_tokens=6, **GREEDY)) == full.text


def test_gil_is_released(model, tok):
    s = model.session(256)
    done = threading.Event()
    ticks = 0

    def work():
        s.generate(tok.encode("Hello"), max_new_tokens=24, **GREEDY)
        done.set()
    th = threading.Thread(target=work)
    t0 = time.perf_counter()
    th.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    th.join()
    elapsed = time.perf_counter() - t0
    # With the GIL held by generate the loop could not run meanwhile.
    assert elapsed > 0.05 and ticks >= 0.3 * elapsed / 0.0011, (ticks, elapsed)


# ---- chat format -----------------------------------------------------------------------------------

def test_chat_functions(model):
    msgs = [{"role": "user", "content": "Hi"}]
    assert dsv4.encode_messages(msgs, "chat") == "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>"
    assert dsv4.encode_messages(msgs, thinking_mode="thinking", add_default_bos_token=False).endswith("<think>")
    with pytest.raises(dsv4.InvalidArgumentError):
        dsv4.encode_messages([{"role": "wizard", "content": "x"}], "chat")
    with pytest.raises(dsv4.InvalidArgumentError):
        dsv4.encode_messages(msgs, "dreaming")
    m = dsv4.parse_message_from_completion_text("r</think>c" + EOS, "thinking")
    assert m == {"role": "assistant", "content": "c", "reasoning_content": "r", "tool_calls": []}
    with pytest.raises(ValueError, match="missing EOS"):
        dsv4.parse_message_from_completion_text("truncated", "chat")
    assert dsv4.parse_message_from_completion_text("truncated", "chat", strict=False)["content"] == "truncated"

    reply = dsv4.chat(model, msgs, max_new_tokens=5, **GREEDY)
    assert reply["role"] == "assistant" and reply["stop_reason"] == "max_tokens" and reply["content"]
    deltas = list(dsv4.chat(model, msgs, thinking_mode="thinking", stream=True, max_new_tokens=5, **GREEDY))
    assert "done" in deltas[-1]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas[:-1])
    assert reasoning == deltas[-1]["done"]["reasoning_content"] and reasoning


def _vectors(kind):
    if not os.path.isdir(VECTORS):
        return []
    out = []
    for f in sorted(glob.glob(os.path.join(VECTORS, "*", "*.json"))):
        with open(f, encoding="utf-8") as fh:
            v = json.load(fh)
        if v.get("kind") == kind:
            out.append(pytest.param(v, id=v["id"]))
    return out


@pytest.mark.parametrize("v", _vectors("encode"))
def test_encode_vectors(v):
    p = v["params"]
    revision = "0731" if "0731" in v.get("encoder", {}).get("repo", "") else None
    kwargs = dict(drop_thinking=p.get("drop_thinking", True), add_default_bos_token=p.get("add_default_bos_token", True),
                  reasoning_effort=p.get("reasoning_effort"))
    if "expected_error" in v:
        with pytest.raises(dsv4.Error):
            dsv4.encode_messages(v["messages"], p["thinking_mode"], revision=revision, **kwargs)
    else:
        assert dsv4.encode_messages(v["messages"], p["thinking_mode"], revision=revision, **kwargs) == v["expected_prompt"]


@pytest.mark.parametrize("v", _vectors("parse"))
def test_parse_vectors(v):
    mode = v["params"]["thinking_mode"]
    if v.get("expected_error"):
        with pytest.raises(ValueError):
            dsv4.parse_message_from_completion_text(v["completion"], mode)
    else:
        expected = v["expected"]
        expected = ast.literal_eval(expected) if isinstance(expected, str) else expected
        assert dsv4.parse_message_from_completion_text(v["completion"], mode) == expected


# ---- the reference fixture (no tokenizer, expert override) ----------------------------------------

@pytest.mark.skipif(not os.path.isdir(TINY_A), reason="reference fixture tiny-a absent")
def test_tiny_a_token_ids():
    m = dsv4.Model(TINY_A, experts_per_token=2, threads=2, log_level=3)
    assert m.tokenizer is None
    assert m.info["experts_per_token"] == 2 and m.info["config_experts_per_token"] == 3
    r = m.session().generate([1, 2, 3], max_new_tokens=4, **GREEDY)
    assert len(r.tokens) == 4 and r.text == "" and all(0 <= t < 1024 for t in r.tokens)
    with pytest.raises(dsv4.UnsupportedError):
        dsv4.generate(m, "text needs a tokenizer")


# ---- review fixes: busy flag, re-entry, several consumers, error text, argument checks -------------

def _join_all(threads, timeout=60):
    for th in threads:
        th.join(timeout=timeout)
    assert not any(th.is_alive() for th in threads), "a thread hung"


def test_finished_stream_does_not_release_a_running_one(model, tok):
    s = model.session(256)
    a = s.stream(tok.encode("Hi"), max_new_tokens=2, **GREEDY)
    list(a)
    b = s.stream([1], max_new_tokens=100, **GREEDY)
    next(b)
    a.close()  # a finished stream: must not clear b's busy flag
    with pytest.raises(RuntimeError, match="busy"):
        s.reset()
    with pytest.raises(RuntimeError, match="busy"):
        s.append([4, 5, 6], logits="all")
    b.close()
    b.close()  # idempotent
    s.reset()  # free again


def test_generate_guards_the_session(model, tok):
    s = model.session(256)
    for reenter in (lambda: s.reset(), lambda: s.append([5] * 10, logits="none"), lambda: s.fork(),
                    lambda: s.generate([1], max_new_tokens=1), lambda: s.stream([1], max_new_tokens=1)):
        def cb(t, p, reenter=reenter):
            reenter()
            return False
        with pytest.raises(RuntimeError, match="busy"):
            s.generate([1, 2, 3], max_new_tokens=5, callback=cb, **GREEDY)
        s.reset()  # the guard was released on the way out
    # Two Python threads on one session: while one generates, the others get the busy error.
    errors, results = [], []
    started = threading.Event()

    def slow(t, p):
        started.set()
        time.sleep(0.02)
        return False

    def work():
        try:
            results.append(s.generate(tok.encode("Hello"), max_new_tokens=5, **GREEDY))
        except RuntimeError as e:
            errors.append(e)
    first = threading.Thread(target=lambda: results.append(
        s.generate(tok.encode("Hello"), max_new_tokens=40, callback=slow, **GREEDY)))
    first.start()
    assert started.wait(60)
    others = [threading.Thread(target=work) for _ in range(3)]
    [th.start() for th in others]
    _join_all(others)
    _join_all([first])
    assert len(results) == 1 and len(errors) == 3, (results, errors)
    assert all("busy" in str(e) for e in errors)


def test_several_consumers_of_one_stream(model):
    s = model.session(512)
    st = s.stream([3], max_new_tokens=60, **GREEDY)
    got = []

    def consume():
        for item in st:
            got.append(item)
    threads = [threading.Thread(target=consume) for _ in range(4)]
    [th.start() for th in threads]
    _join_all(threads)
    assert len(got) == 60
    assert st.result is not None and st.result.stop_reason == "max_tokens"
    s.reset()


def test_error_text_with_raw_bytes_survives():
    with pytest.raises(dsv4.FileError) as e:
        dsv4.Tokenizer(b"/nonexistent/\xff\xfe/tokenizer.json")
    assert "nonexistent" in str(e.value) and "\ufffd" in str(e.value)


def test_token_to_id_rejects_embedded_nul(tok):
    assert tok.token_to_id("a") is not None
    with pytest.raises(ValueError, match="NUL"):
        tok.token_to_id("a\0zzz")


def test_encode_lone_surrogate_is_a_clear_error(tok):
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        tok.encode("ab\ud800cd")
    with pytest.raises(UnicodeEncodeError):
        tok.token_to_id("\udfff")
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(42)
    assert tok.encode(b"hello") == tok.encode("hello")
