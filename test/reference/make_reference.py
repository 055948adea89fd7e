"""Reference outputs of the tiny test models from HF transformers (run on the GPU machine, which has it).

    bun run fixtures && python3 test/reference/make_reference.py

Loads each tiny checkpoint under test/fixtures/ in bfloat16, upcasts to float32 and runs it on the CPU in
float32 (no TF32), then writes, per model, test/reference/<model>.json (prompt ids, top-k at every
position, a greedy 32-token continuation with the top-2 margin of each step, the checkpoint's sha256) and
test/reference/<model>.last_logits.f32 (full-vocabulary logits at the last prompt position, prompts back
to back, little-endian float32). Also renders the chat-template cases with transformers into
test/reference/chat_template.json.
"""
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
MODELS = ["tiny-qwen3", "tiny-llama", "tiny-qwen2"]
TOP_K = 5
GREEDY_STEPS = 32


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


@torch.no_grad()
def reference_for(name, prompts):
    model_dir = os.path.join(FIXTURES, name)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="eager")
    model = model.float().eval()
    out = {"model": name, "safetensors_sha256": sha256(os.path.join(model_dir, "model.safetensors")),
           "transformers": transformers.__version__, "torch": torch.__version__, "top_k": TOP_K, "prompts": []}
    last_logits = []
    for text in prompts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0].float()  # [T, V]
        top = torch.topk(logits, TOP_K, dim=-1)
        last_logits.append(logits[-1].contiguous())
        seq = list(ids)
        greedy, margins = [], []
        for _ in range(GREEDY_STEPS):
            step = model(torch.tensor([seq])).logits[0, -1].float()
            t2 = torch.topk(step, 2)
            greedy.append(int(t2.indices[0]))
            margins.append(float(t2.values[0] - t2.values[1]))
            seq.append(int(t2.indices[0]))
        last = logits[-1]
        out["prompts"].append({
            "text": text,
            "ids": ids,
            "topk_ids": top.indices.tolist(),
            "topk_values": top.values.tolist(),
            "last_logit_min": float(last.min()), "last_logit_max": float(last.max()),
            "last_logit_std": float(last.std()),
            "greedy": greedy,
            "greedy_margins": margins,
        })
        print(f"{name}: {len(ids)} tokens, last-logit range [{float(last.min()):.2f}, {float(last.max()):.2f}], "
              f"std {float(last.std()):.2f}, min greedy margin {min(margins):.4f}")
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(out, f)
    torch.stack(last_logits).numpy().astype("<f4").tofile(os.path.join(HERE, f"{name}.last_logits.f32"))


def chat_templates():
    tok = AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "tiny-qwen3"))
    with open(os.path.join(HERE, "chat_template_cases.json")) as f:
        cases = json.load(f)
    cases = cases["cases"] if isinstance(cases, dict) else cases
    for case in cases:
        case["rendered"] = tok.apply_chat_template(case["messages"], tokenize=False,
                                                   add_generation_prompt=case.get("add_generation_prompt", False),
                                                   **(case.get("kwargs") or {}))
    with open(os.path.join(HERE, "chat_template.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": cases}, f, indent=1, ensure_ascii=False)


def main():
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    with open(os.path.join(HERE, "prompts.json")) as f:
        prompts = json.load(f)["prompts"]
    for name in MODELS:
        reference_for(name, prompts)
    chat_templates()
    print("transformers", transformers.__version__, "torch", torch.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()
