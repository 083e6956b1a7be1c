"""Helpers for scripts/bench-server.sh (standard library only).

Subcommands:
  free-port                         print a free TCP port on 127.0.0.1
  wait URL PID TIMEOUT_S            wait until GET URL/health answers 200 (or 404
                                    and GET URL/v1/models answers 200)
                                    (fails at once if PID exits)
  prompts URL OUT --input-len N --count K [--seed S]
                                    write K prompts of random common words, each
                                    exactly N tokens as counted by candlelight's
                                    /tokenize at URL (JSONL)
  filter URL IN OUT --output-len M --count K
                                    keep the first K prompts of IN whose greedy
                                    completion on the server at URL runs M tokens
                                    without EOS; write them as loadgen JSONL with
                                    max_tokens M (for a server that ignores
                                    `ignore_eos`, so output lengths stay equal)
  rss PID                           print VmHWM and VmRSS of PID in kB
  report DIR                        print the comparison table from DIR
  llama-probe MODEL                 (run with .venv-bench's python) exit 0 when
                                    llama.cpp's extra weight buffer types (AMX,
                                    repacking) can run a decode here, 1 if not
  llama-server [--no-extra-bufts] -- ARGS...
                                    (run with .venv-bench's python) run
                                    `python -m llama_cpp.server ARGS` in this
                                    process, optionally with
                                    llama_model_params.use_extra_bufts = false
"""

import argparse
import csv
import json
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request

SERVERS = ("candlelight", "llamacpp")
LABEL = {"candlelight": "candlelight", "llamacpp": "llama.cpp"}

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


def http_json(url, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def cmd_free_port(_):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
    except OSError:
        return False


def cmd_wait(a):
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if not alive(a.pid):
            sys.exit(f"wait: server process {a.pid} exited before it was ready")
        # candlelight: /health is 200 once the model is loaded (503 before);
        # llama_cpp.server has no /health (404) and listens only once loaded.
        try:
            with urllib.request.urlopen(a.url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            if e.code == 404:
                try:
                    with urllib.request.urlopen(a.url + "/v1/models", timeout=5) as r:
                        if r.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    sys.exit(f"wait: {a.url} not ready after {a.timeout}s")


def token_count(url, text):
    return len(http_json(url + "/tokenize", {"inputs": text})["ids"])


def exact_prompt(url, n, rng):
    words = rng.choices(WORDS, k=n)
    # Each word is about one token; trim or extend until /tokenize says n.
    for _ in range(50):
        text = " ".join(words)
        c = token_count(url, text)
        if c == n:
            return text
        if c > n:
            del words[-max(1, (c - n) // 2):]
        else:
            words += rng.choices(WORDS, k=max(1, (n - c) // 2))
    sys.exit(f"prompts: could not make a prompt of exactly {n} tokens")


def cmd_prompts(a):
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for _ in range(a.count):
            f.write(json.dumps({"prompt": exact_prompt(a.url, a.input_len, rng)}) + "\n")


def cmd_filter(a):
    model = http_json(a.url + "/v1/models")["data"][0]["id"]
    with open(a.src) as f:
        prompts = [json.loads(l)["prompt"] for l in f if l.strip()]
    kept, tried = [], 0
    for text in prompts:
        if len(kept) == a.count:
            break
        tried += 1
        r = http_json(a.url + "/v1/completions", {
            "model": model, "prompt": text, "max_tokens": a.output_len, "temperature": 0,
        }, timeout=600)
        n = (r.get("usage") or {}).get("completion_tokens", a.output_len)
        if r["choices"][0]["finish_reason"] == "length" and n == a.output_len:
            kept.append(text)
    if not kept:
        sys.exit(f"filter: every prompt reached EOS within {a.output_len} tokens")
    with open(a.out, "w") as f:
        for text in kept:
            f.write(json.dumps({"prompt": text, "max_tokens": a.output_len}) + "\n")
    short = "" if len(kept) == a.count else f" (wanted {a.count}: loadgen reuses them in turn)"
    print(f"prompts: {len(kept)} -> {a.out}{short}; {tried - len(kept)} of {tried} tried were "
          f"dropped: greedy output reached EOS within {a.output_len} tokens")


def read_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cmd_rss(a):
    print(read_kb(a.pid, "VmHWM"), read_kb(a.pid, "VmRSS"))


def load_step(d):
    """(step object of result.json, stats from requests.csv) or None."""
    try:
        with open(os.path.join(d, "result.json")) as f:
            step = json.load(f)["steps"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return None
    chunks, ok = [], 0
    try:
        with open(os.path.join(d, "requests.csv")) as f:
            for row in csv.DictReader(f):
                if row.get("ok") in ("true", "1", "True"):
                    ok += 1
                    chunks.append(int(row["chunks"] or 0))
    except OSError:
        pass
    return step, chunks


def p50(step, metric):
    m = step.get(metric)
    return None if not m else m.get("p50")


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def cmd_report(a):
    conc = [int(c) for c in a.concurrency.split(",")]
    rows, notes = [], []
    approx = False
    for c in conc:
        r = {}
        for s in SERVERS:
            got = load_step(os.path.join(a.dir, s, f"c{c}"))
            if got is None:
                notes.append(f"{LABEL[s]} c={c}: no result.json")
                r[s] = {}
                continue
            step, chunks = got
            secs = step["window"]["seconds"]
            tps = step["throughput"].get("output_tokens_per_s")
            if tps is None and chunks and secs:
                # No server token counts: one streamed content chunk per token.
                tps, approx = sum(chunks) / secs, True
                r[s] = {"tps_approx": True}
            else:
                r[s] = {}
            r[s].update(
                tps=tps,
                rps=step["throughput"].get("requests_per_s"),
                ttft=p50(step, "ttft"),
                e2e=p50(step, "e2e"),
                chunks=(sum(chunks) / len(chunks)) if chunks else None,
                counts=step.get("token_counts"),
                errors=step["requests"].get("errors"),
                ok=step["requests"].get("ok"),
                batch=(step.get("server") or {}).get("decode_batch_size_mean"),
            )
            if step["requests"].get("errors"):
                notes.append(f"{LABEL[s]} c={c}: {step['requests']['errors']} failed requests: "
                             f"{step.get('error_examples')}")
        rows.append((c, r))

    def g(r, s, k):
        return r.get(s, {}).get(k)

    print("| concurrency | candlelight out tok/s | llama.cpp out tok/s | tok/s ratio (cl/llama) "
          "| candlelight TTFT p50 ms | llama.cpp TTFT p50 ms | TTFT ratio (llama/cl) "
          "| candlelight req/s | llama.cpp req/s | candlelight E2E p50 ms | llama.cpp E2E p50 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, r in rows:
        ms = lambda x: None if x is None else x * 1000
        lt = fmt(g(r, "llamacpp", "tps"), ".1f") + ("~" if g(r, "llamacpp", "tps_approx") else "")
        ct = fmt(g(r, "candlelight", "tps"), ".1f") + ("~" if g(r, "candlelight", "tps_approx") else "")
        print(f"| {c} | {ct} | {lt} "
              f"| {fmt(ratio(g(r, 'candlelight', 'tps'), g(r, 'llamacpp', 'tps')), '.2f')} "
              f"| {fmt(ms(g(r, 'candlelight', 'ttft')), '.0f')} | {fmt(ms(g(r, 'llamacpp', 'ttft')), '.0f')} "
              f"| {fmt(ratio(g(r, 'llamacpp', 'ttft'), g(r, 'candlelight', 'ttft')), '.2f')} "
              f"| {fmt(g(r, 'candlelight', 'rps'), '.2f')} | {fmt(g(r, 'llamacpp', 'rps'), '.2f')} "
              f"| {fmt(ms(g(r, 'candlelight', 'e2e')), '.0f')} | {fmt(ms(g(r, 'llamacpp', 'e2e')), '.0f')} |")
    print()
    if approx:
        notes.append("`~`: the server sent no token usage in its stream (llama_cpp.server ignores "
                     "stream_options.include_usage), so output tokens are counted as streamed "
                     "content chunks (one per token in llama-cpp-python)")
    for c, r in rows:
        parts = []
        for s in SERVERS:
            ch = g(r, s, "chunks")
            b = g(r, s, "batch")
            parts.append(f"{LABEL[s]} {fmt(ch, '.1f')} chunks/request"
                         + (f", decode batch mean {b:.1f}" if b is not None else ""))
        notes.append(f"c={c}: " + "; ".join(parts))
    mem = {}
    for s in SERVERS:
        try:
            with open(os.path.join(a.dir, s, "peak_rss_kb")) as f:
                mem[s] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            mem[s] = None
    mib = lambda kb: None if kb is None else kb / 1024
    print(f"Peak RSS (VmHWM) serving {a.mem_desc}: candlelight {fmt(mib(mem['candlelight']), '.1f')} MiB, "
          f"llama.cpp {fmt(mib(mem['llamacpp']), '.1f')} MiB, ratio candlelight/llama.cpp "
          f"{fmt(ratio(mem['candlelight'], mem['llamacpp']), '.2f')}")
    try:
        with open(os.path.join(a.dir, "llamacpp", "peak_rss_ctx_kb")) as f:
            hwm, _, ctx = (int(x) for x in f.read().split())
        print(f"Peak RSS of llama.cpp with --n_ctx {ctx} (KV room for the same 16 sequences, still served "
              f"one at a time): {hwm / 1024:.1f} MiB, ratio candlelight/llama.cpp "
              f"{fmt(ratio(mem['candlelight'], hwm), '.2f')}")
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(a.dir, "candlelight", "mem", "result.json")) as f:
            info = json.load(f)["environment"]["server_info"]
        notes.append(f"candlelight's KV cache takes {info['kv_cache_bytes_per_token']} bytes per token "
                     f"(its /info), reserved per sequence for prompt + max_tokens")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print()
    for n in notes:
        print(f"- {n}")


def no_extra_bufts():
    """Make every model load use plain CPU buffers (no AMX / repacked weights)."""
    import llama_cpp.llama_cpp as ll

    orig = ll.llama_model_default_params

    def patched():
        p = orig()
        p.use_extra_bufts = False
        return p

    ll.llama_model_default_params = patched


def cmd_llama_probe(a):
    import subprocess

    code = (
        "import llama_cpp\n"
        f"llm = llama_cpp.Llama(model_path={a.model!r}, n_ctx=256, n_threads=1, verbose=False)\n"
        "llm.create_completion('Say hello.', max_tokens=2, temperature=0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    sys.exit(0 if r.returncode == 0 else 1)


def cmd_llama_server(a):
    import runpy

    if a.no_extra_bufts:
        no_extra_bufts()
    sys.argv = ["llama_cpp.server"] + a.args
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def main():
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
    d.set_defaults(f=cmd_prompts)
    fl = sub.add_parser("filter")
    fl.add_argument("url")
    fl.add_argument("src")
    fl.add_argument("out")
    fl.add_argument("--output-len", type=int, required=True)
    fl.add_argument("--count", type=int, required=True)
    fl.set_defaults(f=cmd_filter)
    r = sub.add_parser("rss")
    r.add_argument("pid", type=int)
    r.set_defaults(f=cmd_rss)
    rep = sub.add_parser("report")
    rep.add_argument("dir")
    rep.add_argument("--concurrency", default="1,8,16")
    rep.add_argument("--mem-desc", default="16 concurrent sequences")
    rep.set_defaults(f=cmd_report)
    lp = sub.add_parser("llama-probe")
    lp.add_argument("model")
    lp.set_defaults(f=cmd_llama_probe)
    ls = sub.add_parser("llama-server")
    ls.add_argument("--no-extra-bufts", action="store_true")
    ls.add_argument("args", nargs=argparse.REMAINDER)
    ls.set_defaults(f=cmd_llama_server)
    a = p.parse_args()
    if getattr(a, "args", None) and a.args[0] == "--":
        a.args = a.args[1:]
    a.f(a)


if __name__ == "__main__":
    main()
