#!/usr/bin/env python3
"""HF transformers `generate` on the offline workload of `bun run bench`: the baseline a plain PyTorch user has.

Same workload as bench/offline.ts, token for token (nano-vllm's bench.py): random.seed(seed); per request
randint(MIN_IN, MAX_IN) prompt ids, each randint(0, 10000); then per request max_tokens = randint(MIN_OUT,
MAX_OUT); temperature 0.6, no top-k/top-p, ignore EOS.

How the requests are batched (HF generate gives every row of a batch the same number of new tokens and
cannot stop rows individually without EOS):
  * requests are sorted by output length and cut into batches of --batch-size (sorting keeps the lengths in
    a batch close, which favours HF);
  * each batch is one generate() call with left padding, max_new_tokens = min_new_tokens = the longest
    output length in the batch (min_new_tokens makes EOS impossible, i.e. ignore_eos);
  * output throughput counts only the tokens the requests asked for (sum of their max_tokens, as in our
    bench), divided by the wall time of all batches; the surplus tokens that shorter rows were forced to
    generate are reported separately as "generated_tokens".
Weights: a model directory with safetensors, or --dummy-weight: random init from config.json via
AutoModelForCausalLM.from_config directly on the GPU in bf16 (torch.manual_seed(seed)).

    python3 bench/hf_baseline.py --model ../shared/model-configs/Qwen3-0.6B --dummy-weight --json
    python3 bench/hf_baseline.py --dry-run            # the workload and batch plan only (no torch needed)

Prints the JSON shape of `bun run bench --json` (engine "hf-transformers"); --record FILE appends it.
"""
import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time


def parse_range(text: str) -> tuple:
    lo, _, hi = text.partition(",")
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def workload(num_seqs: int, input_len: tuple, output_len: tuple, seed: int):
    """nano-vllm's bench.py, draw for draw (bench/offline_workload.ts is its TypeScript twin)."""
    random.seed(seed)
    prompts = [[random.randint(0, 10000) for _ in range(random.randint(*input_len))] for _ in range(num_seqs)]
    output_lens = [random.randint(*output_len) for _ in range(num_seqs)]
    return prompts, output_lens


def batch_plan(output_lens: list, batch_size: int) -> list:
    """Request indices per generate() call: sorted by output length, chunks of batch_size."""
    order = sorted(range(len(output_lens)), key=lambda i: output_lens[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown GPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (config.json; safetensors unless --dummy-weight)")
    ap.add_argument("--dummy-weight", action="store_true", help="random weights from config.json alone")
    ap.add_argument("--num-seqs", type=int, default=256)
    ap.add_argument("--input-len", type=parse_range, default=(100, 1024))
    ap.add_argument("--output-len", type=parse_range, default=(100, 1024))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--batch-size", type=int, default=64, help="requests per generate() call")
    ap.add_argument("--dry-run", action="store_true", help="print the workload totals and batch plan, load nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the summary goes to stderr)")
    ap.add_argument("--record", help="append the JSON result to this JSON-lines file")
    args = ap.parse_args()

    prompts, output_lens = workload(args.num_seqs, args.input_len, args.output_len, args.seed)
    plan = batch_plan(output_lens, args.batch_size)
    input_tokens, output_tokens = sum(map(len, prompts)), sum(output_lens)
    generated_tokens = sum(len(b) * max(output_lens[i] for i in b) for b in plan)
    if args.dry_run:
        print(json.dumps({"num_requests": len(prompts), "input_tokens": input_tokens, "output_tokens": output_tokens,
                          "generated_tokens": generated_tokens, "batches": len(plan), "first_prompt_ids": prompts[0][:5],
                          "first_output_lens": output_lens[:5]}))
        return
    if not args.model:
        ap.error("--model is required")

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.dummy_weight:
        config = AutoConfig.from_pretrained(args.model)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    startup = time.perf_counter() - t0
    pad_id = 0  # any id: padded positions are masked out

    def generate(rows: list, new_tokens: int) -> int:
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(), do_sample=True, temperature=args.temperature,
                             top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_id)
        return (out.shape[1] - width) * len(rows)

    with torch.inference_mode():
        generate([0], 4)  # warm-up, not timed
        torch.cuda.synchronize()
        started = time.perf_counter()
        produced = sum(generate(b, max(output_lens[i] for i in b)) for b in plan)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    if produced != generated_tokens:
        sys.exit(f"generate produced {produced} tokens, the plan expected {generated_tokens}")

    hardware = gpu_name()
    row = {
        "bench": "offline", "engine": "hf-transformers", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "hardware": hardware, "device": "cuda", "command": "python3 " + " ".join(sys.argv).replace(f" --record {args.record}", ""),
        "load_avg_1m": round(os.getloadavg()[0], 2), "gpu": hardware, "model": args.model,
        "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__,
        "dummy_weight": args.dummy_weight, "overlap": None, "num_requests": len(prompts), "input_tokens": input_tokens,
        "output_tokens": output_tokens, "generated_tokens": produced, "duration_s": seconds,
        "output_throughput": output_tokens / seconds, "total_throughput": (input_tokens + output_tokens) / seconds,
        "request_throughput": len(prompts) / seconds, "roofline_output_throughput": None, "startup_s": startup,
        "config": {"num_seqs": args.num_seqs, "input_len": list(args.input_len), "output_len": list(args.output_len), "seed": args.seed,
                   "temperature": args.temperature, "batch_size": args.batch_size, "batches": len(plan),
                   "transformers": transformers.__version__, "torch": torch.__version__},
    }
    say(f"HF transformers {transformers.__version__} generate on {hardware}: {len(prompts)} requests in {len(plan)} batches of "
        f"≤ {args.batch_size}, {input_tokens} input + {output_tokens} requested output tokens ({produced} generated) in {seconds:.2f} s")
    say(f"output throughput: {row['output_throughput']:.1f} tok/s   total throughput: {row['total_throughput']:.1f} tok/s")
    if args.json:
        print(json.dumps(row))
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
