"""dsv4-chat driven like a person would: on a pseudo-terminal (Python's pty module, no tmux), type
two turns, use the slash commands, press Ctrl-C during an answer and at the prompt, then Ctrl-D;
read what the screen shows after each step. Also the non-interactive modes (--prompt, piped lines,
piped JSON). Needs DSV4_CHAT (the binary) and DSV4_TEST_MODEL (a generated model with tokenizer);
CTest sets both. Skipped as a whole when they are absent.
"""
import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

CHAT = os.environ.get("DSV4_CHAT", "")
MODEL = os.environ.get("DSV4_TEST_MODEL", "")
if not (os.path.isfile(CHAT) and os.path.isfile(os.path.join(MODEL, "config.json"))):
    pytest.skip("DSV4_CHAT / DSV4_TEST_MODEL not set (run through CTest)", allow_module_level=True)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COMMON = ["--threads", "2", "--temperature", "0", "--ctx", "4096"]


class Terminal:
    """A child process on a pseudo-terminal, with everything it printed kept as `screen`."""

    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the pty is its controlling terminal, so ^C becomes SIGINT
            os.execv(args[0], args)
        self.screen = ""
        self.mark = 0  # start of the text produced since the last expect()

    def send(self, text):
        os.write(self.fd, text.encode())

    def _read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return None
        if not data:
            return None
        self.screen += data.decode("utf-8", "replace")
        return True

    def expect(self, pattern, timeout=120):
        """Waits until `pattern` (regex) shows up after the mark; returns the text up to the match."""
        rx = re.compile(pattern, re.S)
        deadline = time.time() + timeout
        alive = True
        while True:
            m = rx.search(self.screen, self.mark)
            if m:
                seen = self.screen[self.mark:m.end()]
                self.mark = m.end()
                return seen
            if not alive:
                raise AssertionError(f"process ended before {pattern!r}; screen:\n{self.screen}")
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; screen so far:\n{self.screen}")
            if self._read(min(left, 1.0)) is None:
                alive = False

    def wait_exit(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self._read(0.2)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"dsv4-chat did not exit; screen:\n{self.screen}")

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def term():
    terms = []

    def start(*extra):
        t = Terminal([CHAT, MODEL, *COMMON, *extra])
        terms.append(t)
        return t

    yield start
    for t in terms:
        t.close()


def answer_of(seen, typed):
    """The text between the echo of what was typed and the next prompt."""
    text = ANSI.sub("", seen).replace("\r", "")
    after = text.split(typed, 1)[1]
    return after.rsplit("\n> ", 1)[0].strip("\n")


def test_two_turns_commands_and_stats(term):
    t = term("--max-new-tokens", "8")
    t.expect(r"ready\..*?> ")
    t.send("Hello there\r")
    first = answer_of(t.expect(r"Hello there.*?\n> "), "Hello there")
    assert first.strip(), "the first answer printed nothing"

    t.send("/stats\r")
    stats = t.expect(r"speed:.*?\n> ")
    assert re.search(r"session: \d+ prompt tokens, [1-8] generated, 1 turns", stats), stats
    assert re.search(r"last turn: [1-9]\d* prompt tokens", stats), stats

    t.send("Tell me more\r")
    second = answer_of(t.expect(r"Tell me more.*?\n> "), "Tell me more")
    assert second.strip(), "the second answer printed nothing"
    t.send("/stats\r")
    stats = t.expect(r"speed:.*?\n> ")
    assert re.search(r"generated, 2 turns", stats), stats
    # The second turn reused the first turn's KV prefix or re-ran it; either way the session now holds
    # both turns, so its position exceeds the last turn's prompt.
    pos = int(re.search(r"context (\d+) / 4096", stats).group(1))
    assert pos > 0

    t.send("/think on\r")
    t.expect(r"thinking mode on.*?> ")
    t.send("Why?\r")
    seen = t.expect(r"Why\?.*?\n> ")
    # Everything before </think> is reasoning: shown dimmed on a terminal.
    assert "\x1b[2m" in seen, repr(seen)

    t.send("/system You are terse.\r")
    t.expect(r"system prompt set.*?> ")
    t.send("/reset\r")
    t.expect(r"conversation cleared.*?> ")
    t.send("/bogus\r")
    t.expect(r"unknown command /bogus.*?> ")
    t.send("/quit\r")
    assert t.wait_exit() == 0


def test_ctrl_c_stops_the_answer_not_the_program(term):
    t = term("--max-new-tokens", "100000")
    t.expect(r"ready\..*?> ")
    t.send("Talk forever\r")
    # Wait for some answer text, then press Ctrl-C.
    t.expect(r"Talk forever\r?\n.+", timeout=120)
    time.sleep(0.5)
    t.send("\x03")
    seen = t.expect(r"\[stopped\].*?\n> ", timeout=60)
    assert "[stopped]" in seen
    # Still alive and usable.
    t.send("/stats\r")
    stats = t.expect(r"speed:.*?\n> ")
    assert re.search(r"\d+ generated, 1 turns", stats), stats
    # Ctrl-C at the prompt drops the line but keeps the program.
    t.send("half a line")
    time.sleep(0.3)
    t.send("\x03")
    t.expect(r"\^C \(Ctrl-D or /quit exits\)\r?\n> ")
    # Ctrl-D at an empty prompt quits cleanly.
    t.send("\x04")
    assert t.wait_exit() == 0


def test_reasoning_is_prefixed_without_colour(term):
    t = term("--max-new-tokens", "6", "--think", "--no-color")
    t.expect(r"ready\..*?> ")
    t.send("Think\r")
    seen = t.expect(r"Think\r?\n.*?\n> ")
    assert "\x1b[2m" not in seen
    assert "| " in seen, repr(seen)


def run_chat(*args, stdin=""):
    return subprocess.run([CHAT, MODEL, *COMMON, *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_one_shot_prompt():
    r = run_chat("--prompt", "Hello", "--max-new-tokens", "5", "--stats")
    assert r.returncode == 0, r.stderr
    assert re.search(r"last turn: \d+ prompt tokens .*, 5 generated", r.stdout), r.stdout
    # Greedy: the same command prints the same answer.
    again = run_chat("--prompt", "Hello", "--max-new-tokens", "5", "--stats")
    assert again.stdout.split("last turn:")[0] == r.stdout.split("last turn:")[0]


def test_piped_lines_are_turns():
    r = run_chat("--max-new-tokens", "4", stdin="Hi\n/stats\n\nBye\n/stats\n")
    assert r.returncode == 0, r.stderr
    assert "generated, 1 turns" in r.stdout and "generated, 2 turns" in r.stdout, r.stdout
    assert "> " not in r.stdout  # no interactive prompt when stdin is a pipe


def test_piped_json_conversation():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again"}]
    r = run_chat("--max-new-tokens", "4", "--stats", stdin=json.dumps(msgs))
    assert r.returncode == 0, r.stderr
    assert "generated, 1 turns" in r.stdout, r.stdout
    r = run_chat("--max-new-tokens", "4", stdin=json.dumps({"messages": [{"role": "wizard", "content": "x"}]}))
    assert r.returncode == 1
    assert "error: invalid_argument" in r.stderr, r.stderr


def test_piped_json_messages_must_be_objects():
    r = run_chat("--max-new-tokens", "4", stdin="[1,2]")
    assert r.returncode == 1
    assert "piped message 0 is not a JSON object" in r.stderr, r.stderr
    assert "type_error" not in r.stderr, r.stderr
    r = run_chat("--max-new-tokens", "4", stdin=json.dumps([{"role": "user", "content": "x"}, "oops"]))
    assert r.returncode == 1 and "piped message 1 is not a JSON object" in r.stderr, r.stderr


def test_int_options_are_range_checked():
    for flag, value in [("--max-new-tokens", "99999999999"), ("--max-new-tokens", "-1"),
                        ("--top-k", "99999999999999999999999"), ("--threads", "4294967297")]:
        r = subprocess.run([CHAT, MODEL, flag, value, "--prompt", "x"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (flag, value, r.stderr)
        assert flag + " " + value + " is out of range" in r.stderr, r.stderr


def test_bad_arguments():
    r = subprocess.run([CHAT, MODEL, "--top-k", "many"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--top-k expects an integer" in r.stderr
    r = subprocess.run([CHAT, "/nonexistent/model", "--prompt", "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "/nonexistent/model" in r.stderr
