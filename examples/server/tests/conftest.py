"""Shared helpers for the `dsv4 serve` tests: find the binary and the tiny test model, start a server
on a free loopback port, wait for /health, stop it with SIGINT (the graceful path).

Environment (set by CTest, examples/server/CMakeLists.txt):
  DSV4_CLI                path of the dsv4 binary (default: <repo>/build/dsv4)
  DSV4_SERVER_TEST_MODEL  the tiny model folder (default: made with `dsv4 make-model` in a temp dir)
Every test skips cleanly when the binary is missing or was built without the server.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import http.client
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _cli():
    cli = os.environ.get("DSV4_CLI") or str(REPO / "build" / "dsv4")
    if not os.access(cli, os.X_OK):
        pytest.skip(f"dsv4 binary not found ({cli}); set DSV4_CLI")
    probe = subprocess.run([cli, "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("dsv4 was built without the HTTP server")
    return cli


_made_model = {}


def _model(cli):
    m = os.environ.get("DSV4_SERVER_TEST_MODEL")
    if m and (Path(m) / "config.json").exists():
        return m
    if "dir" not in _made_model:
        d = Path(tempfile.mkdtemp(prefix="dsv4-server-test-")) / "tiny-server"
        subprocess.run([cli, "make-model", "--preset", "tiny", "--layers", "2", "--experts", "4", "--seed", "3",
                        "--tokenizer", str(REPO / "data" / "tokenizer" / "tokenizer.json"), "--out", str(d)],
                       check=True, capture_output=True)
        _made_model["dir"] = str(d)
    return _made_model["dir"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `dsv4 serve` process. `events` records what /health answered before it was ready."""

    def __init__(self, args, backend="cpu", api_key=None, timeout=90):
        self.cli = _cli()
        self.model = _model(self.cli)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [self.cli, "serve", self.model, "--port", str(self.port), "--backend", backend] + list(args)
        if backend == "cpu" and "--threads" not in args:
            cmd += ["--threads", "2"]
        if api_key:
            cmd += ["--api-key", api_key]
        env = dict(os.environ)
        env.pop("DSV4_API_KEY", None)
        env.pop("VLLM_API_KEY", None)
        self.log_path = Path(tempfile.mkstemp(prefix="dsv4-serve-", suffix=".log")[1])
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.health_before_ready = []  # (status, body) seen while loading
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dsv4 serve exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                status, body, _ = self.request("GET", "/health")
                if status == 200:
                    break
                self.health_before_ready.append((status, body))
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("dsv4 serve did not become ready:\n" + self.log_path.read_text())
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Raw HTTP (no client library): returns (status, body bytes, response headers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        status, body, _ = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            out[fam.name] = fam
        return out

    def gauge(self, name):
        return self.metrics()[name].samples[0].value

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def wait_idle(server, timeout=15):
    """Until the scheduler holds no sequence (cancellations land at the next step)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if (m["dsv4_num_requests_running"].samples[0].value == 0
                and m["dsv4_num_requests_waiting"].samples[0].value == 0
                and m["dsv4_state_memory_used_bytes"].samples[0].value == 0):
            return m
        time.sleep(0.05)
    raise AssertionError("the server did not become idle")
