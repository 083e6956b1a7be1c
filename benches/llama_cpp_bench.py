"""llama.cpp baseline for the engine bench, through llama-cpp-python.

Prints one JSON object: single-stream decode tokens/s, prefill tokens/s for a
512-token prompt, and aggregate decode tokens/s with N sequences decoded
together in one llama_decode batch (llama.cpp's own batching).
Usage: python llama_cpp_bench.py MODEL THREADS
"""

import ctypes
import json
import sys
import time

import llama_cpp

MODEL, THREADS = sys.argv[1], int(sys.argv[2])
DECODE_TOKENS = 128
PREFILL_TOKENS = 512
AGG_STEPS = 64
LEVELS = [1, 4, 8, 16]


def best(f, reps=3):
    return min(f() for _ in range(reps))


def main():
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(MODEL.encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 16 * 256
    cparams.n_batch = 512
    cparams.n_ubatch = 512
    cparams.n_seq_max = 16
    # One KV buffer shared by all sequences (as llama-server does): otherwise
    # each of the 16 sequences gets n_ctx / 16 cells and a 512-token prefill
    # does not fit.
    cparams.kv_unified = True
    cparams.n_threads = THREADS
    cparams.n_threads_batch = THREADS
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    mem = llama_cpp.llama_get_memory(ctx)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    batch = llama_cpp.llama_batch_init(512, 0, 16)

    def fill(entries):
        """entries: list of (token, pos, seq, want_logits)."""
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0

    def decode(entries):
        fill(entries)
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def argmax(row):
        logits = llama_cpp.llama_get_logits_ith(ctx, row)
        best_i, best_v = 0, -1e30
        for i in range(n_vocab):
            v = logits[i]
            if v > best_v:
                best_i, best_v = i, v
        return best_i

    def clear():
        llama_cpp.llama_memory_clear(mem, True)

    prompt = [1] + [504 + (i % 50) for i in range(15)]

    # Single stream: prefill a short prompt, then decode one token at a time.
    # Token choice does not affect speed, so feed a fixed token (no sampling cost).
    def single():
        clear()
        decode([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        pos = len(prompt)
        start = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            decode([(504, pos, 0, True)])
            pos += 1
        return time.perf_counter() - start

    # Prefill: one 512-token prompt in one batch.
    long_prompt = [1] + [504 + (i % 300) for i in range(PREFILL_TOKENS - 1)]

    def prefill():
        clear()
        start = time.perf_counter()
        decode([(t, i, 0, i == PREFILL_TOKENS - 1) for i, t in enumerate(long_prompt)])
        return time.perf_counter() - start

    # Aggregate: n sequences decoded together, one token each per llama_decode.
    def aggregate(n):
        clear()
        for s in range(n):
            decode([(t, i, s, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        pos = len(prompt)
        start = time.perf_counter()
        for _ in range(AGG_STEPS):
            decode([(504, pos, s, True) for s in range(n)])
            pos += 1
        return time.perf_counter() - start

    single()  # warm up
    out = {
        "engine": "llama.cpp",
        "version": llama_cpp.__version__,
        "threads": THREADS,
        "decode_tok_s": DECODE_TOKENS / best(single),
        "prefill_tok_s": PREFILL_TOKENS / best(prefill),
        "aggregate_tok_s": {str(n): n * AGG_STEPS / best(lambda: aggregate(n), 2) for n in LEVELS},
    }
    _ = argmax
    print(json.dumps(out))


if __name__ == "__main__":
    main()
