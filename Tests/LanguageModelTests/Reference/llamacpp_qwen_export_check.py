#!/usr/bin/env python3
"""llama.cpp runs what `conclave-client quantize` writes for Qwen2 and Qwen3 (issue 16): the tiny Qwen2 (q/k/v biases, tied
embedding) and Qwen3 (q/k head norms, head_dim 32 with hidden / heads = 16, untied) of Tests/Fixtures/tiny-qwen2 and
tiny-qwen3 with their PEFT adapters merged, written as F32, Q8_0 and our Q4_K_M mix, loaded by llama.cpp
(llama-cpp-python 0.3.36) as `qwen2` / `qwen3` models. Per file it compares llama.cpp's per-example losses with ours
(`conclave-client eval --json` on the same file) and, for F32, llama.cpp's logits with transformers + PEFT's float64
lora_logits in the fixture. A control copy must be far off, so the comparison can fail: Qwen2's biases zeroed, Qwen3's
q/k head norms set to 1 (the parts the Qwen export adds to Llama's).

The fixtures have no tokenizer, which llama.cpp requires, so each file is copied with `tokenizer.ggml.model = none`
added (nothing else changes). The KV cache is F32 (F16 by default moves these logits by about 2e-3).

Tolerances (those of the Phi-3 check, llamacpp_phi3_export_check.py): F32, logits within 1e-4 of transformers and
losses within 1e-5 of ours (both float32 throughout); Q8_0 and our Q4_K_M mix (on these 64-value rows: Q5_0, with
attn_v/ffn_down on the last layer in Q8_0), losses within 0.02 of ours at our default int8 activations (llama.cpp
also multiplies quantized weights by 8-bit activations, with its own rounding; the tolerance is the int8 one
QwenReferenceTests uses).

    swift build -c release --product conclave-client
    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:/work/tools/llama.cpp/gguf-py \
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \
    python3 Tests/LanguageModelTests/Reference/llamacpp_qwen_export_check.py [path/to/conclave-client]
"""
import json
import os
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
F32_LOGITS, F32_LOSS, Q8_LOSS, CONTROL_LOGITS = 1e-4, 1e-5, 0.02, 0.1


def control_data(name, data):
    """The control's edit: biases to zero (Qwen2), q/k head norms to one (Qwen3); other tensors unchanged."""
    if name.endswith(".bias"):
        return np.zeros_like(data)
    if name.endswith("attn_q_norm.weight") or name.endswith("attn_k_norm.weight"):
        return np.ones_like(data)
    return data


def copy_for_llama_cpp(source, target, control=False):
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, architecture)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, field.contents())
        else:
            writer.add_key_value(field.name, field.contents(), kind)
    writer.add_string("tokenizer.ggml.model", "none")
    for tensor in reader.tensors:
        data = tensor.data
        if control:
            data = control_data(tensor.name, data)
        # data is (rows, bytes per row) for a quantized tensor, (rows, columns) for F32: gguf-py reads either.
        writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return architecture


def llama_cpp_run(path, reference):
    model = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, type_k=0, type_v=0,
                            flash_attn=False, verbose=False)
    logits, losses = [], []
    for ids, labels in zip(reference["input_ids"], reference["labels"]):
        model.reset()
        model.eval(ids)
        rows = np.array(model.scores[:len(ids)], dtype=np.float64)
        logits.append(rows)
        counted = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
        shifted = rows[counted] - rows[counted].max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses.append(float(-np.mean([log_probs[i, labels[t + 1]] for i, t in enumerate(counted)])))
    return np.stack(logits), np.array(losses)


def our_losses(client, path, data, precision):
    out = subprocess.run([client, "eval", "--model", path, "--data", data, "--precision", precision, "--threads", "1",
                          "--json"], check=True, capture_output=True, text=True).stdout
    return np.array([example["loss"] for example in json.loads(out)["per_example"]])


def check(client, family, folder, failures):
    fixture = os.path.join(FIXTURES, f"tiny-{family}")
    reference = json.load(open(os.path.join(fixture, "reference.json")))
    expected = load_file(os.path.join(fixture, "reference.safetensors"))["lora_logits"]
    data = os.path.join(folder, f"{family}-examples.jsonl")
    with open(data, "w") as f:
        for ids, labels in zip(reference["input_ids"], reference["labels"]):
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    for kind in ("f32", "q8_0", "q4_k_m"):
        exported = os.path.join(folder, f"{family}-merged-{kind}.gguf")
        subprocess.run([client, "quantize", "--model", fixture, "--adapter", os.path.join(fixture, "peft-adapter"),
                        "--type", kind, "--out", exported], check=True, capture_output=True)
        runnable = os.path.join(folder, f"{family}-{kind}.gguf")
        control = os.path.join(folder, f"{family}-{kind}-control.gguf")
        architecture = copy_for_llama_cpp(exported, runnable)
        copy_for_llama_cpp(exported, control, control=True)
        logits, losses = llama_cpp_run(runnable, reference)
        control_logits, _ = llama_cpp_run(control, reference)
        ours = our_losses(client, exported, data, "float32" if kind == "f32" else "int8")
        logit_gap = float(np.abs(logits - expected).max())
        loss_gap = float(np.abs(losses - ours).max())
        control_gap = float(np.abs(control_logits - expected).max())
        what = "biases zeroed" if family == "qwen2" else "head norms set to 1"
        print(f"{family} {kind} ({architecture}): llama.cpp vs transformers+PEFT float64 worst logit difference "
              f"{logit_gap:.3g}; llama.cpp vs our losses worst difference {loss_gap:.3g} (ours {np.round(ours, 6).tolist()}, "
              f"llama.cpp {np.round(losses, 6).tolist()}); control ({what}) {control_gap:.3g}")
        if architecture != family:
            failures.append(f"{family} {kind}: architecture {architecture}")
        if kind == "f32" and not (logit_gap <= F32_LOGITS and loss_gap <= F32_LOSS):
            failures.append(f"{family} f32: logits {logit_gap} > {F32_LOGITS} or losses {loss_gap} > {F32_LOSS}")
        if kind != "f32" and not loss_gap <= Q8_LOSS:
            failures.append(f"{family} {kind}: losses {loss_gap} > {Q8_LOSS}")
        if not control_gap > CONTROL_LOGITS:
            failures.append(f"{family} {kind}: the control is not far off ({control_gap})")


def main():
    client = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release", "conclave-client")
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        for family in ("qwen2", "qwen3"):
            check(client, family, folder, failures)
    if failures:
        sys.exit("; ".join(failures))
    print("llama.cpp runs the exported Qwen2 and Qwen3 files as we do")


if __name__ == "__main__":
    main()
