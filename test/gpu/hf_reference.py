"""transformers' outputs for a checkpoint the GPU model test wrote (run by test/gpu/model.test.ts).

    python3 test/gpu/hf_reference.py MODEL_DIR PROMPTS_JSON OUT_JSON STEPS

Loads the bf16 checkpoint, upcasts to float32 on the GPU (no TF32, eager attention) and writes, per prompt,
the full last-position logits (as a list) and a greedy continuation of STEPS tokens with the top-2 margin of
each step.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@torch.no_grad()
def main(model_dir, prompts_path, out_path, steps):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="eager")
    model = model.float().cuda().eval()
    results = []
    for ids in json.load(open(prompts_path)):
        x = torch.tensor([ids], device="cuda")
        out = model(x, use_cache=True)
        last = out.logits[0, -1].float()
        past = out.past_key_values
        greedy, margins = [], []
        logits = last
        for _ in range(steps):
            top2 = torch.topk(logits, 2)
            token = int(top2.indices[0])
            greedy.append(token)
            margins.append(float(top2.values[0] - top2.values[1]))
            out = model(torch.tensor([[token]], device="cuda"), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
        results.append({"last_logits": last.cpu().tolist(), "greedy": greedy, "margins": margins})
    json.dump(results, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
