#!/usr/bin/env python3
"""Soak a running candlelight server with requests of mixed shapes.

Every route and shape (TGI and OpenAI, streamed or not, chat and completions,
token-id prompts, logprobs, penalties), clients that leave mid-stream, and
bad input, from several threads at once. It samples the server process's
memory and open file descriptors along the way, then checks what a long run
must leave behind: no reserved KV, no growth of memory beyond what the KV
pool's high-water mark explains, no leaked descriptors, and no error but the
ones the bad input asks for.

Usage: soak.py URL PID [--requests N] [--threads T] [--seed S]
Prints a report; exits 1 when a check fails. Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over a lazy dog while seven tired cats "
         "watch rain fall on old red roofs near quiet blue rivers").split()


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def shapes(rng, vocab):
    """One request: (label, method, path, body bytes or None, how to read it)."""
    n = rng.randint(3, 40)
    k = rng.randint(2, 12)
    choice = rng.randrange(12)
    if choice == 0:
        body = {"inputs": text(rng, n), "parameters": {"max_new_tokens": k}}
        return "tgi", "/generate", body, "json"
    if choice == 1:
        body = {"inputs": text(rng, n), "parameters": {"max_new_tokens": k, "details": True,
                                                       "top_n_tokens": 2, "do_sample": True, "seed": 1}}
        return "tgi_stream", "/generate_stream", body, "sse"
    if choice == 2:
        body = {"prompt": text(rng, n), "max_tokens": k, "logprobs": 2}
        return "completions", "/v1/completions", body, "json"
    if choice == 3:
        ids = [rng.randrange(vocab) for _ in range(n)]
        body = {"prompt": ids, "max_tokens": k, "stream": True,
                "stream_options": {"include_usage": True}}
        return "completions_ids_stream", "/v1/completions", body, "sse"
    if choice == 4:
        body = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": text(rng, n)}],
                "max_tokens": k, "presence_penalty": 0.5, "frequency_penalty": 0.5}
        return "chat", "/v1/chat/completions", body, "json"
    if choice == 5:
        body = {"messages": [{"role": "user", "content": text(rng, n)}], "max_tokens": k,
                "stream": True, "logprobs": True, "top_logprobs": 2, "temperature": 0.7}
        return "chat_stream", "/v1/chat/completions", body, "sse"
    if choice in (6, 7):
        body = {"messages": [{"role": "user", "content": text(rng, n)}], "max_tokens": 64,
                "stream": True, "ignore_eos": True}
        return "cancelled", "/v1/chat/completions", body, "cancel"
    if choice == 8:
        return "tokenize", "/tokenize", {"inputs": text(rng, n)}, "json"
    bad = [
        ("bad_json", "/generate", b'{"inputs": "x", "parameters": {'),
        ("bad_field", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
        ("bad_value", "/generate", {"inputs": "x", "parameters": {"temperature": -1}}),
        ("bad_role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}),
        ("bad_prompt", "/v1/completions", {"prompt": "", "max_tokens": 4}),
        ("bad_length", "/v1/completions", {"prompt": "x", "max_tokens": 10_000_000}),
    ]
    label, path, body = rng.choice(bad)
    return label, path, body, "bad"


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {}
        self.done = 0

    def add(self, kind):
        with self.lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.done += 1


def send(conn, label, path, body, how):
    """Sends one request on `conn`; returns its outcome kind."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    if how == "bad":
        payload = resp.read()
        ok = 400 <= resp.status < 500 and b"error" in payload
        return f"refused_{resp.status}" if ok else f"UNEXPECTED_{label}_{resp.status}"
    if resp.status != 200:
        resp.read()
        return f"UNEXPECTED_http_{resp.status}"
    if how == "cancel":
        resp.fp.readline()  # the first event, then leave
        conn.close()
        return "cancelled"
    payload = resp.read()
    if how == "sse" and b"error" in payload and b"[DONE]" not in payload and label != "tgi_stream":
        return "UNEXPECTED_stream_error"
    return "ok"


def worker(url, jobs, tally, seed, vocab):
    rng = random.Random(seed)
    host = urllib.parse.urlparse(url)
    conn = None
    while True:
        with jobs["lock"]:
            if jobs["left"] == 0:
                break
            jobs["left"] -= 1
        label, path, body, how = shapes(rng, vocab)
        if conn is None:
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
        try:
            kind = send(conn, label, path, body, how)
        except (OSError, http.client.HTTPException) as e:
            kind = f"UNEXPECTED_transport_{type(e).__name__}"
        if how == "cancel" or kind.startswith("UNEXPECTED"):
            conn.close()
            conn = None
        tally.add(kind)
    if conn is not None:
        conn.close()


def get_json(url, path):
    host = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def metric(url, name):
    host = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(url, pid, done):
    return {
        "requests": done,
        "rss": rss_bytes(pid),
        "kv_resident": metric(url, "candlelight_kv_cache_resident_bytes"),
        "fds": fds(pid),
    }


def slope_per_1k(points):
    """Least-squares slope of net memory (bytes) per 1,000 requests."""
    xs = [p["requests"] for p in points]
    ys = [p["rss"] - p["kv_resident"] for p in points]
    if len(xs) < 3 or max(xs) == min(xs):
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den * 1000


def wait_idle(url, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        info = get_json(url, "/info")
        if info["running_requests"] == 0 and info["queued_requests"] == 0:
            return info
        time.sleep(0.2)
    return get_json(url, "/info")


def run(args):
    info = get_json(args.url, "/info")
    vocab = info["vocab_size"]
    tally = Tally()
    jobs = {"lock": threading.Lock(), "left": args.requests}
    fds_before = fds(args.pid)
    threads = [threading.Thread(target=worker, args=(args.url, jobs, tally, args.seed + i, vocab))
               for i in range(args.threads)]
    started = time.time()
    for t in threads:
        t.start()
    points = [sample(args.url, args.pid, 0)]
    every = max(args.requests // 20, 1)
    next_mark = every
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if tally.done >= next_mark:
            points.append(sample(args.url, args.pid, tally.done))
            next_mark += every
    for t in threads:
        t.join()
    elapsed = time.time() - started
    idle = wait_idle(args.url)
    time.sleep(1.0)  # let closed keep-alive connections go
    points.append(sample(args.url, args.pid, tally.done))
    return report(args, tally, points, idle, fds_before, elapsed)


def report(args, tally, points, idle, fds_before, elapsed):
    warm = [p for p in points if p["requests"] >= args.requests * args.warmup]
    slope = slope_per_1k(warm)
    mid = points[len(points) // 2]
    mib = lambda b: b / 1048576
    print(f"soak: {tally.done} requests in {elapsed:.0f} s ({tally.done / elapsed:.1f}/s), "
          f"{args.threads} threads")
    print(f"  RSS start {mib(points[0]['rss']):.1f} MiB, middle {mib(mid['rss']):.1f} MiB, "
          f"end {mib(points[-1]['rss']):.1f} MiB (KV pool resident at end "
          f"{mib(points[-1]['kv_resident']):.1f} MiB)")
    print(f"  RSS slope after warm-up (net of the KV pool's high-water mark): "
          f"{slope / 1e6:.3f} MB per 1,000 requests")
    print(f"  reserved KV left: {idle['kv_cache_reserved_bytes']} bytes; running "
          f"{idle['running_requests']}, queued {idle['queued_requests']}; "
          f"cached prefixes {mib(idle['kv_cache_cached_bytes']):.1f} MiB (evictable, not reserved)")
    print(f"  open file descriptors: {fds_before} before, {points[-1]['fds']} after")
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.kinds.items())))
    failures = []
    if idle["kv_cache_reserved_bytes"] != 0 or idle["running_requests"] != 0:
        failures.append("reserved KV or running requests left after the soak")
    if slope > args.max_slope_mb * 1e6:
        failures.append(f"memory grows {slope / 1e6:.2f} MB per 1,000 requests "
                        f"(limit {args.max_slope_mb})")
    if points[-1]["fds"] > fds_before + args.fd_slack:
        failures.append(f"file descriptors grew from {fds_before} to {points[-1]['fds']}")
    unexpected = {k: v for k, v in tally.kinds.items() if k.startswith("UNEXPECTED")}
    if unexpected:
        failures.append(f"unexpected outcomes: {unexpected}")
    for f in failures:
        print(f"soak: FAIL: {f}")
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("pid", type=int)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup", type=float, default=0.3,
                   help="fraction of requests before the memory slope is measured")
    p.add_argument("--max-slope-mb", type=float, default=1.0,
                   help="largest allowed growth, MB per 1,000 requests after warm-up")
    p.add_argument("--fd-slack", type=int, default=4)
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
