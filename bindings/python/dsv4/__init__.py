"""dsv4 — Python interface to libdsv4, the DeepSeek-V4 inference engine (over its stable C API).

    import dsv4
    model = dsv4.Model("path/to/model")                     # config.json + safetensors + tokenizer.json
    print(dsv4.chat(model, [{"role": "user", "content": "Hi"}])["content"])
    for delta in dsv4.chat(model, messages, thinking_mode="thinking", stream=True): ...

    from dsv4 import encode_messages, parse_message_from_completion_text   # as DeepSeek's encoding_dsv4

    from dsv4 import LLM, SamplingParams                    # vLLM-style offline batch inference
    llm = LLM("path/to/model", max_num_seqs=64)
    for out in llm.generate(["Hello", "The sea is"], SamplingParams(temperature=0, max_tokens=32)):
        print(out.outputs[0].text)

Errors raise dsv4.Error subclasses (InvalidArgumentError is also a ValueError, FileError an
OSError, ...) whose message is the library's error text. Compute releases the GIL. See docs/python.md.
"""
import json as _json
import math as _math
import random as _random

from ._dsv4 import (  # noqa: F401  (re-exported)
    ABI_VERSION,
    BackendError,
    BusyError,
    CancelledError,
    ChatStream,
    ContextOverflowError,
    Engine,
    Error,
    FileError,
    FormatError,
    GenerateResult,
    InvalidArgumentError,
    Model,
    OutOfMemoryError,
    Sampler,
    Session,
    Tokenizer,
    TokenStream,
    UnsupportedError,
    __version__,
)
from . import _dsv4
from ._dsv4 import finish_reason_name, stop_reason_name

__all__ = [
    "Model", "Session", "Tokenizer", "Sampler", "TokenStream", "GenerateResult", "ChatStream", "Engine",
    "LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "RequestMetrics",
    "generate", "chat", "encode_messages", "parse_message_from_completion_text",
    "Error", "InvalidArgumentError", "FileError", "FormatError", "UnsupportedError", "OutOfMemoryError",
    "ContextOverflowError", "BackendError", "CancelledError", "BusyError", "__version__", "ABI_VERSION",
]


def _dumps(obj):
    # Key order and raw non-ASCII as the request had them; the C++ encoder re-serialises nested
    # values (tool schemas, arguments) exactly as Python's json.dumps would.
    return _json.dumps(obj, ensure_ascii=False)


def encode_messages(messages, thinking_mode, context=None, drop_thinking=True, add_default_bos_token=True,
                    reasoning_effort=None, *, revision=None):
    """The prompt string for OpenAI-style `messages`, byte-identical to DeepSeek's
    encoding_dsv4.encode_messages (same arguments). `revision`: None/"original" or "0731"."""
    return _dsv4.render_chat(_dumps(list(messages)), thinking_mode,
                             None if context is None else _dumps(list(context)),
                             bool(drop_thinking), bool(add_default_bos_token), reasoning_effort, revision)


def parse_message_from_completion_text(text, thinking_mode, *, strict=True):
    """The assistant message dict ({role, content, reasoning_content, tool_calls}) of one completion,
    as DeepSeek's encoding_dsv4 parser returns it. strict=True rejects malformed or truncated text
    like the release (FormatError, a ValueError); strict=False applies the lenient serving rules."""
    return _json.loads(_dsv4.parse_chat(text, thinking_mode, bool(strict)))


def _tokens(model, prompt):
    if isinstance(prompt, str):
        tok = model.tokenizer
        if tok is None:
            raise UnsupportedError("the model has no tokenizer: pass token ids instead of text")
        return tok.encode(prompt)
    return list(prompt)


def generate(model, prompt, *, stream=False, session=None, max_context=0, **kwargs):
    """Generates a continuation of `prompt` (text, tokenised without special tokens, or token ids).
    Returns the text, or with stream=True an iterator of text pieces (close it to stop early).
    A fresh session is used unless `session` is given. Keyword arguments are those of
    Session.generate (max_new_tokens, temperature, top_k, top_p, min_p, penalties, seed, stop, ...)."""
    ids = _tokens(model, prompt)
    s = session if session is not None else model.session(max_context)
    if not stream:
        return s.generate(ids, **kwargs).text
    return _pieces(s.stream(ids, **kwargs))


def _pieces(token_stream):
    with token_stream:
        for _, piece in token_stream:
            if piece:
                yield piece


def chat(model, messages, *, thinking_mode="chat", reasoning_effort=None, stream=False, session=None,
         max_context=0, max_new_tokens=512, **kwargs):
    """Answers OpenAI-style `messages` (the last one normally a user turn).

    Returns the assistant message dict {role, content, reasoning_content, tool_calls} plus
    "stop_reason"; with stream=True an iterator of deltas instead: {"reasoning_content": text},
    {"content": text}, {"tool_call": {"index", "name"}} or {"tool_call": {"index", "arguments"}},
    and finally {"done": message}. Sampling keywords are those of Session.generate."""
    prompt = encode_messages(messages, thinking_mode, reasoning_effort=reasoning_effort)
    ids = _tokens(model, prompt)
    s = session if session is not None else model.session(max_context)
    if not stream:
        r = s.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
        msg = parse_message_from_completion_text(r.text, thinking_mode, strict=False)
        msg["stop_reason"] = r.stop_reason
        return msg
    return _chat_deltas(s.stream(ids, max_new_tokens=max_new_tokens, **kwargs), thinking_mode)


def _delta(kind, index, text):
    if kind in ("reasoning_content", "content"):
        return {kind: text}
    key = "name" if kind == "tool_call_name" else "arguments"
    return {"tool_call": {"index": index, key: text}}


def _chat_deltas(token_stream, thinking_mode):
    parser = ChatStream(thinking_mode, False)
    with token_stream:
        for _, piece in token_stream:
            for kind, index, text in parser.feed(piece):
                yield _delta(kind, index, text)
        for kind, index, text in parser.finish():
            yield _delta(kind, index, text)
        msg = _json.loads(parser.result_json())
        result = token_stream.result
        msg["stop_reason"] = result.stop_reason if result is not None else "cancelled"
        yield {"done": msg}


# ---- vLLM-style offline inference: LLM / SamplingParams -------------------------------------------

_INT32_MAX = 2**31 - 1
_MAX_LOGPROBS = 20


def _bad(msg):
    raise InvalidArgumentError(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(name, v, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not _math.isfinite(v):
        _bad(f"SamplingParams.{name} must be a finite number, not {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        _bad(f"SamplingParams.{name} = {v!r} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        _bad(f"SamplingParams.{name} = {v!r} must be <= {hi}")
    return float(v)


class SamplingParams:
    """Sampling settings of one request, as vLLM's SamplingParams (the subset libdsv4 implements).

    temperature (0 = greedy), top_p in (0, 1], top_k (0 or -1 = off), min_p in [0, 1],
    presence_penalty / frequency_penalty in [-2, 2] (OpenAI rules, generated tokens),
    repetition_penalty > 0 (HF rule, prompt + generated), seed (None = random; sample i of n uses
    seed + i), n samples, max_tokens (None = until the context ends), stop (str or list of str,
    removed from the text), stop_token_ids (kept in the tokens), ignore_eos, logprobs (None, or k in
    0..20: the sampled token's log-probability plus the k most likely, of the model's raw
    distribution), logit_bias ({token_id: bias} added to the logits). Bad values raise
    InvalidArgumentError (a ValueError)."""

    def __init__(self, *, n=1, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, presence_penalty=0.0,
                 frequency_penalty=0.0, repetition_penalty=1.0, seed=None, stop=None, stop_token_ids=None,
                 ignore_eos=False, max_tokens=16, logprobs=None, logit_bias=None):
        if not _is_int(n) or n < 1:
            _bad(f"SamplingParams.n must be an int >= 1, not {n!r}")
        self.n = n
        self.temperature = _number("temperature", temperature, lo=0.0)
        self.top_p = _number("top_p", top_p, lo=0.0, hi=1.0, lo_open=True)
        if not _is_int(top_k) or top_k < -1:
            _bad(f"SamplingParams.top_k must be -1 or 0 (off) or a positive int, not {top_k!r}")
        self.top_k = top_k
        self.min_p = _number("min_p", min_p, lo=0.0, hi=1.0)
        self.presence_penalty = _number("presence_penalty", presence_penalty, lo=-2.0, hi=2.0)
        self.frequency_penalty = _number("frequency_penalty", frequency_penalty, lo=-2.0, hi=2.0)
        self.repetition_penalty = _number("repetition_penalty", repetition_penalty, lo=0.0, lo_open=True)
        if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**64):
            _bad(f"SamplingParams.seed must be None or an int in [0, 2**64), not {seed!r}")
        self.seed = seed
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        else:
            stop = list(stop)
        for s_ in stop:
            if not isinstance(s_, str) or not s_:
                _bad(f"SamplingParams.stop must hold non-empty strings, not {s_!r}")
        self.stop = stop
        ids = [] if stop_token_ids is None else list(stop_token_ids)
        for t in ids:
            if not _is_int(t) or t < 0:
                _bad(f"SamplingParams.stop_token_ids must hold token ids (ints >= 0), not {t!r}")
        self.stop_token_ids = ids
        self.ignore_eos = bool(ignore_eos)
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            _bad(f"SamplingParams.max_tokens must be None or an int >= 1, not {max_tokens!r}")
        self.max_tokens = max_tokens
        if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= _MAX_LOGPROBS):
            _bad(f"SamplingParams.logprobs must be None or an int in [0, {_MAX_LOGPROBS}], not {logprobs!r}")
        self.logprobs = logprobs
        bias = {} if logit_bias is None else dict(logit_bias)
        for k, v in bias.items():
            if not _is_int(k) or k < 0:
                _bad(f"SamplingParams.logit_bias keys must be token ids (ints >= 0), not {k!r}")
            _number(f"logit_bias[{k}]", v)
        self.logit_bias = {int(k): float(v) for k, v in bias.items()}

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"SamplingParams({fields})"

    def __eq__(self, other):
        return isinstance(other, SamplingParams) and vars(self) == vars(other)

    def clone(self):
        c = SamplingParams.__new__(SamplingParams)
        c.__dict__.update({k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                           for k, v in vars(self).items()})
        return c

    def _native(self):
        return dict(
            max_tokens=_INT32_MAX if self.max_tokens is None else self.max_tokens,
            temperature=self.temperature, top_k=max(self.top_k, 0), top_p=self.top_p, min_p=self.min_p,
            repetition_penalty=self.repetition_penalty, frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=_random.getrandbits(63) if self.seed is None else self.seed,
            n=self.n, logprobs=-1 if self.logprobs is None else self.logprobs, ignore_eos=self.ignore_eos,
            stop=self.stop, stop_token_ids=self.stop_token_ids, logit_bias=self.logit_bias)


class RequestMetrics:
    """Timings of one request, in seconds from its submission: queue (until first scheduled),
    ttft (until the first token of sample 0), e2e (until the last sample ended); preemptions."""

    __slots__ = ("queue_seconds", "ttft_seconds", "e2e_seconds", "preemptions")

    def __init__(self, queue_seconds=0.0, ttft_seconds=0.0, e2e_seconds=0.0, preemptions=0):
        self.queue_seconds = queue_seconds
        self.ttft_seconds = ttft_seconds
        self.e2e_seconds = e2e_seconds
        self.preemptions = preemptions

    def __repr__(self):
        return (f"RequestMetrics(queue_seconds={self.queue_seconds:.6f}, ttft_seconds={self.ttft_seconds:.6f}, "
                f"e2e_seconds={self.e2e_seconds:.6f}, preemptions={self.preemptions})")


class CompletionOutput:
    """One sample of a request: index, token_ids, text (stop string removed), finish_reason
    ("stop" | "length" | "abort" | "error"), stop_reason (the exact cause: "eos", "stop_string",
    "stop_token", "max_tokens", "context_full", "cancelled", "error"), logprobs (None, or per token
    a dict {token_id: logprob} with the sampled token and the top-k), cumulative_logprob, error
    (the text when finish_reason is "error"), and after LLM.chat() `message` (the parsed
    assistant message)."""

    def __init__(self, index, token_ids, text, finish_reason, stop_reason, logprobs=None, cumulative_logprob=None,
                 error=None):
        self.index = index
        self.token_ids = token_ids
        self.text = text
        self.finish_reason = finish_reason
        self.stop_reason = stop_reason
        self.logprobs = logprobs
        self.cumulative_logprob = cumulative_logprob
        self.error = error
        self.message = None

    def finished(self):
        return self.finish_reason is not None

    def __repr__(self):
        return (f"CompletionOutput(index={self.index}, text={self.text!r}, token_ids={self.token_ids!r}, "
                f"finish_reason={self.finish_reason!r}, stop_reason={self.stop_reason!r})")


class RequestOutput:
    """The result of one prompt: request_id, prompt (text, or None for token ids), prompt_token_ids,
    outputs (one CompletionOutput per sample), finished, metrics (RequestMetrics)."""

    def __init__(self, request_id, prompt, prompt_token_ids, outputs, finished, metrics):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics

    def __repr__(self):
        return (f"RequestOutput(request_id={self.request_id!r}, prompt={self.prompt!r}, "
                f"prompt_token_ids={self.prompt_token_ids!r}, outputs={self.outputs!r}, finished={self.finished})")


_CHAT_KWARGS = ("thinking", "thinking_mode", "drop_thinking", "add_default_bos_token", "reasoning_effort", "context",
                "revision")


class LLM:
    """Offline batch inference in the style of vLLM's LLM: one Model plus one continuous-batching
    Engine (max_num_seqs sequences and max_num_batched_tokens tokens per step; max_model_len per
    sequence, 0 = the config's; preemption "recompute" or "reserve" when state memory
    (state_budget_bytes, 0 = unlimited on the CPU) runs out). generate() and chat() submit every
    prompt first and then wait for all of them with the GIL released."""

    def __init__(self, model, backend="cpu", experts_per_token=0, threads=0, max_num_seqs=256,
                 max_num_batched_tokens=2048, max_model_len=0, state_budget_bytes=0, preemption="recompute", *,
                 max_waiting=0, max_n=16, device_ids=None, backend_params=None, rollback_tokens=16,
                 load_tokenizer=True, log_level=None, numerics="reference"):
        self.model = Model(model, backend=backend, experts_per_token=experts_per_token, threads=threads,
                           device_ids=list(device_ids or []), load_tokenizer=load_tokenizer, log_level=log_level,
                           state_budget_bytes=state_budget_bytes, rollback_tokens=rollback_tokens,
                           backend_params=dict(backend_params or {}), numerics=numerics)
        self.engine = Engine(self.model, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                             max_model_len=max_model_len, max_waiting=max_waiting, max_n=max_n,
                             preemption=preemption)
        self._tokenizer = self.model.tokenizer

    def get_tokenizer(self):
        """The model's Tokenizer (None when the model folder has none)."""
        return self._tokenizer

    def stats(self):
        """Engine counters: running, waiting, finished / cancelled / failed requests, tokens, steps,
        preemptions, state memory in use and its budget."""
        return self.engine.stats()

    def close(self):
        """Stops the engine (also done when the LLM is garbage-collected)."""
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- prompts --

    def _one_prompt(self, p):
        if isinstance(p, str):
            return p, self._encode(p)
        if isinstance(p, dict):
            if "prompt_token_ids" in p:
                return p.get("prompt"), [int(t) for t in p["prompt_token_ids"]]
            if "prompt" in p:
                return p["prompt"], self._encode(p["prompt"])
            raise TypeError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
        if isinstance(p, (list, tuple)) and all(_is_int(t) for t in p):
            return None, list(p)
        raise TypeError(f"a prompt is a str, a list of token ids or a dict with 'prompt' / 'prompt_token_ids', "
                        f"not {type(p).__name__}")

    def _encode(self, text):
        if self._tokenizer is None:
            raise UnsupportedError("the model has no tokenizer: pass {'prompt_token_ids': [...]} instead of text")
        return self._tokenizer.encode(text)

    def _prompts(self, prompts):
        if isinstance(prompts, (str, dict)):
            return [self._one_prompt(prompts)]
        prompts = list(prompts)
        if prompts and all(_is_int(t) for t in prompts):
            return [self._one_prompt(prompts)]  # one prompt of token ids
        return [self._one_prompt(p) for p in prompts]

    # -- generation --

    def generate(self, prompts, sampling_params=None, *, use_tqdm=False):
        """Completes each prompt (a str, a dict {"prompt": str} or {"prompt_token_ids": [...]}, a list
        of token ids, or a list of those). `sampling_params`: one SamplingParams for all, a list with
        one per prompt, or None (the defaults: max_tokens=16). Returns one RequestOutput per prompt,
        in order. Ctrl-C cancels the requests of this call."""
        del use_tqdm  # accepted for vLLM compatibility
        items = self._prompts(prompts)
        if sampling_params is None:
            params = [SamplingParams()] * len(items)
        elif isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(items)
        else:
            params = list(sampling_params)
            if len(params) != len(items):
                _bad(f"{len(params)} sampling_params for {len(items)} prompts")
            for sp in params:
                if not isinstance(sp, SamplingParams):
                    raise TypeError(f"sampling_params must be SamplingParams, not {type(sp).__name__}")
        ids = []
        try:
            for (_, toks), sp in zip(items, params):
                ids.append(self.engine.submit(toks, **sp._native()))
            for rid in ids:
                self.engine.wait(rid)
            return [self._collect(rid, text, toks, sp) for rid, (text, toks), sp in zip(ids, items, params)]
        except BaseException:
            for rid in ids:
                try:
                    self.engine.cancel(rid)
                except Exception:
                    pass
            raise
        finally:
            for rid in ids:
                try:
                    self.engine.wait(rid)
                    self.engine.release(rid)
                except Exception:
                    pass

    def _collect(self, rid, text, toks, sp):
        info = self.engine.info(rid)
        outputs = []
        for index, token_ids, out_text, code, logprobs, error in self.engine.output(rid):
            cumulative = None
            if logprobs is not None:
                cumulative = float(sum(row[t] for row, t in zip(logprobs, token_ids)))
            outputs.append(CompletionOutput(
                index, token_ids, out_text, finish_reason_name(code) if code >= 0 else None,
                stop_reason_name(code) if code >= 0 else None, logprobs if sp.logprobs is not None else None,
                cumulative, error or None))
        metrics = RequestMetrics(info["queue_seconds"], info["ttft_seconds"], info["e2e_seconds"],
                                 info["preemptions"])
        return RequestOutput(str(rid), text, toks, outputs, info["finished"], metrics)

    def chat(self, messages, sampling_params=None, *, thinking_mode="chat", chat_template_kwargs=None,
             reasoning_effort=None, use_tqdm=False):
        """Answers OpenAI-style conversations: `messages` is one conversation (a list of message
        dicts) or a list of them. Each is rendered with encode_messages (thinking_mode "chat" or
        "thinking"; chat_template_kwargs may set thinking (bool), thinking_mode, drop_thinking,
        add_default_bos_token, reasoning_effort, context, revision). Returns RequestOutputs as
        generate() does (texts are the raw completions); each CompletionOutput also has `message`,
        the completion parsed leniently into {role, content, reasoning_content, tool_calls}."""
        del use_tqdm
        convs = [messages] if not messages or isinstance(messages[0], dict) else list(messages)
        kw = dict(chat_template_kwargs or {})
        unknown = set(kw) - set(_CHAT_KWARGS)
        if unknown:
            _bad(f"unknown chat_template_kwargs {sorted(unknown)} (known: {', '.join(_CHAT_KWARGS)})")
        mode = kw.pop("thinking_mode", thinking_mode)
        if "thinking" in kw:
            mode = "thinking" if kw.pop("thinking") else "chat"
        effort = kw.pop("reasoning_effort", reasoning_effort)
        prompts = [{"prompt": encode_messages(c, mode, reasoning_effort=effort, **kw)} for c in convs]
        outs = self.generate(prompts, sampling_params)
        for o in outs:
            for c in o.outputs:
                c.message = parse_message_from_completion_text(c.text, mode, strict=False)
        return outs
