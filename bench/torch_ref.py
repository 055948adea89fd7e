#!/usr/bin/env python3
"""PyTorch's kernels at the shapes of `bun run bench:kernels`, timed with CUDA events on the GPU.

The case list comes from our benchmark, so both sides time the same shapes:

    bun run bench:kernels --device cuda --print-cases > /tmp/cases.json
    python3 bench/torch_ref.py --cases /tmp/cases.json --out /tmp/torch.json
    bun run bench:kernels --device cuda --torch-json /tmp/torch.json

What each op is compared with:
  rmsnorm            torch.nn.functional.rms_norm (bf16)
  gemm               torch.nn.functional.linear in bf16 (cuBLAS / cuBLASLt); the LM head's fp32 logits with
                     torch.mm(..., out_dtype=torch.float32) where this torch has it, else linear + .float()
  attention_decode   SDPA on contiguous KV [B, kv_heads, L, D], backends FLASH_ATTENTION and CUDNN_ATTENTION
                     (torch.nn.attention.sdpa_kernel). GQA decode is run as attention of a group's g query
                     heads as g query rows over their KV head (q [B, kv_heads, g, D], not causal): the same
                     math, and every KV byte is read once, as our kernel reads it.
  attention_prefill  SDPA causal, q [1, q_heads, S, D], k/v [1, kv_heads, S, D] with enable_gqa=True, backends
                     FLASH_ATTENTION and CUDNN_ATTENTION; where a backend refuses GQA, K/V are expanded to
                     q_heads before timing (impl name ends in "+kv_expanded").
  argmax             torch.argmax over fp32 logits
  sample             sort-based: softmax(logits / T) → torch.sort → top-k mask → cumsum top-p mask →
                     torch.multinomial → gather (the path of HF / vLLM's torch fallback)

Timing: each op is captured `reps` times in a CUDA graph (so Python launch overhead does not count) and the
graph replayed between two CUDA events; eager launches when capture fails (field "graph": false). The
median of --trials replays, divided by reps, is the op's time in microseconds.
"""
import argparse
import json
import statistics
import sys


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True, help="JSON from `bun run bench:kernels --print-cases`")
    ap.add_argument("--out", help="write the results here (default: stdout)")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--filter", default="", help="only cases whose name contains this")
    args = ap.parse_args()

    import torch  # imported here so --help works without torch

    if not torch.cuda.is_available():
        sys.exit("torch_ref.py needs a CUDA GPU")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    dev = torch.device("cuda")
    bf16 = torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, dtype=bf16, std=1.0):
        return (torch.randn(*shape, device=dev, generator=gen, dtype=torch.float32) * std).to(dtype)

    def time_us(fn):
        """Median µs per call of fn over args.trials replays; (us, graph_used)."""
        torch.cuda.synchronize()
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        torch.cuda.synchronize()
        reps = max(1, min(200, int(200 / max(t0.elapsed_time(t1) * 1000, 1e-3)) + 1))
        run = None
        graph_used = False
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(reps):
                    fn()
            run = g.replay
            graph_used = True
        except Exception:  # capture not supported for this op: eager launches
            torch.cuda.synchronize()

            def run():
                for _ in range(reps):
                    fn()
        run()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.trials):
            t0.record()
            run()
            t1.record()
            torch.cuda.synchronize()
            times.append(t0.elapsed_time(t1) * 1000 / reps)
        return statistics.median(times), graph_used

    def rmsnorm(s):
        x, w = randn(s["rows"], s["dim"]), randn(s["dim"])
        yield "F.rms_norm", lambda: F.rms_norm(x, (s["dim"],), w, 1e-6)

    def gemm(s):
        m, n, k = s["m"], s["n"], s["k"]
        x, w = randn(m, k), randn(n, k, std=k ** -0.5)
        if not s["out_f32"]:
            yield "cublas", lambda: F.linear(x, w)
            return
        try:
            torch.mm(x[:1], w.t()[:, :1], out_dtype=torch.float32)
            wt = w.t()
            yield "cublas(out fp32)", lambda: torch.mm(x, wt, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            yield "cublas+cast", lambda: F.linear(x, w).float()

    sdpa_backends = [("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)]

    def attention_decode(s):
        b, l, qh, kvh, d = s["batch"], s["context"], s["q_heads"], s["kv_heads"], s["head_dim"]
        q = randn(b, kvh, qh // kvh, d)
        k, v = randn(b, kvh, l, d), randn(b, kvh, l, d)
        for name, backend in sdpa_backends:
            def fn(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v)
            yield name, fn

    def attention_prefill(s):
        n, qh, kvh, d = s["seq"], s["q_heads"], s["kv_heads"], s["head_dim"]
        q = randn(1, qh, n, d)
        k, v = randn(1, kvh, n, d), randn(1, kvh, n, d)
        for name, backend in sdpa_backends:
            def gqa(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            try:
                gqa()
                yield name, gqa
            except RuntimeError:
                ke, ve = k.repeat_interleave(qh // kvh, dim=1), v.repeat_interleave(qh // kvh, dim=1)

                def expanded(backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                yield name + "+kv_expanded", expanded

    def logits_for(s):
        return randn(s["batch"], s["vocab"], dtype=torch.float32, std=4.0)

    def argmax(s):
        x = logits_for(s)
        yield "torch.argmax", lambda: torch.argmax(x, dim=-1)

    def sample(s):
        x = logits_for(s)
        t, top_k, top_p = s["temperature"], int(s["top_k"]), s["top_p"]

        def fn():
            probs = torch.softmax(x / t, dim=-1)
            sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
            if top_k > 0:
                sorted_p[:, top_k:] = 0
            cum = torch.cumsum(sorted_p, dim=-1)
            # keep the shortest prefix whose mass reaches top_p of what top-k kept
            sorted_p = sorted_p.masked_fill(cum - sorted_p >= top_p * cum[:, -1:], 0)
            return idx.gather(-1, torch.multinomial(sorted_p, 1))
        yield "sort_topk_topp", fn

    impls = {"rmsnorm": rmsnorm, "gemm": gemm, "attention_decode": attention_decode,
             "attention_prefill": attention_prefill, "argmax": argmax, "sample": sample}

    with open(args.cases) as f:
        cases = json.load(f)["cases"]
    results = []
    for case in cases:
        if args.filter not in case["name"] or case.get("torchCase"):  # a kernel variant of ours: its base case has the torch time
            continue
        rows = []
        try:
            for impl, fn in impls[case["op"]](case["shape"]):
                try:
                    us, graph = time_us(fn)
                    rows.append({"name": case["name"], "impl": impl, "us": us, "graph": graph})
                except Exception as e:  # a backend that refuses this shape
                    rows.append({"name": case["name"], "impl": impl, "us": None, "error": first_line(e)})
        except Exception as e:
            rows.append({"name": case["name"], "impl": case["op"], "us": None, "error": first_line(e)})
        for r in rows:
            shown = "error: " + r["error"] if r["us"] is None else "%.1f us" % r["us"]
            print("%-42s %-22s %s" % (r["name"], r["impl"], shown), file=sys.stderr)
        results.extend(rows)
        torch.cuda.empty_cache()

    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda, "results": results}
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
