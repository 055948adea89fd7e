"""Trains minisgl's embedded default model (models/default) from scratch, on the GPU machine.

    python3 scripts/default_model/train.py --data build/default_model_data --out $OUT/model [--max-minutes 7.5]
    python3 scripts/default_model/train.py --data build/default_model_data --out $OUT/smoke --smoke
    python3 scripts/default_model/train.py --data build/default_model_data --verify models/default

The data comes from prepare_data.sh ({train,val}.txt[.xz]: documents separated by "<|endoftext|>" lines, some
already rendered with the chat template). Steps: a byte-level BPE tokenizer with HF tokenizers; a Qwen3 model
built by transformers from a config (tied embeddings); AdamW in bf16 autocast with a cosine schedule, residual
dropout and a fixed seed for a fixed number of steps (a wall-clock cap stops it early and says so); the
validation loss (mean token cross-entropy over a fixed set of held-out windows) of the exported bf16 weights;
and six files in --out: model.safetensors, config.json, generation_config.json, tokenizer.json,
tokenizer_config.json, train_log.json. --verify DIR recomputes the validation loss of a shipped model and
compares it with its train_log.json.
"""
import argparse
import hashlib
import json
import lzma
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chats import CHAT_TEMPLATE  # noqa: E402

EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIALS = [EOT, IM_START, IM_END]  # ids 0, 1, 2
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer split

MODEL = {"vocab_size": 8192, "hidden_size": 384, "intermediate_size": 896, "num_hidden_layers": 6,
         "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 1024,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "rope_theta": 10000.0}
RECIPE = {"seed": 1234, "steps": 6000, "batch": 32, "seq_len": 1024, "lr": 1.5e-3, "min_lr": 1.5e-4,
          "warmup": 200, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "dropout": 0.1,
          "eval_every": 500, "val_windows": 256, "log_every": 100, "measure": [10, 40]}
SMOKE = {"steps": 30, "warmup": 5, "eval_every": 15, "val_windows": 8, "log_every": 5, "measure": [5, 25]}
GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}


def read_docs(data_dir, split):
    """The documents of train or val, from {split}.txt.xz or {split}.txt, and the sha256 of that file."""
    for name in (f"{split}.txt.xz", f"{split}.txt"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            raw = open(path, "rb").read()
            text = (lzma.decompress(raw) if name.endswith(".xz") else raw).decode("utf-8")
            docs = [d.strip() for d in text.split(f"\n{EOT}\n")]
            return [d for d in docs if d], hashlib.sha256(raw).hexdigest()
    sys.exit(f"{data_dir} has no {split}.txt.xz or {split}.txt: run scripts/default_model/prepare_data.sh")


def train_tokenizer(docs, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    plain = [d.replace(IM_START, "\n").replace(IM_END, "\n") for d in docs]  # merges learn from text only
    tok.train_from_iterator(plain, trainer=trainer, length=len(plain))
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2], "special tokens must be ids 0, 1, 2"
    return tok


def tokenizer_config():
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, t in enumerate(SPECIALS)}
    return {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None,
            "eos_token": IM_END, "pad_token": EOT, "unk_token": None, "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False, "errors": "replace", "model_max_length": MODEL["max_position_embeddings"],
            "split_special_tokens": False, "tokenizer_class": "PreTrainedTokenizerFast"}


def token_stream(tok, docs, device):
    """All documents back to back, each followed by <|endoftext|> (id 0), as one int64 tensor."""
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long, device=device)


def build_model(device):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    m = dict(MODEL)
    theta = m.pop("rope_theta")
    config = Qwen3Config(**m, rope_parameters={"rope_type": "default", "rope_theta": theta},
                         bos_token_id=None, eos_token_id=2, pad_token_id=0)
    return Qwen3ForCausalLM(config).to(device)


def add_residual_dropout(model, p):
    """Dropout on each attention and MLP output before it joins the residual stream (training only)."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, module.training),) + tuple(output[1:])
        return F.dropout(output, p, module.training)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def lr_at(step, r):
    if step < r["warmup"]:
        return r["lr"] * (step + 1) / r["warmup"]
    progress = (step - r["warmup"]) / max(1, r["steps"] - r["warmup"])
    return r["min_lr"] + 0.5 * (r["lr"] - r["min_lr"]) * (1 + math.cos(math.pi * min(1.0, progress)))


def autocast(device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def val_loss(model, stream, seq_len, windows, batch, device):
    """Mean token cross-entropy over the first `windows` consecutive, non-overlapping windows of the val stream."""
    was_training = model.training
    model.eval()
    n = min(windows, (len(stream) - 1) // seq_len)
    total, count = 0.0, 0
    for first in range(0, n, batch):
        starts = torch.arange(first, min(n, first + batch), device=device) * seq_len
        idx = starts[:, None] + torch.arange(seq_len + 1, device=device)[None]
        chunk = stream[idx]
        with autocast(device):
            logits = model(input_ids=chunk[:, :-1], use_cache=False).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        count += chunk[:, 1:].numel()
    model.train(was_training)
    return total / count


def train(args):
    r = dict(RECIPE, **(SMOKE if args.smoke else {}))
    if args.steps:
        r["steps"] = args.steps
    random.seed(r["seed"])
    torch.manual_seed(r["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    train_docs, train_sha = read_docs(args.data, "train")
    val_docs, val_sha = read_docs(args.data, "val")
    if args.smoke:
        train_docs = train_docs[:3000]
    tok = train_tokenizer(train_docs, MODEL["vocab_size"])
    train_ids, val_ids = token_stream(tok, train_docs, device), token_stream(tok, val_docs, device)
    chars = sum(map(len, train_docs))
    print(f"data: {len(train_docs)} train documents, {len(train_ids)} tokens ({chars / len(train_ids):.2f} chars/token); "
          f"val {len(val_ids)} tokens; tokenizer + encoding {time.time() - t0:.1f} s", flush=True)

    model = build_model(device)
    add_residual_dropout(model, r["dropout"])
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=r["lr"], betas=(r["beta1"], r["beta2"]), **({"fused": True} if device.type == "cuda" else {}))
    step_tokens = r["batch"] * r["seq_len"]
    print(f"model: Qwen3 {params / 1e6:.2f} M parameters ({2 * params / 1e6:.1f} MB in bf16); {r['steps']} steps of "
          f"{step_tokens} tokens = {r['steps'] * step_tokens / len(train_ids):.1f} epochs; device {device}", flush=True)

    gen = torch.Generator().manual_seed(r["seed"])
    offsets = torch.arange(r["seq_len"] + 1, device=device)[None]
    log, evals, done, stopped_early = [], [], 0, False
    t_train = time.time()
    t_mark = None
    model.train()
    for step in range(r["steps"]):
        if time.time() - t_train > args.max_minutes * 60:
            stopped_early = True
            print(f"wall-clock cap of {args.max_minutes} min reached at step {step}: stopping early", flush=True)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, r)
        starts = torch.randint(0, len(train_ids) - r["seq_len"] - 1, (r["batch"], 1), generator=gen).to(device)
        chunk = train_ids[starts + offsets]
        with autocast(device):
            logits = model(input_ids=chunk[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        opt.step()
        done = step + 1
        if step in r["measure"]:  # tokens/s between two steps past the first (slow) ones
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step == r["measure"][0]:
                t_mark = time.time()
            else:
                rate = (r["measure"][1] - r["measure"][0]) * step_tokens / (time.time() - t_mark)
                minutes = r["steps"] * step_tokens / rate / 60
                print(f"throughput: {rate:,.0f} tokens/s; {r['steps']} steps take about {minutes:.1f} min", flush=True)
                if minutes > args.max_minutes:
                    fit = int(args.max_minutes * 60 * rate / step_tokens * 0.95)
                    print(f"WARNING: that is over --max-minutes {args.max_minutes}: the cap will cut the cosine schedule short; "
                          f"rerun with --steps {fit} for a complete schedule", flush=True)
        if done % r["log_every"] == 0 or done == r["steps"]:
            item = {"step": done, "loss": round(loss.item(), 4), "lr": lr_at(step, r), "minutes": round((time.time() - t_train) / 60, 2)}
            log.append(item)
            print(json.dumps(item), flush=True)
        if done % r["eval_every"] == 0 and done < r["steps"]:
            v = val_loss(model, val_ids, r["seq_len"], r["val_windows"], r["batch"], device)
            evals.append({"step": done, "val_loss": round(v, 4)})
            print(f"step {done}: val loss {v:.4f}", flush=True)
    train_minutes = (time.time() - t_train) / 60

    model.to(torch.bfloat16)  # the shipped weights; the final loss is theirs (what --verify recomputes)
    final = val_loss(model, val_ids, r["seq_len"], r["val_windows"], r["batch"], device)
    print(f"final val loss (bf16 weights): {final:.4f} (perplexity {math.exp(min(final, 50)):.1f}) after {done} steps, "
          f"{train_minutes:.1f} min of training", flush=True)
    export(args.out, model, tok, {
        "recipe": r, "model": MODEL, "parameters": params, "steps_done": done, "stopped_early": stopped_early,
        "val_loss": round(final, 4), "val_perplexity": round(math.exp(min(final, 50)), 2), "val_tokens_scored": min(
            r["val_windows"], (len(val_ids) - 1) // r["seq_len"]) * r["seq_len"],
        "train_tokens": len(train_ids), "val_tokens": len(val_ids), "chars_per_token": round(chars / len(train_ids), 3),
        "data": {"train_sha256": train_sha, "val_sha256": val_sha, "sources": read_sources(args.data)},
        "train_minutes": round(train_minutes, 2), "total_minutes": round((time.time() - t0) / 60, 2),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "versions": versions(),
        "loss_curve": log, "val_curve": evals, "smoke": args.smoke,
    })


def read_sources(data_dir):
    path = os.path.join(data_dir, "sources.json")
    return json.load(open(path)) if os.path.exists(path) else None


def versions():
    import tokenizers
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def export(out, model, tok, train_log):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)  # model.safetensors (tied lm_head not stored), config.json
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    config.update({"architectures": ["Qwen3ForCausalLM"], "torch_dtype": "bfloat16"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": None, "eos_token_id": [2, 0], "pad_token_id": 0, **GENERATION}, f, indent=2)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(train_log, f, indent=1)
    files = sorted(os.listdir(out))
    print(f"wrote {out}: " + ", ".join(f"{n} ({os.path.getsize(os.path.join(out, n)) / 1e6:.2f} MB)" for n in files), flush=True)


def verify(args):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shipped = json.load(open(os.path.join(args.verify, "train_log.json")))
    r = shipped["recipe"]
    tok = Tokenizer.from_file(os.path.join(args.verify, "tokenizer.json"))
    val_docs, val_sha = read_docs(args.data, "val")
    if val_sha != shipped["data"]["val_sha256"]:
        print(f"note: val data sha256 {val_sha} differs from the shipped model's {shipped['data']['val_sha256']}")
    model = AutoModelForCausalLM.from_pretrained(args.verify, dtype=torch.bfloat16).to(device)
    loss = val_loss(model, token_stream(tok, val_docs, device), r["seq_len"], r["val_windows"], r["batch"], device)
    diff = abs(loss - shipped["val_loss"]) / shipped["val_loss"]
    print(f"val loss {loss:.4f}; train_log.json says {shipped['val_loss']:.4f}; difference {100 * diff:.2f}%")
    sys.exit(0 if diff <= 0.05 else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="build/default_model_data", help="folder with {train,val}.txt[.xz]")
    p.add_argument("--out", help="output folder (six files)")
    p.add_argument("--max-minutes", type=float, default=7.5, help="wall-clock cap on the training loop (a device command may run 10 min)")
    p.add_argument("--steps", type=int, help="override the recipe's step count")
    p.add_argument("--smoke", action="store_true", help="a few steps on a slice of the data, to check the pipeline")
    p.add_argument("--verify", metavar="DIR", help="recompute the val loss of the model in DIR")
    args = p.parse_args()
    if args.verify:
        verify(args)
    elif not args.out:
        p.error("--out is required for training")
    else:
        train(args)


if __name__ == "__main__":
    main()
