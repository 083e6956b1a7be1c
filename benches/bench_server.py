"""Helpers for scripts/bench-server.sh (standard library only).

Subcommands:
  free-port                    print a free TCP port on 127.0.0.1
  wait URL PID TIMEOUT_S       wait until GET URL/health answers 200 (or 404 and
                               GET URL/v1/models answers 200); fail at once if PID exits
  prompts URL OUT --input-len N --count K [--seed S] [--max-tokens M]
                               write K prompts of random common words, each exactly
                               N tokens as counted by candlelight's /tokenize at URL,
                               as loadgen JSONL (with max_tokens M if given)
  filter URL IN OUT --output-len M --count K
                               keep the first K prompts of IN whose greedy completion
                               on the llama.cpp server at URL (ignore_eos off) runs M
                               tokens without EOS: for llama_cpp.server, which ignores
                               `ignore_eos`, so output lengths stay equal
  synthetic-len CALIB URL LEN  the --input-len/--shared-prefix/--system-prompt-len to
                               give loadgen against the server at URL for a synthetic
                               text of LEN tokens, where loadgen cannot calibrate its
                               words per token through that server's /tokenize; CALIB
                               is a loadgen run against candlelight that measured them
  rss PID                      print VmHWM and VmRSS of PID in kB
  loadavg                      print the 1/5/15-minute load average; exit 1 above
                               --warn (default 2.5)
  report WORKLOAD DIR [...]    print WORKLOAD's markdown section from DIR
  llama-probe MODEL            (with .venv-bench's python) exit 0 when llama.cpp's
                               extra weight buffer types (AMX, repacking) can decode here
  llama-cpp-python [--no-extra-bufts] -- ARGS...
                               (with .venv-bench's python) run `python -m
                               llama_cpp.server ARGS` in this process, optionally with
                               llama_model_params.use_extra_bufts = false
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# loadgen's words-per-token estimate when /tokenize gives no count
# (DEFAULT_TOKENS_PER_WORD in loadgen/src/app/load.rs).
LOADGEN_DEFAULT_TOKENS_PER_WORD = 1.3

WORDS = (
    "time year people way day man thing woman life child world school state family "
    "student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money "
    "story fact month lot right study book eye job word business issue side kind head "
    "house service friend father power hour game line end member law car city "
    "community name president team minute idea kid body information back parent face "
    "others level office door health person art war history party result change "
    "morning reason research girl guy moment air teacher force education river garden "
    "music light stone table window paper"
).split()


def http_json(url: str, body: Any = None, timeout: float = 120) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def cmd_free_port(_: argparse.Namespace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
    except OSError:
        return False


def ready(url: str) -> bool:
    """candlelight and llama-server: /health is 200 once the model is loaded (503
    before); llama_cpp.server has no /health (404) and listens only once loaded."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        if e.code != 404:
            return False
    except (urllib.error.URLError, OSError):
        return False
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def cmd_wait(a: argparse.Namespace) -> None:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if not alive(a.pid):
            sys.exit(f"wait: server process {a.pid} exited before it was ready")
        if ready(a.url):
            return
        time.sleep(0.25)
    sys.exit(f"wait: {a.url} not ready after {a.timeout}s")


def token_count(url: str, text: str) -> int:
    return len(http_json(url + "/tokenize", {"inputs": text})["ids"])


def exact_prompt(url: str, n: int, rng: random.Random) -> str:
    words = rng.choices(WORDS, k=n)
    # Each word is about one token; trim or extend until /tokenize says n.
    for _ in range(60):
        c = token_count(url, " ".join(words))
        if c == n:
            return " ".join(words)
        if c > n:
            del words[-max(1, (c - n) // 2):]
        else:
            words += rng.choices(WORDS, k=max(1, (n - c) // 2))
    sys.exit(f"prompts: could not make a prompt of exactly {n} tokens")


def cmd_prompts(a: argparse.Namespace) -> None:
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for _ in range(a.count):
            entry: dict[str, Any] = {"prompt": exact_prompt(a.url, a.input_len, rng)}
            if a.max_tokens:
                entry["max_tokens"] = a.max_tokens
            f.write(json.dumps(entry) + "\n")


def runs_full_length(url: str, model: str, text: str, output_len: int) -> bool:
    r = http_json(url + "/v1/completions", {
        "model": model, "prompt": text, "max_tokens": output_len, "temperature": 0,
        "cache_prompt": False,
    }, timeout=600)
    n = (r.get("usage") or {}).get("completion_tokens", output_len)
    return r["choices"][0]["finish_reason"] == "length" and n == output_len


def cmd_filter(a: argparse.Namespace) -> None:
    model = http_json(a.url + "/v1/models")["data"][0]["id"]
    with open(a.src) as f:
        entries = [json.loads(l) for l in f if l.strip()]
    kept, tried = [], 0
    for e in entries:
        if len(kept) == a.count:
            break
        tried += 1
        if runs_full_length(a.url, model, e["prompt"], a.output_len):
            kept.append(e)
    if not kept:
        sys.exit(f"filter: every prompt reached EOS within {a.output_len} tokens")
    with open(a.out, "w") as f:
        for e in kept:
            f.write(json.dumps(e) + "\n")
    short = "" if len(kept) == a.count else f" (wanted {a.count}: loadgen reuses them in turn)"
    print(f"prompts: {len(kept)} -> {a.out}{short}; {tried - len(kept)} of {tried} tried were "
          f"dropped: greedy output reached EOS within {a.output_len} tokens")


def loadgen_calibrates(url: str) -> bool:
    """Whether loadgen's /tokenize calibration works against URL (its request shape)."""
    try:
        v = http_json(url + "/tokenize", {"inputs": "one two three", "add_special_tokens": False},
                      timeout=10)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    if isinstance(v, list):
        return len(v) > 0
    return any(isinstance(v.get(k), list) and v[k] for k in ("tokens", "ids", "input_ids", "token_ids"))


CALIBRATION_LEN = 1300  # the --input-len of the calibration run (bench-server.sh)


def measured_tokens_per_word(calibration: str) -> float:
    """Server tokens per word of loadgen's synthetic text, from a loadgen run
    against candlelight (directory `calibration`): the prompt tokens the server
    counted over the words loadgen drew for --input-len CALIBRATION_LEN."""
    with open(os.path.join(calibration, "result.json")) as f:
        doc = json.load(f)
    used = (doc.get("resolved") or {}).get("tokens_per_word") or LOADGEN_DEFAULT_TOKENS_PER_WORD
    words = max(1, round(CALIBRATION_LEN / used))
    return doc["steps"][0]["input_tokens"]["mean"] / words


def synthetic_len(tokens: int, tokens_per_word: float) -> int:
    """The length to ask of loadgen, where it cannot calibrate, for a text of
    about `tokens` server tokens: loadgen then draws round(len / default) words,
    and round(round(tokens / tokens_per_word) × default) gives back exactly the
    round(tokens / tokens_per_word) words wanted."""
    words = max(1, round(tokens / tokens_per_word))
    return round(words * LOADGEN_DEFAULT_TOKENS_PER_WORD)


def cmd_synthetic_len(a: argparse.Namespace) -> None:
    if loadgen_calibrates(a.url):
        print(a.len)
    else:
        print(synthetic_len(a.len, measured_tokens_per_word(a.calibration)))


def read_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cmd_rss(a: argparse.Namespace) -> None:
    print(read_kb(a.pid, "VmHWM"), read_kb(a.pid, "VmRSS"))


def cmd_loadavg(a: argparse.Namespace) -> None:
    with open("/proc/loadavg") as f:
        parts = f.read().split()[:3]
    print(" ".join(parts))
    sys.exit(1 if float(parts[0]) > a.warn else 0)


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def cmd_report(a: argparse.Namespace) -> None:
    import bench_reports as r

    d, t, out = a.dir, a.title, a.output_len
    text = {
        "plain": lambda: r.plain(d, t, ints(a.levels), out),
        "mixed": lambda: r.mixed(d, t, out),
        "multi-turn": lambda: r.multi_turn(d, t, a.turns),
        "shared-prefix": lambda: r.shared_prefix(d, t, out),
        "long-context": lambda: r.long_context(d, t, ints(a.levels), out),
        "rss": lambda: r.rss(d, t, a.capacity, out),
        "sweep": lambda: r.sweep(d, t, ints(a.levels), out),
    }[a.workload]()
    print(text)


def no_extra_bufts() -> None:
    """Make every model load use plain CPU buffers (no AMX / repacked weights)."""
    import llama_cpp.llama_cpp as ll

    orig = ll.llama_model_default_params

    def patched():  # type: ignore[no-untyped-def]
        p = orig()
        p.use_extra_bufts = False
        return p

    ll.llama_model_default_params = patched


def cmd_llama_probe(a: argparse.Namespace) -> None:
    import subprocess

    code = (
        "import llama_cpp\n"
        f"llm = llama_cpp.Llama(model_path={a.model!r}, n_ctx=256, n_threads=1, verbose=False)\n"
        "llm.create_completion('Say hello.', max_tokens=2, temperature=0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    sys.exit(0 if r.returncode == 0 else 1)


def cmd_llama_cpp_python(a: argparse.Namespace) -> None:
    import runpy

    if a.no_extra_bufts:
        no_extra_bufts()
    sys.argv = ["llama_cpp.server"] + a.args
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port").set_defaults(f=cmd_free_port)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("pid", type=int)
    w.add_argument("timeout", type=float)
    w.set_defaults(f=cmd_wait)
    d = sub.add_parser("prompts")
    d.add_argument("url")
    d.add_argument("out")
    d.add_argument("--input-len", type=int, required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--max-tokens", type=int)
    d.set_defaults(f=cmd_prompts)
    fl = sub.add_parser("filter")
    fl.add_argument("url")
    fl.add_argument("src")
    fl.add_argument("out")
    fl.add_argument("--output-len", type=int, required=True)
    fl.add_argument("--count", type=int, required=True)
    fl.set_defaults(f=cmd_filter)
    sl = sub.add_parser("synthetic-len")
    sl.add_argument("calibration")
    sl.add_argument("url")
    sl.add_argument("len", type=int)
    sl.set_defaults(f=cmd_synthetic_len)
    r = sub.add_parser("rss")
    r.add_argument("pid", type=int)
    r.set_defaults(f=cmd_rss)
    la = sub.add_parser("loadavg")
    la.add_argument("--warn", type=float, default=2.5)
    la.set_defaults(f=cmd_loadavg)
    rep = sub.add_parser("report")
    rep.add_argument("workload", choices=["plain", "mixed", "multi-turn", "shared-prefix",
                                          "long-context", "rss", "sweep"])
    rep.add_argument("dir")
    rep.add_argument("--title", required=True)
    rep.add_argument("--levels", default="", help="concurrency levels, prompt lengths or sweep values")
    rep.add_argument("--output-len", type=int, default=64)
    rep.add_argument("--turns", type=int, default=6)
    rep.add_argument("--capacity", default="")
    rep.set_defaults(f=cmd_report)
    lp = sub.add_parser("llama-probe")
    lp.add_argument("model")
    lp.set_defaults(f=cmd_llama_probe)
    ls = sub.add_parser("llama-cpp-python")
    ls.add_argument("--no-extra-bufts", action="store_true")
    ls.add_argument("args", nargs=argparse.REMAINDER)
    ls.set_defaults(f=cmd_llama_cpp_python)
    return p


def main() -> None:
    a = parser().parse_args()
    if getattr(a, "args", None) and a.args[0] == "--":
        a.args = a.args[1:]
    a.f(a)


if __name__ == "__main__":
    main()
