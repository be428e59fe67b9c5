"""Worker throughput: tokens per second and time to first token through a worker process, against the
same engine (llama-cpp-python, same GGUF, same threads, greedy) called directly, in one run.

Through the worker: a job frame goes over the mutual RA-TLS WebSocket link to a real ``cocoon worker
run`` process (the link's other end is the test peer of tests/worker/peer.py), which validates it,
renders the chat template, generates, and streams chunk frames back; time to first token is from
sending the job to receiving its first content chunk. Directly: ``Llama.generate`` on the same prompt
tokens in this process. Rounds alternate (direct, worker, direct, ...) so both see the same machine
load; medians are reported, and the ratio and the added time are medians of each round's pair (a
shared machine's load drifts between rounds). Bars: at least 95 % of the direct tokens per second, at
most 5 ms added to the first token at p50. On a loaded machine both numbers move by more than the bars.

    .venv/bin/python benchmarks/worker.py [--rounds 9] [--tokens 64]

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.worker.engines import warm_up  # noqa: E402
from node.worker.settings import default_model  # noqa: E402

MODEL = default_model()
warm_up(MODEL)          # before tonpy loads (see node.worker.engines.warm_up)

from node.link import frames as F  # noqa: E402
from tests.procs import COCOON, Procs, free_port, http_ready  # noqa: E402
from tests.worker import world as W  # noqa: E402
from tests.worker.peer import Peer  # noqa: E402

THREADS = 1
PROMPT = "Write a long story about a lighthouse keeper and a storm."


def body(tokens: int) -> bytes:
    return json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": tokens, "temperature": 0, "stream": True}).encode()


def direct_round(llm, prompt: list[int], tokens: int) -> tuple[float, float, int]:
    import llama_cpp

    t0 = time.perf_counter()
    first = last = None
    n = 0
    for tok in llm.generate(prompt, top_k=1, temp=0.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        llm.detokenize([tok])
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
        if n >= tokens:
            break
    return first - t0, (n - 1) / (last - first), n


def worker_round(peer: Peer, tokens: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    jid = peer.submit("chat", body(tokens), stream=True)
    first = last = None
    n = 0
    while True:
        f = peer.next_frame(jid, timeout=300)
        if isinstance(f, F.ReceiptFrame):
            break
        if isinstance(f, F.Chunk) and f.data.get("choices") and f.data["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
    return first - t0, (n - 1) / (last - first), f.usage.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(model_path=MODEL, n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], llm._model.token_get_text(llm.token_eos()),
                              llm._model.token_get_text(llm.token_bos()))
    prompt = llm.tokenize(fmt(messages=[{"role": "user", "content": PROMPT}]).prompt.encode(), add_bos=False,
                          special=True)
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as d:
        tmp = Path(d)
        procs = Procs(tmp)
        port, mport = free_port(), free_port()
        world = W.build(tmp, MODEL, port)
        peer = Peer(world, port).start()
        try:
            # the worker as deployed: registry reads every 30 s (the test world's 1 s suits revocation tests;
            # on the embedded chain each read costs milliseconds of CPU that would land on first tokens)
            procs.start("worker", [COCOON, *world.worker_args(tmp / "state", port, mport, "--registry-refresh", "30")], timeout=120,
                        ready=http_ready(f"http://127.0.0.1:{mport}/health"))
            peer.wait_connected(60)
            worker_round(peer, 4)                  # warm both paths once
            direct_round(llm, prompt, 4)
            d_ttft, d_tps, w_ttft, w_tps = [], [], [], []
            counts = set()
            for _ in range(a.rounds):
                t, r, n1 = direct_round(llm, prompt, a.tokens)
                d_ttft.append(t)
                d_tps.append(r)
                t, r, n2 = worker_round(peer, a.tokens)
                w_ttft.append(t)
                w_tps.append(r)
                counts.add((n1, n2))
        finally:
            procs.stop_all()
            peer.stop()
    med = statistics.median
    res = {
        "benchmark": "worker", "model": Path(MODEL).name, "threads": THREADS, "rounds": a.rounds, "tokens": a.tokens,
        "direct_tokens_per_s": round(med(d_tps), 2), "worker_tokens_per_s": round(med(w_tps), 2),
        "tokens_per_s_ratio": round(med([w / d for w, d in zip(w_tps, d_tps)]), 4),   # paired per round
        "direct_ttft_ms_p50": round(med(d_ttft) * 1000, 2), "worker_ttft_ms_p50": round(med(w_ttft) * 1000, 2),
        "added_ttft_ms_p50": round(med([w - d for w, d in zip(w_ttft, d_ttft)]) * 1000, 2),     # paired per round
        "same_token_counts": all(n1 == n2 for n1, n2 in counts),
    }
    res["bar_tokens_per_s"] = res["tokens_per_s_ratio"] >= 0.95
    res["bar_ttft"] = res["added_ttft_ms_p50"] <= 5.0
    print(f"{'path':<10} {'tokens/s (median)':>18} {'first token ms (p50)':>22}")
    print(f"{'direct':<10} {res['direct_tokens_per_s']:>18} {res['direct_ttft_ms_p50']:>22}")
    print(f"{'worker':<10} {res['worker_tokens_per_s']:>18} {res['worker_ttft_ms_p50']:>22}")
    print(f"ratio {res['tokens_per_s_ratio']:.3f} (bar >= 0.95: {'met' if res['bar_tokens_per_s'] else 'NOT met'}), "
          f"added first-token time {res['added_ttft_ms_p50']} ms (bar <= 5: {'met' if res['bar_ttft'] else 'NOT met'})")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
