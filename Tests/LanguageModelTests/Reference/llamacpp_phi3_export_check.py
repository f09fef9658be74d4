#!/usr/bin/env python3
"""llama.cpp runs what `conclave-client quantize` writes for Phi-3 (issue 16): the tiny Phi-3 of Tests/Fixtures/tiny-phi3
with its PEFT adapter merged, written as F32 and as Q8_0, loaded by llama.cpp (llama-cpp-python 0.3.36) as a
`phi3` model. Per file it compares llama.cpp's per-example losses with ours (`conclave-client eval --json` on the
same file) and, for F32, llama.cpp's logits with transformers + PEFT's float64 lora_logits in the fixture.
A control copy with ffn_up's gate and up halves exchanged must be far off, so the comparison can fail.

The fixture has no tokenizer, which llama.cpp requires, so each file is copied with `tokenizer.ggml.model = none`
added (nothing else changes). The KV cache is F32 (F16 by default moves these logits by about 2e-3). The fixture's
LongRoPE has an original context of 256, the smallest context llama.cpp allocates, so llama.cpp takes its short
factors (it takes the long ones when its context exceeds the original), as transformers and we do within it.

Tolerances: F32, logits within 1e-4 of transformers and losses within 1e-5 of ours (both float32 throughout);
Q8_0 and our Q4_K_M mix (on these 64-value rows: Q5_0, with attn_qkv/ffn_down on the last layer in Q8_0), losses
within 0.02 of ours at our default int8 activations (llama.cpp also multiplies quantized weights by 8-bit
activations, with its own rounding; the tolerance is the int8 one QwenReferenceTests uses).

    swift build -c release --product conclave-client
    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:/work/tools/llama.cpp/gguf-py \
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \
    python3 Tests/LanguageModelTests/Reference/llamacpp_phi3_export_check.py [path/to/conclave-client]
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
FIXTURE = os.path.join(ROOT, "Tests", "Fixtures", "tiny-phi3")
F32_LOGITS, F32_LOSS, Q8_LOSS, CONTROL_LOGITS = 1e-4, 1e-5, 0.02, 0.1


def copy_for_llama_cpp(source, target, swap_gate_up=False):
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
        if swap_gate_up and tensor.name.endswith("ffn_up.weight"):
            half = data.shape[0] // 2
            data = np.concatenate([data[half:], data[:half]])
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


def main():
    client = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release", "conclave-client")
    reference = json.load(open(os.path.join(FIXTURE, "reference.json")))
    expected = load_file(os.path.join(FIXTURE, "reference.safetensors"))["lora_logits"]
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, "examples.jsonl")
        with open(data, "w") as f:
            for ids, labels in zip(reference["input_ids"], reference["labels"]):
                f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
        for kind in ("f32", "q8_0", "q4_k_m"):
            exported = os.path.join(folder, f"merged-{kind}.gguf")
            subprocess.run([client, "quantize", "--model", FIXTURE, "--adapter", os.path.join(FIXTURE, "peft-adapter"),
                            "--type", kind, "--out", exported], check=True, capture_output=True)
            runnable, control = os.path.join(folder, f"{kind}.gguf"), os.path.join(folder, f"{kind}-control.gguf")
            architecture = copy_for_llama_cpp(exported, runnable)
            copy_for_llama_cpp(exported, control, swap_gate_up=True)
            logits, losses = llama_cpp_run(runnable, reference)
            control_logits, _ = llama_cpp_run(control, reference)
            ours = our_losses(client, exported, data, "float32" if kind == "f32" else "int8")
            logit_gap = float(np.abs(logits - expected).max())
            loss_gap = float(np.abs(losses - ours).max())
            control_gap = float(np.abs(control_logits - expected).max())
            print(f"{kind} ({architecture}): llama.cpp vs transformers+PEFT float64 worst logit difference {logit_gap:.3g}; "
                  f"llama.cpp vs our losses worst difference {loss_gap:.3g} (ours {np.round(ours, 6).tolist()}, "
                  f"llama.cpp {np.round(losses, 6).tolist()}); control (gate/up swapped) {control_gap:.3g}")
            if architecture != "phi3":
                failures.append(f"{kind}: architecture {architecture}")
            if kind == "f32" and not (logit_gap <= F32_LOGITS and loss_gap <= F32_LOSS):
                failures.append(f"f32: logits {logit_gap} > {F32_LOGITS} or losses {loss_gap} > {F32_LOSS}")
            if kind != "f32" and not loss_gap <= Q8_LOSS:
                failures.append(f"{kind}: losses {loss_gap} > {Q8_LOSS}")
            if not control_gap > CONTROL_LOGITS:
                failures.append(f"{kind}: the control is not far off ({control_gap})")
    if failures:
        sys.exit("; ".join(failures))
    print("llama.cpp runs the exported Phi-3 files as we do")


if __name__ == "__main__":
    main()
