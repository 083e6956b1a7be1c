"""One markdown section per bench-server.sh workload (see bench_tables.py)."""

from __future__ import annotations

import os
from typing import Optional

from bench_tables import (BASELINE, LABEL, LOAD_COLUMNS, Column, Run, cells, commands, fmt,
                          fmt_ratio, load_run, loadavg_note, markdown, ms, nearest_rank, ratio,
                          ratio_cells, run_notes, section, stat)

CL, NC = "candlelight", "candlelight-no-cache"


def _runs(d: str, names: list[str]) -> dict[str, Optional[Run]]:
    return {n: load_run(os.path.join(d, n)) for n in names if os.path.isdir(os.path.join(d, n))}


def _notes(runs: dict[str, Optional[Run]], expect_output: Optional[int]) -> list[str]:
    out = []
    for name, run in runs.items():
        out += run_notes(LABEL.get(name, name), run, expect_output)
    return out


def _verdict(ok: Optional[bool], text: str) -> str:
    word = "n/a" if ok is None else ("met" if ok else "missed")
    return f"Target {text}: **{word}**"


def _at_least(x: Optional[float], bound: float) -> Optional[bool]:
    return None if x is None else x >= bound


def _at_most(x: Optional[float], bound: float) -> Optional[bool]:
    return None if x is None else x <= bound


def plain(d: str, title: str, levels: list[int], output_len: int) -> str:
    servers = [s for s in (CL, BASELINE, "llama-cpp-python")
               if any(os.path.isdir(os.path.join(d, f"{s}-c{c}")) for c in levels)]
    rows, notes, at = [], [], {}
    for c in levels:
        runs = {s: load_run(os.path.join(d, f"{s}-c{c}")) for s in servers}
        at[c] = runs
        rows += [[str(c), LABEL[s]] + cells(runs[s], LOAD_COLUMNS) for s in servers]
        for base in servers[1:]:
            rows.append([str(c), f"ratio candlelight / {LABEL[base]}"]
                        + ratio_cells(runs[CL], runs[base], LOAD_COLUMNS))
        notes += [f"c={c}, {n}" for n in _notes(runs, output_len)]
    table = markdown(["concurrency", "server"] + [c.name for c in LOAD_COLUMNS], rows, left=2)

    def tps_ratio(c: int) -> Optional[float]:
        r = at.get(c, {})
        a, b = r.get(CL), r.get(BASELINE)
        return ratio(a.tps if a else None, b.tps if b else None)

    single, agg = tps_ratio(1), tps_ratio(16)
    notes.insert(0, _verdict(_at_least(single, 1.5), f"single-stream decode ≥ 1.5× llama-server "
                             f"(out tok/s at concurrency 1: {fmt_ratio(single)})"))
    notes.insert(1, _verdict(_at_least(agg, 3.0), f"aggregate at 16 streams ≥ 3× llama-server "
                             f"({fmt_ratio(agg)})"))
    if any(r and r.tps_from_chunks for runs in at.values() for r in runs.values()):
        notes.append("`~`: no token usage in the stream (llama_cpp.server); output tokens counted "
                     "as streamed chunks, one per token there")
    for c in levels[-1:]:
        notes += commands(at[c])
    notes += loadavg_note(d)
    return section(title,
                   table, notes)


def mixed(d: str, title: str, output_len: int) -> str:
    runs = _runs(d, [CL, BASELINE])
    cl, base = runs.get(CL), runs.get(BASELINE)
    rows = [[LABEL[s]] + cells(r, LOAD_COLUMNS) for s, r in runs.items()]
    rows.append(["ratio candlelight / llama-server"] + ratio_cells(cl, base, LOAD_COLUMNS))
    p99 = ratio(ms(stat(cl, "itl", "p99")), ms(stat(base, "itl", "p99")))
    tps = ratio(cl.tps if cl else None, base.tps if base else None)
    notes = [_verdict(_at_most(p99, 1.0), f"ITL p99 no worse than llama-server's "
                      f"({fmt(ms(stat(cl, 'itl', 'p99')), '.0f')} vs "
                      f"{fmt(ms(stat(base, 'itl', 'p99')), '.0f')} ms)"),
             _verdict(_at_least(tps, 3.0), f"throughput ≥ 3× llama-server's ({fmt_ratio(tps)})")]
    notes += _notes(runs, output_len) + commands(runs) + loadavg_note(d)
    return section(title, markdown(["server"] + [c.name for c in LOAD_COLUMNS], rows),
                   notes)


def _turn_rows(run: Run, first: int, last: Optional[int] = None) -> list[dict]:
    """Rows of turns first..last (1-based, inclusive; last None: to the end)."""
    def wanted(t: int) -> bool:
        return t >= first and (last is None or t <= last)

    return [r for r in run.rows if r.get("turn") and wanted(int(r["turn"]))]


def _ttft_p50(rows: list[dict]) -> Optional[float]:
    return ms(nearest_rank([float(r["ttft_s"]) for r in rows if r.get("ttft_s")], 50))


def _cached_share(rows: list[dict]) -> Optional[float]:
    """Cached prompt tokens / prompt tokens over the rows that reported cached tokens."""
    got = [r for r in rows if r.get("cached_tokens") not in (None, "")]
    inp = sum(int(r["input_tokens"] or 0) for r in got)
    return None if not got or not inp else sum(int(r["cached_tokens"]) for r in got) / inp


def _mean(rows: list[dict], key: str) -> Optional[float]:
    v = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return sum(v) / len(v) if v else None


def multi_turn(d: str, title: str, turns: int) -> str:
    runs = _runs(d, [CL, NC, BASELINE])
    later = f"turns 2–{turns}"
    head = ["server", "turn 1 TTFT p50 ms", f"{later} TTFT p50 ms", f"{later} cached / prompt tokens",
            f"turn {turns} prompt tokens", "ITL p50 ms", "ITL p99 ms", "out tok/s"]
    rows, later_p50 = [], {}
    for s, r in runs.items():
        if r is None:
            rows.append([LABEL[s]] + ["n/a"] * (len(head) - 1))
            continue
        later_p50[s] = _ttft_p50(_turn_rows(r, 2))
        last = _turn_rows(r, turns, turns)
        share = _cached_share(_turn_rows(r, 2))
        rows.append([LABEL[s], fmt(_ttft_p50(_turn_rows(r, 1, 1)), ".0f"),
                     fmt(later_p50[s], ".0f"),
                     "not reported" if share is None else f"{share:.0%}",
                     fmt(_mean(last, "input_tokens"), ".0f"),
                     fmt(ms(stat(r, "itl")), ".1f"), fmt(ms(stat(r, "itl", "p99")), ".0f"),
                     fmt(r.tps, ".1f")])
    per_turn = [[LABEL[s]] + [fmt(_ttft_p50(_turn_rows(r, t, t)), ".0f")
                              for t in range(1, turns + 1)]
                for s, r in runs.items() if r is not None]
    v_nc = ratio(later_p50.get(CL), later_p50.get(NC))
    v_base = ratio(later_p50.get(CL), later_p50.get(BASELINE))
    notes = [_verdict(_at_most(v_nc, 0.5), f"{later} TTFT p50 ≤ ½ of --no-prefix-cache's "
                      f"({fmt_ratio(v_nc)})"),
             _verdict(_at_most(v_base, 1.0), f"{later} TTFT p50 ≤ llama-server's with its prompt "
                      f"cache ({fmt_ratio(v_base)})")]
    notes += _notes(runs, None) + commands(runs) + loadavg_note(d)
    table = (markdown(head, rows) + "\n\nTTFT p50 (ms) per turn:\n\n"
             + markdown(["server"] + [f"turn {t}" for t in range(1, turns + 1)], per_turn))
    return section(title, table, notes)


SHARED_COLUMNS = LOAD_COLUMNS + [
    Column("cached / prompt tokens", lambda r: _cached_share(r.rows), ".0%"),
    Column("prompt tokens", lambda r: _mean(r.rows, "input_tokens"), ".0f"),
]


def shared_prefix(d: str, title: str, output_len: int) -> str:
    runs = _runs(d, [CL, NC, BASELINE])
    cl = runs.get(CL)
    rows = [[LABEL[s]] + cells(r, SHARED_COLUMNS) for s, r in runs.items()]
    for base in (NC, BASELINE):
        rows.append([f"ratio candlelight / {LABEL[base]}"]
                    + ratio_cells(cl, runs.get(base), LOAD_COLUMNS) + ["", ""])
    nc = runs.get(NC)
    v = ratio(cl.tps if cl else None, nc.tps if nc else None)
    notes = [_verdict(_at_least(v, 1.5), f"throughput ≥ 1.5× --no-prefix-cache's ({fmt_ratio(v)})")]
    notes += _notes(runs, output_len) + commands(runs) + loadavg_note(d)
    return section(title, markdown(["server"] + [c.name for c in SHARED_COLUMNS], rows),
                   notes)


LONG_COLUMNS = [
    Column("TTFT p50 ms", lambda r: ms(stat(r, "ttft")), ".0f"),
    Column("ITL p50 ms", lambda r: ms(stat(r, "itl")), ".1f"),
    Column("ITL p99 ms", lambda r: ms(stat(r, "itl", "p99")), ".1f"),
    Column("E2E p50 ms", lambda r: ms(stat(r, "e2e")), ".0f"),
    Column("prompt tokens", lambda r: stat(r, "input_tokens", "mean"), ".0f"),
]


def long_context(d: str, title: str, lengths: list[int], output_len: int) -> str:
    rows, notes, at = [], [], {}
    for n in lengths:
        runs = {s: load_run(os.path.join(d, f"{s}-{n}")) for s in (CL, BASELINE)}
        at[n] = runs
        rows += [[str(n), LABEL[s]] + cells(r, LONG_COLUMNS) for s, r in runs.items()]
        rows.append([str(n), "ratio candlelight / llama-server"]
                    + ratio_cells(runs[CL], runs[BASELINE], LONG_COLUMNS[:4]) + [""])
        notes += [f"{n} tokens, {x}" for x in _notes(runs, output_len)]
    near4k = min(lengths, key=lambda n: abs(n - 4096)) if lengths else None
    if near4k is not None:
        r = at[near4k]
        v = ratio(stat(r[CL], "itl", "p99"), stat(r[BASELINE], "itl", "p99"))
        notes.insert(0, _verdict(_at_most(v, 1.0), f"ITL p99 at {near4k} tokens of context no worse "
                                 f"than llama-server's ({fmt_ratio(v)})"))
        notes += commands(r)
    notes += loadavg_note(d)
    table = markdown(["prompt tokens", "server"] + [c.name for c in LONG_COLUMNS], rows, left=2)
    return section(title, table, notes)


def _rss(d: str) -> tuple[Optional[int], Optional[int]]:
    try:
        with open(os.path.join(d, "peak_rss_kb")) as f:
            hwm, rss = (int(x) for x in f.read().split()[:2])
        return hwm, rss
    except (OSError, ValueError):
        return None, None


def rss(d: str, title: str, capacity: str, output_len: int) -> str:
    peaks, rows = {}, []
    runs = _runs(d, [CL, BASELINE])
    for s in runs:
        hwm, now = _rss(os.path.join(d, s))
        peaks[s] = hwm
        rows.append([LABEL[s], fmt(hwm and hwm / 1024, ".1f"), fmt(now and now / 1024, ".1f")])
    rows.append(["ratio candlelight / llama-server",
                 fmt_ratio(ratio(peaks.get(CL), peaks.get(BASELINE))), ""])
    notes = [f"Both sized for the same KV capacity: {capacity}; a fresh process per server; "
             "VmHWM from /proc/PID/status after the load"]
    cl = runs.get(CL)
    if cl and cl.server_info.get("kv_cache_bytes_per_token"):
        notes.append(f"candlelight's KV cache: {cl.server_info['kv_cache_bytes_per_token']} bytes "
                     "per token (its /info)")
    notes += _notes(runs, output_len) + commands(runs) + loadavg_note(d)
    return section(title,
                   markdown(["server", "peak RSS (VmHWM) MiB", "RSS at the end MiB"], rows), notes)


SWEEP_COLUMNS = [c for c in LOAD_COLUMNS if c.name != "req/s"]


def sweep(d: str, title: str, values: list[int], output_len: int) -> str:
    rows, notes = [], []
    for v in values:
        r = load_run(os.path.join(d, f"mbt-{v}"))
        rows.append([str(v)] + cells(r, SWEEP_COLUMNS))
        notes += run_notes(f"--max-batch-tokens {v}", r, output_len)
    notes += loadavg_note(d)
    return section(title,
                   markdown(["--max-batch-tokens"] + [c.name for c in SWEEP_COLUMNS], rows), notes)
