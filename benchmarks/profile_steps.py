"""Measure iteration latencies of decoder shapes on a CUDA GPU, in the shipped profile's format.

Needs PyTorch with CUDA (not a dependency of the simulator; run it on the GPU machine):

    python benchmarks/profile_steps.py --shapes llama-3-8b llama-3-70b-slice8 --out DIR

Method, as in the README of the shared profile ``h200_llama3-8b_bf16.csv``: random bf16
weights; fused QKV and gate/up projections, RMSNorm, RoPE, ``scaled_dot_product_attention``;
every step captured in a CUDA graph and replayed; times from CUDA events, median of 20 replays
after 3 warm-up replays (p10 and p90 too). Phases: ``prefill`` (one sequence of `tokens`,
causal, logits for the last token), ``decode`` (`batch` sequences adding one token to a KV
cache of `context`, logits for all), ``dense`` (`tokens` tokens through each layer's fused QKV
projection, output dropped, and gated MLP, no attention and no output projection; LM head for
the last token). Writes one CSV per shape and ``ceilings.txt`` (bf16 8192^3 matmul TFLOP/s,
2 GiB device copy TB/s counting read and write).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# name: (layers, layers_built, hidden, heads, kv_heads, head_dim, ffn, vocab), from each
# model's config.json on Hugging Face (meta-llama/Meta-Llama-3-8B, Meta-Llama-3-70B,
# Llama-3.2-1B); the 70B runs 8 of its 80 layers.
SHAPES = {
    "llama-3-8b": (32, 32, 4096, 32, 8, 128, 14336, 128256),
    "llama-3-8b-check": (32, 32, 4096, 32, 8, 128, 14336, 128256),
    "llama-3-70b-slice8": (80, 8, 8192, 64, 8, 128, 28672, 128256),
    "llama-3.2-1b": (16, 16, 2048, 32, 8, 64, 8192, 128256),
}
PREFILL = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
DENSE = [1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
DECODE = {
    128: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    512: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    2048: [1, 2, 4, 8, 16, 32, 64, 128],
    8192: [1, 2, 4, 8, 16, 32],
}
# a subset of the shipped grid, to check that this script reproduces the shipped profile
CHECK = [
    ("prefill", 1, 128, 0),
    ("prefill", 1, 1024, 0),
    ("prefill", 1, 8192, 0),
    ("dense", 1, 1, 0),
    ("dense", 128, 128, 0),
    ("dense", 2048, 2048, 0),
    ("decode", 1, 1, 128),
    ("decode", 64, 64, 128),
    ("decode", 512, 512, 512),
    ("decode", 16, 16, 2048),
    ("decode", 128, 128, 2048),
    ("decode", 1, 1, 8192),
    ("decode", 32, 32, 8192),
]
DEV = "cuda"
DT = torch.bfloat16


class Model:
    """Random-weight decoder of one shape (only `layers_built` layers)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        _, built, hidden, heads, kv_heads, head_dim, ffn, vocab = shape
        self.hidden, self.heads, self.kv_heads, self.head_dim = hidden, heads, kv_heads, head_dim
        self.built = built

        def w(n: int, k: int) -> torch.Tensor:
            return torch.randn(n, k, device=DEV, dtype=DT) * (k**-0.5)

        qkv = (heads + 2 * kv_heads) * head_dim
        self.layers = [
            {
                "qkv": w(qkv, hidden),
                "o": w(hidden, heads * head_dim),
                "gu": w(2 * ffn, hidden),
                "down": w(hidden, ffn),
                "n1": torch.ones(hidden, device=DEV, dtype=DT),
                "n2": torch.ones(hidden, device=DEV, dtype=DT),
            }
            for _ in range(built)
        ]
        self.norm = torch.ones(hidden, device=DEV, dtype=DT)
        self.head = w(vocab, hidden)
        inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=DEV).float() / head_dim))
        pos = torch.arange(32768, device=DEV).float()
        freqs = torch.outer(pos, inv)
        self.cos = torch.cat([freqs.cos(), freqs.cos()], -1).to(DT)
        self.sin = torch.cat([freqs.sin(), freqs.sin()], -1).to(DT)

    def rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: [B, h, T, d]; pos: [T] positions."""
        cos, sin = self.cos[pos], self.sin[pos]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def mlp(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        g, u = (F.rms_norm(x, (self.hidden,), p["n2"]) @ p["gu"].T).chunk(2, -1)
        return x + (F.silu(g) * u) @ p["down"].T

    def qkv(self, x: torch.Tensor, p: dict, pos: torch.Tensor):
        b, t, _ = x.shape
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        out = F.rms_norm(x, (self.hidden,), p["n1"]) @ p["qkv"].T
        q, k, v = out.split([h * d, kv * d, kv * d], -1)
        q = self.rope(q.view(b, t, h, d).transpose(1, 2), pos)
        k = self.rope(k.view(b, t, kv, d).transpose(1, 2), pos)
        return q, k, v.view(b, t, kv, d).transpose(1, 2)

    def attend_out(self, x, q, k, v, p, causal: bool) -> torch.Tensor:
        b, _, t, _ = q.shape
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        return x + a.transpose(1, 2).reshape(b, t, -1) @ p["o"].T

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden,), self.norm) @ self.head.T


def prefill_step(m: Model, batch: int, tokens: int, context: int):
    x0 = torch.randn(batch, tokens, m.hidden, device=DEV, dtype=DT)
    pos = torch.arange(tokens, device=DEV)
    caches = [
        torch.zeros(2, batch, m.kv_heads, tokens, m.head_dim, device=DEV, dtype=DT)
        for _ in range(m.built)
    ]

    def step():
        x = x0
        for p, cache in zip(m.layers, caches, strict=True):
            q, k, v = m.qkv(x, p, pos)
            cache[0].copy_(k)
            cache[1].copy_(v)
            x = m.mlp(m.attend_out(x, q, k, v, p, causal=True), p)
        return m.logits(x[:, -1])

    return step


def decode_step(m: Model, batch: int, tokens: int, context: int):
    x0 = torch.randn(batch, 1, m.hidden, device=DEV, dtype=DT)
    pos = torch.tensor([context], device=DEV)
    caches = [
        torch.randn(2, batch, m.kv_heads, context + 1, m.head_dim, device=DEV, dtype=DT)
        for _ in range(m.built)
    ]

    def step():
        x = x0
        for p, cache in zip(m.layers, caches, strict=True):
            q, k, v = m.qkv(x, p, pos)
            cache[0, :, :, context : context + 1].copy_(k)
            cache[1, :, :, context : context + 1].copy_(v)
            x = m.mlp(m.attend_out(x, q, cache[0], cache[1], p, causal=False), p)
        return m.logits(x)

    return step


def dense_step(m: Model, batch: int, tokens: int, context: int):
    x0 = torch.randn(1, tokens, m.hidden, device=DEV, dtype=DT)

    def step():
        x = x0
        for p in m.layers:
            F.rms_norm(x, (m.hidden,), p["n1"]) @ p["qkv"].T  # output dropped, as profiled
            x = m.mlp(x, p)
        return m.logits(x[:, -1])

    return step


STEPS = {"prefill": prefill_step, "decode": decode_step, "dense": dense_step}


def time_graph(step, warmup: int = 3, reps: int = 20) -> list[float]:
    """Milliseconds of `reps` CUDA-graph replays of `step`."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(warmup):
        graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return times


def grid(name: str) -> list[tuple[str, int, int, int]]:
    if name == "llama-3-8b-check":
        return CHECK
    points = [("prefill", 1, t, 0) for t in PREFILL]
    points += [("dense", t, t, 0) for t in DENSE]
    points += [("decode", b, b, c) for c, batches in DECODE.items() for b in batches]
    return points


def ceilings(out: Path) -> None:
    a = torch.randn(8192, 8192, device=DEV, dtype=DT)
    b = torch.randn(8192, 8192, device=DEV, dtype=DT)
    ms = statistics.median(time_graph(lambda: a @ b, reps=10))
    src = torch.empty(2**30, device=DEV, dtype=torch.int16)
    dst = torch.empty_like(src)
    copy_ms = statistics.median(time_graph(lambda: dst.copy_(src), reps=10))
    w = torch.randn(65536, 65536, device=DEV, dtype=DT)  # 8 GiB of weights
    x = torch.randn(1, 65536, device=DEV, dtype=DT)
    gemv_ms = statistics.median(time_graph(lambda: x @ w.T, reps=10))
    text = (
        f"device {torch.cuda.get_device_name()} torch {torch.__version__}\n"
        f"bf16 8192^3 matmul {2 * 8192**3 / ms / 1e9:.0f} TFLOP/s\n"
        f"2 GiB device copy {2 * 2**31 / copy_ms / 1e9:.2f} TB/s (read + write)\n"
        f"8 GiB bf16 weight read by a 1-row GEMM {2 * 65536**2 / gemv_ms / 1e9:.2f} TB/s\n"
    )
    (out / "ceilings.txt").write_text(text)
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--gpu", default="h200", help="gpu column written to the CSVs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    ceilings(out)
    columns = "model,layers,layers_built,hidden,heads,kv_heads,head_dim,ffn,vocab,dtype".split(",")
    columns += "gpu,phase,batch,tokens,context,ms_median,ms_p10,ms_p90,reps".split(",")
    for name in args.shapes:
        shape = SHAPES[name]
        model = Model(shape)
        path = out / f"{args.gpu}_{name}_bf16.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for phase, batch, tokens, context in grid(name):
                t0 = time.time()
                try:
                    with torch.no_grad():
                        times = time_graph(STEPS[phase](model, batch, tokens, context))
                except Exception as exc:  # report and go on: one failed point loses no others
                    print(f"{name} {phase} {batch} {tokens} {context}: FAILED {exc!r}", flush=True)
                    torch.cuda.empty_cache()
                    continue
                q = statistics.quantiles(times, n=10)
                row = [name, *shape, "bfloat16", args.gpu, phase, batch, tokens, context]
                stats = [statistics.median(times), q[0], q[-1]]
                row += [f"{v:.4f}" for v in stats] + [len(times)]
                writer.writerow(row)
                f.flush()
                print(",".join(map(str, row)), f"({time.time() - t0:.1f} s)", flush=True)
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
