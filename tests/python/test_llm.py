"""Tests of the vLLM-style front end of the `dsv4` module: LLM / SamplingParams over the C batch
engine (dsv4_engine_*). Greedy LLM.generate equals Session.generate for every prompt; token-id
prompts, n samples with seeds, stop strings and stop ids, max_tokens, logprobs (against the
session's own logits), logit bias, chat(), parameter errors, and the GIL being released while
requests run.
Environment (CTest sets it) as for test_bindings.py: PYTHONPATH=<build>/python and DSV4_TEST_MODEL
(the generated tiny model with the tokenizer). Skips as a whole when the module was not built.
"""
import gc
import glob
import math
import os
import threading
import time

import pytest


def _import_dsv4():
    try:
        import dsv4
        return dsv4
    except ImportError:
        for d in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            if d and glob.glob(os.path.join(d, "dsv4", "_dsv4*.so")):
                raise
        pytest.skip("the dsv4 module was not built (pybind11 missing or DSV4_PYTHON=OFF)", allow_module_level=True)


dsv4 = _import_dsv4()
np = pytest.importorskip("numpy")
from dsv4 import LLM, SamplingParams  # noqa: E402

MODEL = os.environ.get("DSV4_TEST_MODEL", "")
if not os.path.isfile(os.path.join(MODEL, "config.json")):
    pytest.skip("DSV4_TEST_MODEL not set (run through CTest)", allow_module_level=True)

PROMPTS = ["Once upon a time", "The sea is", "Hello", "1 2 3 4 5"]
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def llm():
    with LLM(MODEL, threads=2, max_num_seqs=8, log_level=3) as engine:
        yield engine


@pytest.fixture(scope="module")
def tok(llm):
    return llm.get_tokenizer()


def reference(llm, ids, max_new_tokens=8, **kw):
    """What a plain Session gives (EOS ignored, as ignore_eos=True)."""
    kw.setdefault("temperature", 0.0)
    return llm.model.session().generate(ids, max_new_tokens=max_new_tokens, stop_on_eos=False, **kw)


def test_exports():
    for name in ("LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "RequestMetrics", "Engine",
                 "BusyError"):
        assert hasattr(dsv4, name), name
    assert issubclass(dsv4.BusyError, dsv4.Error)


def test_greedy_generate_equals_session(llm, tok):
    outs = llm.generate(PROMPTS, GREEDY)
    assert len(outs) == len(PROMPTS)
    assert len({o.request_id for o in outs}) == len(PROMPTS)
    for p, o in zip(PROMPTS, outs):
        ids = tok.encode(p)
        ref = reference(llm, ids)
        assert o.prompt == p and o.prompt_token_ids == ids and o.finished
        assert len(o.outputs) == 1
        c = o.outputs[0]
        assert c.index == 0 and c.token_ids == ref.tokens and c.text == ref.text
        assert c.finish_reason == "length" and c.stop_reason == "max_tokens" and c.finished()
        assert c.logprobs is None and c.cumulative_logprob is None and c.error is None
        assert o.metrics.ttft_seconds > 0 and o.metrics.e2e_seconds >= o.metrics.ttft_seconds
        assert o.metrics.queue_seconds >= 0 and o.metrics.preemptions == 0
    # one prompt, not a list: still a list of one output
    one = llm.generate(PROMPTS[0], GREEDY)
    assert len(one) == 1 and one[0].outputs[0].token_ids == outs[0].outputs[0].token_ids
    assert llm.generate([], GREEDY) == []


def test_token_id_prompts(llm, tok):
    ids = tok.encode(PROMPTS[1])
    want = reference(llm, ids).tokens
    for prompts in ({"prompt_token_ids": ids}, [{"prompt_token_ids": ids}], ids, [ids]):
        outs = llm.generate(prompts, GREEDY)
        assert len(outs) == 1 and outs[0].prompt is None and outs[0].prompt_token_ids == ids
        assert outs[0].outputs[0].token_ids == want
    outs = llm.generate([{"prompt": PROMPTS[1]}, {"prompt_token_ids": ids}], GREEDY)
    assert outs[0].prompt == PROMPTS[1] and outs[0].outputs[0].token_ids == want
    assert outs[1].outputs[0].token_ids == want
    with pytest.raises(TypeError):
        llm.generate([{"text": "x"}], GREEDY)


def test_n_samples_with_seed(llm, tok):
    sp = SamplingParams(n=2, seed=5, temperature=1.0, top_k=50, max_tokens=6, ignore_eos=True)
    ids = tok.encode(PROMPTS[0])
    a = llm.generate(PROMPTS[0], sp)[0]
    b = llm.generate(PROMPTS[0], sp)[0]
    assert [c.index for c in a.outputs] == [0, 1]
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]  # seeded: reproducible
    for c in a.outputs:  # sample i draws with seed + i, as a session with that seed
        ref = reference(llm, ids, 6, temperature=1.0, top_k=50, seed=5 + c.index)
        assert c.token_ids == ref.tokens and c.text == ref.text
    # seed=None: random seeds, still n outputs of the right length
    r = llm.generate(PROMPTS[0], SamplingParams(n=3, max_tokens=4, ignore_eos=True))[0]
    assert len(r.outputs) == 3 and all(len(c.token_ids) == 4 for c in r.outputs)


def test_stop_strings_and_ids(llm, tok):
    ids = tok.encode(PROMPTS[3])
    ref = reference(llm, ids)
    text = ref.text
    cut = next((i for i in range(1, len(text)) if text[i].isascii() and not text[i].isspace()), None)
    if cut is not None:
        stop = text[cut]
        for s in (stop, [stop, "never-appears-anywhere"]):
            c = llm.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True,
                                                                       stop=s))[0].outputs[0]
            assert c.stop_reason == "stop_string" and c.finish_reason == "stop"
            assert stop not in c.text and text.startswith(c.text) and c.text == text[:text.index(stop)]
    stop_id = ref.tokens[2]
    k = ref.tokens.index(stop_id)
    c = llm.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True,
                                                               stop_token_ids=[stop_id]))[0].outputs[0]
    assert c.stop_reason == "stop_token" and c.finish_reason == "stop"
    assert c.token_ids == ref.tokens[:k + 1]


def test_max_tokens_and_per_prompt_params(llm, tok):
    sps = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in (1, 3, 5, 2)]
    outs = llm.generate(PROMPTS, sps)
    for p, sp, o in zip(PROMPTS, sps, outs):
        assert len(o.outputs[0].token_ids) == sp.max_tokens
        assert o.outputs[0].token_ids == reference(llm, tok.encode(p), sp.max_tokens).tokens
    with pytest.raises(ValueError):
        llm.generate(PROMPTS, sps[:2])


def test_logprobs(llm, tok):
    ids = tok.encode(PROMPTS[0])
    sp = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=3)
    c = llm.generate({"prompt_token_ids": ids}, sp)[0].outputs[0]
    assert len(c.logprobs) == 4
    for t, row in zip(c.token_ids, c.logprobs):
        assert t in row and 3 <= len(row) <= 4
        assert all(v <= 0 for v in row.values())
        assert row[t] == max(row.values())  # greedy takes the most likely token of the raw distribution
    assert c.cumulative_logprob == pytest.approx(sum(row[t] for t, row in zip(c.token_ids, c.logprobs)))
    # the first token's log-probabilities are the log-softmax of the session's logits after the prompt
    s = llm.model.session()
    s.append(ids)
    row = s.logits()[0].astype(np.float64)
    logz = row.max() + math.log(np.exp(row - row.max()).sum())
    for t, lp in c.logprobs[0].items():
        assert lp == pytest.approx(row[t] - logz, abs=1e-3)
    top3 = np.argsort(-row, kind="stable")[:3]
    assert set(int(i) for i in top3) <= set(c.logprobs[0])
    # logprobs=0: the sampled token only
    c0 = llm.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True,
                                                                logprobs=0))[0].outputs[0]
    assert [list(r) for r in c0.logprobs] == [[t] for t in c0.token_ids]


def test_logit_bias(llm, tok):
    c = llm.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True,
                                                logit_bias={4242: 100.0}))[0].outputs[0]
    assert c.token_ids == [4242] * 5


def test_chat(llm, tok):
    msgs = [{"role": "user", "content": "Hi"}]
    sp = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    outs = llm.chat(msgs, sp)
    assert len(outs) == 1
    o = outs[0]
    prompt = dsv4.encode_messages(msgs, "chat")
    assert o.prompt == prompt and o.prompt_token_ids == tok.encode(prompt)
    c = o.outputs[0]
    assert c.token_ids == reference(llm, tok.encode(prompt), 5).tokens
    assert c.message["role"] == "assistant"
    assert c.message == dsv4.parse_message_from_completion_text(c.text, "chat", strict=False)
    # several conversations; thinking mode by argument or by chat_template_kwargs
    convs = [msgs, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]]
    two = llm.chat(convs, sp, thinking_mode="thinking")
    assert len(two) == 2 and all(x.prompt.endswith("<think>") for x in two)
    again = llm.chat(convs, sp, chat_template_kwargs={"thinking": True})
    assert [x.outputs[0].token_ids for x in again] == [x.outputs[0].token_ids for x in two]
    assert "reasoning_content" in two[0].outputs[0].message
    eff = llm.chat(msgs, sp, thinking_mode="thinking", reasoning_effort="max")[0]
    assert "Reasoning Effort" in eff.prompt
    with pytest.raises(ValueError):
        llm.chat(msgs, sp, chat_template_kwargs={"no_such_option": 1})


@pytest.mark.parametrize("kwargs", [
    dict(temperature=-1), dict(temperature=float("nan")), dict(top_p=0), dict(top_p=1.5), dict(top_k=-2),
    dict(top_k=1.5), dict(min_p=2), dict(n=0), dict(n=1.0), dict(max_tokens=0), dict(max_tokens=-3),
    dict(logprobs=21), dict(logprobs=-1), dict(stop=""), dict(stop=["ok", ""]), dict(stop=[3]),
    dict(presence_penalty=3), dict(frequency_penalty=-2.5), dict(repetition_penalty=0), dict(seed=-1),
    dict(seed=2**64), dict(stop_token_ids=[-1]), dict(logit_bias={-1: 1.0}), dict(logit_bias={3: float("inf")}),
])
def test_bad_sampling_params(kwargs):
    with pytest.raises(ValueError) as e:
        SamplingParams(**kwargs)
    assert isinstance(e.value, dsv4.InvalidArgumentError)
    assert next(iter(kwargs)).split("_")[0] in str(e.value)


def test_good_sampling_params():
    assert SamplingParams(top_k=-1).top_k == -1 and SamplingParams(top_k=-1)._native()["top_k"] == 0
    sp = SamplingParams(stop="x", stop_token_ids=(1, 2), max_tokens=None, seed=3, logit_bias={5: -1})
    assert sp.stop == ["x"] and sp.stop_token_ids == [1, 2] and sp.max_tokens is None
    assert sp == sp.clone() and "SamplingParams(" in repr(sp)


def test_engine_errors(llm, tok):
    with pytest.raises(dsv4.InvalidArgumentError, match="129280"):
        llm.generate({"prompt_token_ids": [5, 129280]}, GREEDY)
    with pytest.raises(dsv4.InvalidArgumentError):
        llm.generate({"prompt_token_ids": []}, GREEDY)
    with pytest.raises(dsv4.InvalidArgumentError):  # logit bias outside the vocabulary: caught at submit
        llm.generate(PROMPTS[0], SamplingParams(logit_bias={129280: 1.0}))
    # a failure in the middle of a call leaves nothing running
    with pytest.raises(dsv4.InvalidArgumentError):
        llm.generate([PROMPTS[0], {"prompt_token_ids": [-4]}], SamplingParams(max_tokens=50, ignore_eos=True))
    st = llm.stats()
    assert st["running"] == 0 and st["waiting"] == 0
    with pytest.raises(ValueError):
        LLM(MODEL, threads=1, preemption="sometimes", log_level=3)


def test_small_context_and_reserve_policy(tok):
    with LLM(MODEL, threads=2, max_model_len=24, preemption="reserve", log_level=3) as small:
        ids = tok.encode(PROMPTS[0])
        with pytest.raises(dsv4.ContextOverflowError):
            small.generate({"prompt_token_ids": list(range(100, 130))}, GREEDY)
        c = small.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=None,
                                                                     ignore_eos=True))[0].outputs[0]
        assert c.stop_reason == "context_full" and c.finish_reason == "length"
        assert len(ids) + len(c.token_ids) == 24
        outs = small.generate(PROMPTS, GREEDY)  # the reserve policy: same greedy outputs
        for p, o in zip(PROMPTS, outs):
            assert o.outputs[0].token_ids == reference(small, tok.encode(p)).tokens
        assert small.stats()["preemptions"] == 0


def test_gil_is_released(llm):
    ticks = 0
    stop = threading.Event()

    def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)
    th = threading.Thread(target=ticker)
    th.start()
    t0 = time.perf_counter()
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join()
    assert all(len(o.outputs[0].token_ids) == 24 for o in outs)
    # With the GIL held while waiting, the ticker could not run meanwhile.
    assert elapsed > 0.05 and ticks >= 0.3 * elapsed / 0.0011, (ticks, elapsed)


def test_threads_share_one_llm(llm, tok):
    results, errors = {}, []

    def work(i):
        try:
            results[i] = llm.generate(PROMPTS[i], GREEDY)[0].outputs[0].token_ids
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors and len(results) == len(PROMPTS)
    for i, p in enumerate(PROMPTS):
        assert results[i] == reference(llm, tok.encode(p)).tokens


def test_stats_back_to_idle(llm):
    gc.collect()  # sessions of earlier tests hold state memory until collected
    st = llm.stats()
    assert st["running"] == 0 and st["waiting"] == 0 and st["state_used_bytes"] == 0
    assert st["finished_requests"] > 0 and st["generated_tokens"] > 0 and st["steps"] > 0
    assert st["failed_requests"] == 0
