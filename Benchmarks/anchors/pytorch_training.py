#!/usr/bin/env python3
"""Training anchor: PyTorch + PEFT (and Opacus for DP) on the CPU against `conclave-client train`, on
the same model, data, LoRA shape and thread count, measured in one run; and a check that an adapter
written by `train` gives, through HF PEFT, the loss our `eval --precision float32` reports.

Setup (several GB):  python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch transformers peft opacus gguf
Run:                 /tmp/torch/bin/python Benchmarks/anchors/pytorch_training.py \
                         --model models/SmolLM2-135M-Instruct.Q4_1.gguf --client .build/release/conclave-client

The model is the GGUF that Conclave uses; transformers dequantizes it to float32 (gguf_file=...), which
is what a PyTorch user would train. Data: synthetic clinic notes from `conclave-client synth`, cut to
128 tokens, as pre-tokenized records so both sides see identical token ids. Workload: LoRA r=8,
alpha=16 on q,k,v,o; batch 8 × 128 tokens; AdamW; 2 threads. Tokens/s counts tokens passed forward and
backward. Peak RSS is each process's own (the PyTorch figure includes the Python interpreter).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def load_model(gguf_path):
    from transformers import AutoModelForCausalLM
    import torch
    directory, name = os.path.split(os.path.abspath(gguf_path))
    return AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)


def prepare_data(client, gguf_path, out_path, records, length):
    """Synthetic notes, tokenized by our tokenizer (`tokenize --json`), cut to `length` tokens."""
    with tempfile.TemporaryDirectory() as tmp:
        notes = os.path.join(tmp, "notes.jsonl")
        subprocess.run([client, "synth", "--kind", "clinic-notes", "--specialty", "cardiology", "--records", str(records),
                        "--seed", "11", "--out", notes, "--held-out", "0"], check=True, capture_output=True)
        with open(notes) as f, open(out_path, "w") as out:
            for line in f:
                text = json.loads(line)["text"]
                ids = json.loads(subprocess.run([client, "tokenize", "--model", gguf_path, "--text", text, "--json"],
                                                check=True, capture_output=True, text=True).stdout)["ids"]
                if len(ids) >= length:
                    out.write(json.dumps({"input_ids": ids[:length]}) + "\n")


def torch_measure(gguf_path, data_path, steps, batch, threads, dp):
    """Runs in its own process; returns tokens/s (median over steps after a warm-up) and peak RSS."""
    import torch
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_model(gguf_path)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    model.train()
    rows = [json.loads(line)["input_ids"] for line in open(data_path)]
    data = torch.tensor(rows, dtype=torch.long)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    if dp:
        from opacus import GradSampleModule
        model = GradSampleModule(model)  # per-sample gradients, as Opacus's PrivacyEngine uses
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        index = torch.randint(0, len(data), (batch,))
        x = data[index]
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        if dp:
            # Opacus's DP-SGD step: per-sample norms over all trainable tensors, clip to C = 1, sum, add noise.
            params = [p for p in model.parameters() if p.requires_grad]
            norms = torch.stack([p.grad_sample.reshape(batch, -1).norm(2, dim=1) for p in params], dim=1).norm(2, dim=1)
            factor = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            for p in params:
                summed = torch.einsum("i,i...->...", factor, p.grad_sample)
                p.grad = (summed + torch.normal(0, 1.0, size=summed.shape)) / batch
                p.grad_sample = None
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step > 0:
            times.append(elapsed)
    tokens = batch * data.shape[1]
    return {"tokens_per_second": tokens / statistics.median(times),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def torch_peft_loss(gguf_path, adapter_dir, eval_path):
    """Mean next-token loss over all counted tokens of `eval_path` (pre-tokenized), base + PEFT adapter."""
    import torch
    from peft import PeftModel
    model = PeftModel.from_pretrained(load_model(gguf_path), adapter_dir)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for line in open(eval_path):
            ids = torch.tensor([json.loads(line)["input_ids"]])
            logits = model(input_ids=ids).logits.double()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            target = ids[0, 1:]
            total += -logp[torch.arange(len(target)), target].sum().item()
            count += len(target)
    return total / count


def ours(client, gguf_path, data_path, steps, batch, threads, dp, out_dir):
    args = [client, "train", "--model", gguf_path, "--data", data_path, "--out", out_dir, "--steps", str(steps),
            "--batch-size", str(batch), "--threads", str(threads), "--rank", "8", "--alpha", "16", "--json"]
    if dp:
        args += ["--dp", "--noise-multiplier", "1.0", "--clip", "1.0"]
    result = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return {"tokens_per_second": result["tokens_per_second"], "peak_rss_bytes": result["peak_rss_bytes"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--client", default=".build/release/conclave-client")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--torch-measure", choices=["plain", "dp"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.torch_measure:
        print(json.dumps(torch_measure(args.model, args.data, args.steps, args.batch, args.threads,
                                       args.torch_measure == "dp")))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "bench.jsonl")
        prepare_data(args.client, args.model, data, records=64, length=args.length)
        report = {"threads": args.threads, "batch": args.batch, "length": args.length, "steps": args.steps}
        for mode in ["plain", "dp"]:
            out = subprocess.run([sys.executable, __file__, "--torch-measure", mode, "--model", args.model, "--data", data,
                                  "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"PyTorch ({mode}) failed:\n{out.stderr[-3000:]}")
            theirs = json.loads(out.stdout.strip().splitlines()[-1])
            mine = ours(args.client, args.model, data, args.steps * 2, args.batch, args.threads, mode == "dp",
                        os.path.join(tmp, f"adapter-{mode}"))
            report[mode] = {"ours": mine, "pytorch": theirs,
                            "ratio": mine["tokens_per_second"] / theirs["tokens_per_second"]}
        report["dp_over_plain_time"] = report["plain"]["ours"]["tokens_per_second"] / report["dp"]["ours"]["tokens_per_second"]

        # The adapter our DP run wrote, through HF PEFT, against our own float32 eval of it.
        adapter = os.path.join(tmp, "adapter-dp")
        evaluation = os.path.join(tmp, "eval.jsonl")
        with open(data) as f, open(evaluation, "w") as out:
            out.writelines(f.readlines()[:8])
        peft_loss = torch_peft_loss(args.model, adapter, evaluation)
        our_loss = json.loads(subprocess.run([args.client, "eval", "--model", args.model, "--adapter", adapter, "--data",
                                              evaluation, "--precision", "float32", "--json"],
                                             check=True, capture_output=True, text=True).stdout)["loss"]
        report["peft_check"] = {"peft_loss": peft_loss, "our_loss": our_loss, "difference": abs(peft_loss - our_loss)}

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"LoRA r=8 on q,k,v,o, batch {args.batch} × {args.length} tokens, {args.threads} threads")
    for mode, label in [("plain", "non-private"), ("dp", "DP-SGD (Opacus per-sample gradients)")]:
        r = report[mode]
        print(f"  {label}: ours {r['ours']['tokens_per_second']:.1f} tok/s ({r['ours']['peak_rss_bytes'] / 1e6:.0f} MB), "
              f"PyTorch {r['pytorch']['tokens_per_second']:.1f} tok/s ({r['pytorch']['peak_rss_bytes'] / 1e6:.0f} MB), "
              f"ratio {r['ratio']:.2f}")
    print(f"  our DP time / our non-private time: {report['dp_over_plain_time']:.2f}")
    c = report["peft_check"]
    print(f"  adapter through HF PEFT: loss {c['peft_loss']:.6f}, our eval {c['our_loss']:.6f}, "
          f"difference {c['difference']:.2e}")


if __name__ == "__main__":
    main()
