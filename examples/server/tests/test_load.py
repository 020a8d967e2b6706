"""Bounded load on loopback. 32 concurrent clients × 4 requests each, mixed completions / chat,
streamed / not, greedy, some streams closed mid-way: every response completes (or was cancelled by
its client, cleanly), every completed one equals the same request sent alone, and afterwards the
scheduler is empty (running 0, waiting 0, state memory 0). The big run uses the null backend (the
whole server and scheduler, no model math) so that it fits CI on 2 cores; correctness under batching
is also checked on the CPU backend with a few concurrent requests. Last, a queue bound gives 429."""
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")

from conftest import Server, wait_idle  # noqa: E402

CLIENTS, PER_CLIENT = 32, 4


def spec(i):
    """Request i of the run: a deterministic mix of kinds, lengths and early closes."""
    rnd = random.Random(i)
    kind = "chat" if i % 3 == 0 else "completion"
    return {
        "kind": kind,
        "prompt": f"Request {i % 24}: " + " ".join(rnd.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(i % 7)),
        "max_tokens": 8 + (i % 5) * 12,
        "stream": i % 2 == 1,
        "close_after": 2 if i % 8 == 5 else None,  # some streams are dropped mid-way by their client
    }


def key(s):
    return (s["kind"], s["prompt"], s["max_tokens"])


def run(client, s):
    """Returns ("done", text, finish_reason) or ("closed", chunks_seen)."""
    common = dict(model="m", max_tokens=s["max_tokens"], temperature=0)
    if s["kind"] == "chat":
        args = dict(messages=[{"role": "user", "content": s["prompt"]}], **common)
        if not s["stream"]:
            r = client.chat.completions.create(**args)
            return ("done", r.choices[0].message.content or "", r.choices[0].finish_reason)
        stream = client.chat.completions.create(stream=True, **args)
        text, reason, seen = "", None, 0
        for ch in stream:
            seen += 1
            if s["close_after"] and seen >= s["close_after"]:
                stream.close()
                return ("closed", seen)
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                reason = ch.choices[0].finish_reason or reason
        return ("done", text, reason)
    args = dict(prompt=s["prompt"], **common)
    if not s["stream"]:
        r = client.completions.create(**args)
        return ("done", r.choices[0].text, r.choices[0].finish_reason)
    stream = client.completions.create(stream=True, **args)
    text, reason, seen = "", None, 0
    for ch in stream:
        seen += 1
        if s["close_after"] and seen >= s["close_after"]:
            stream.close()
            return ("closed", seen)
        if ch.choices:
            text += ch.choices[0].text
            reason = ch.choices[0].finish_reason or reason
    return ("done", text, reason)


def make_client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


def concurrent_equals_solo(server, specs, clients):
    client = make_client(server)
    solo = {}
    for s in specs:  # the reference: each distinct request alone, nothing else running
        if key(s) not in solo:
            out = run(client, dict(s, stream=False, close_after=None))
            solo[key(s)] = out
    per_client = [specs[c::clients] for c in range(clients)]
    results, errors = [], []
    lock = threading.Lock()

    def worker(batch):
        cl = make_client(server)  # one connection pool per client, as separate users would have
        for s in batch:
            try:
                out = run(cl, s)
            except Exception as e:  # noqa: BLE001 — reported below with the request
                with lock:
                    errors.append((s, repr(e)))
                continue
            with lock:
                results.append((s, out))

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, per_client))
    assert not errors, errors[:3]
    assert len(results) == len(specs)
    closed = 0
    for s, out in results:
        if out[0] == "closed":
            closed += 1
            assert s["close_after"] and out[1] >= s["close_after"]
            continue
        assert out == solo[key(s)], (s, out, solo[key(s)])
    return closed


def test_32_clients_null_backend():
    server = Server(["--served-model-name", "m", "--max-model-len", "4096", "--max-num-seqs", "64", "--workers", "64"],
                    backend="null")
    try:
        specs = [spec(i) for i in range(CLIENTS * PER_CLIENT)]
        t0 = time.time()
        closed = concurrent_equals_solo(server, specs, CLIENTS)
        assert closed == sum(1 for s in specs if s["stream"] and s["close_after"])
        m = wait_idle(server)
        assert m["dsv4_num_requests_running"].samples[0].value == 0
        assert m["dsv4_num_requests_waiting"].samples[0].value == 0
        assert m["dsv4_state_memory_used_bytes"].samples[0].value == 0
        http = {(s.labels["endpoint"], s.labels["status"]): s.value for s in m["dsv4_http_requests"].samples}
        assert sum(v for (ep, st), v in http.items() if st != "200" and ep.startswith("/v1/")) == 0
        print(f"null backend: {len(specs)} concurrent requests in {time.time() - t0:.1f} s (incl. solo references)")
    finally:
        assert server.stop() == 0


def test_concurrent_equals_solo_cpu_backend():
    server = Server(["--served-model-name", "m", "--max-model-len", "4096"])
    try:
        specs = [dict(spec(i), close_after=None) for i in range(8)]
        specs[5]["close_after"] = 2  # one dropped stream among them
        concurrent_equals_solo(server, specs, 8)
        wait_idle(server)
    finally:
        assert server.stop() == 0


def test_queue_full_gives_429():
    server = Server(["--served-model-name", "m", "--max-model-len", "65536", "--max-num-seqs", "1", "--max-waiting", "1"],
                    backend="null")
    try:
        body = json.dumps({"model": "m", "prompt": "x", "max_tokens": 60000, "temperature": 0})
        statuses, bodies = [], []
        lock = threading.Lock()

        def one(_):
            status, b, _ = server.request("POST", "/v1/completions", body)
            with lock:
                statuses.append(status)
                bodies.append(b)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(8)))
        assert set(statuses) <= {200, 429}, statuses
        assert 429 in statuses and 200 in statuses, statuses
        err = json.loads(bodies[statuses.index(429)])["error"]
        assert err["type"] == "rate_limit_error" and "queue" in err["message"]
        with pytest.raises(openai.RateLimitError):
            cl = make_client(server)
            with ThreadPoolExecutor(max_workers=6) as pool:
                list(pool.map(lambda _: cl.completions.create(model="m", prompt="x", max_tokens=60000), range(6)))
        wait_idle(server)
    finally:
        assert server.stop() == 0


def test_stalled_client_is_cancelled_and_others_go_on():
    # A client that stops reading: the engine thread never waits for it (its tokens queue up), and
    # once it is --max-queued-tokens behind, its request is cancelled.
    import socket
    server = Server(["--served-model-name", "m", "--max-model-len", "200000", "--max-queued-tokens", "256"],
                    backend="null")
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = json.dumps({"model": "m", "prompt": "x", "max_tokens": 150000, "stream": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        client = make_client(server)
        t0 = time.time()
        r = client.completions.create(model="m", prompt="y", max_tokens=64)  # served meanwhile
        assert r.usage.completion_tokens == 64 and time.time() - t0 < 10
        m = wait_idle(server, timeout=30)
        aborted = sum(s.value for s in m["dsv4_request_success"].samples if s.labels.get("finished_reason") == "abort")
        gen = m["dsv4_generation_tokens"].samples[0].value
        assert gen < 150000  # it was stopped long before its max_tokens
        sock.close()
        deadline = time.time() + 10
        while aborted < 1 and time.time() < deadline:
            time.sleep(0.1)
            m = server.metrics()
            aborted = sum(s.value for s in m["dsv4_request_success"].samples if s.labels.get("finished_reason") == "abort")
        assert aborted == 1
    finally:
        assert server.stop() == 0
