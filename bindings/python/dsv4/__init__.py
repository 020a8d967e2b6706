"""dsv4 — Python interface to libdsv4, the DeepSeek-V4 inference engine (over its stable C API).

    import dsv4
    model = dsv4.Model("path/to/model")                     # config.json + safetensors + tokenizer.json
    print(dsv4.chat(model, [{"role": "user", "content": "Hi"}])["content"])
    for delta in dsv4.chat(model, messages, thinking_mode="thinking", stream=True): ...

    from dsv4 import encode_messages, parse_message_from_completion_text   # as DeepSeek's encoding_dsv4

Errors raise dsv4.Error subclasses (InvalidArgumentError is also a ValueError, FileError an
OSError, ...) whose message is the library's error text. Compute releases the GIL. See docs/python.md.
"""
import json as _json

from ._dsv4 import (  # noqa: F401  (re-exported)
    ABI_VERSION,
    BackendError,
    CancelledError,
    ChatStream,
    ContextOverflowError,
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

__all__ = [
    "Model", "Session", "Tokenizer", "Sampler", "TokenStream", "GenerateResult", "ChatStream",
    "generate", "chat", "encode_messages", "parse_message_from_completion_text",
    "Error", "InvalidArgumentError", "FileError", "FormatError", "UnsupportedError", "OutOfMemoryError",
    "ContextOverflowError", "BackendError", "CancelledError", "__version__", "ABI_VERSION",
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
