#!/usr/bin/env python3
"""Load benchmark for `dsv4 serve`: requests/s, output tokens/s, time to first token and inter-token
latency (p50 / p99) at several concurrency levels, measured from the client side over streamed
/v1/completions requests (raw HTTP, one keep-alive connection per client, so the numbers are the
server's, not a client library's).

By default it starts its own server on the tiny random model (made with `dsv4 make-model` in a temp
folder), CPU backend, on a free loopback port, and stops it at the end; --url targets a running
server instead. Prints a table; --json FILE writes the results.

  python3 benchmarks/bench_server.py                       # tiny model, CPU backend
  python3 benchmarks/bench_server.py --backend null        # server + scheduler overhead only
  python3 benchmarks/bench_server.py --url http://127.0.0.1:8000 --model-name NAME --json out.json
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    def __init__(self, cli, model, backend, threads, extra):
        self.port = free_port()
        cmd = [cli, "serve", model, "--port", str(self.port), "--backend", backend, "--max-model-len", "4096",
               "--log-level", "warn"] + extra
        if backend == "cpu" and threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"dsv4 serve exited with {self.proc.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("dsv4 serve did not become ready")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Client:
    """One user: a keep-alive connection issuing streamed completions one after another."""

    def __init__(self, url, api_key):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.conn = None

    def stream(self, body):
        """Returns (ttft, [inter-token gaps], tokens)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/completions", body=body, headers=self.headers)
        r = self.conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
        ttft, last, gaps, tokens = None, None, [], 0
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            chunk = json.loads(payload)
            if not chunk.get("choices"):
                continue
            # One chunk per sampled token (logprobs: 0 makes every token its own chunk).
            n = len((chunk["choices"][0].get("logprobs") or {}).get("tokens") or []) or 1
            now = time.perf_counter()
            if ttft is None:
                ttft = now - t0
            else:
                gaps.extend([(now - last) / n] * n)
            last = now
            tokens += n
        r.read()
        return ttft, gaps, tokens


def run_level(url, api_key, model, concurrency, requests, max_tokens, prompt):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "logprobs": 0})
    ttfts, gaps, tokens = [], [], [0]
    lock = threading.Lock()
    todo = iter(range(requests))
    errors = []

    def user(_):
        c = Client(url, api_key)
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            try:
                t, g, n = c.stream(body)
            except Exception as e:  # noqa: BLE001 — counted and shown
                with lock:
                    errors.append(repr(e))
                c.conn = None
                continue
            with lock:
                ttfts.append(t)
                gaps.extend(g)
                tokens[0] += n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(user, range(concurrency)))
    wall = time.perf_counter() - t0
    done = len(ttfts)
    return {
        "concurrency": concurrency, "requests": done, "errors": len(errors), "seconds": wall,
        "requests_per_s": done / wall, "output_tokens_per_s": tokens[0] / wall,
        "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(gaps, 50), "itl_p99_ms": 1000 * percentile(gaps, 99),
        "ttft_mean_ms": 1000 * statistics.fmean(ttfts) if ttfts else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--api-key", default=os.environ.get("DSV4_API_KEY"))
    ap.add_argument("--model-name", help="the request's model (default: the server's first /v1/models entry)")
    ap.add_argument("--cli", default=os.environ.get("DSV4_CLI", str(REPO / "build" / "dsv4")))
    ap.add_argument("--model", help="model folder for the server it starts (default: a tiny random model)")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "null"])
    ap.add_argument("--threads", type=int, default=0, help="CPU backend threads (default: all)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(8, 2 x concurrency))")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt", default="Once upon a time, in a land far away, there lived a")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    server = None
    if not args.url:
        model = args.model
        if not model:
            model = str(Path(tempfile.mkdtemp(prefix="dsv4-bench-")) / "tiny")
            subprocess.run([args.cli, "make-model", "--preset", "tiny", "--layers", "2", "--experts", "4", "--seed", "3",
                            "--tokenizer", str(REPO / "data" / "tokenizer" / "tokenizer.json"), "--out", model],
                           check=True, capture_output=True)
        server = OwnServer(args.cli, model, args.backend, args.threads, ["--max-num-seqs", "64", "--workers", "96"])
        args.url = server.url
    try:
        name = args.model_name
        if not name:
            u = urllib.parse.urlparse(args.url)
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
            c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {})
            name = json.loads(c.getresponse().read())["data"][0]["id"]
        # Warm-up (first-request costs: page faults, thread start-up).
        run_level(args.url, args.api_key, name, 1, 2, 4, args.prompt)
        rows = []
        for conc in [int(x) for x in args.concurrency.split(",")]:
            n = args.requests or max(8, 2 * conc)
            rows.append(run_level(args.url, args.api_key, name, conc, n, args.max_tokens, args.prompt))
    finally:
        if server:
            server.stop()

    print(f"\ndsv4 serve — {args.url if not server else 'own server'}, backend {args.backend if server else '?'}, "
          f"{args.max_tokens} tokens per request (streamed /v1/completions)")
    hdr = f"{'conc':>5} {'reqs':>5} {'err':>4} {'req/s':>8} {'tok/s':>8} {'TTFT p50':>10} {'TTFT p99':>10} " \
          f"{'ITL p50':>9} {'ITL p99':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['concurrency']:>5} {r['requests']:>5} {r['errors']:>4} {r['requests_per_s']:>8.2f} "
              f"{r['output_tokens_per_s']:>8.1f} {r['ttft_p50_ms']:>8.1f}ms {r['ttft_p99_ms']:>8.1f}ms "
              f"{r['itl_p50_ms']:>7.2f}ms {r['itl_p99_ms']:>7.2f}ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"url": args.url, "backend": args.backend if server else None,
                                               "max_tokens": args.max_tokens, "results": rows}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
