#!/usr/bin/env python3
"""llama.cpp runs each family's tiny model as transformers computes it, and runs what `conclave-client quantize` writes
for it (issue 16). For each family of Tests/Fixtures (the rows of FAMILIES, as TinyFamily's in the Swift tests), with
llama-cpp-python 0.3.36:

1. The converter's own F32 file (tiny-<name>/model.gguf.bin): llama.cpp's logits against transformers' float64
   logits in the fixture (ours are compared with the same logits by FamilyReferenceTests), so the GGUF conventions
   our loader relies on are llama.cpp's too; for Gemma 2 also on its 48-token example past its window of 32
   (tiny-gemma2/window.json), where the sliding layers mask (Gemma 3's examples all cross its window of 5).
2. What `quantize` writes for the family: the fixture with its PEFT adapter merged, written as F32, Q8_0 and our
   Q4_K_M mix. Per file, llama.cpp's per-example losses against ours (`conclave-client eval --json` on the same file) and,
   for F32, llama.cpp's logits against transformers + PEFT's float64 lora_logits. For Gemma 3 also the fixture with
   other sliding layers (`layer_types` alternating, all global, all sliding: what `quantize` writes as one flag per
   layer, or without a window), exported as F32: llama.cpp's logits against transformers' float64 logits of that
   config, each pattern's own control being how far those lie from the fixture's (five in six) logits.

Each family's controls (copies with one of its own parts broken) must be far off in every comparison, so the
comparison can fail: Qwen2's biases zeroed, Qwen3's q/k head norms set to 1, Phi-3's gate and up halves exchanged,
Gemma 2 without its final soft-capping key and with its post-feed-forward norms as w instead of 1 + w, Gemma 3
without its window key (llama.cpp then runs no sliding layer), without its rope scaling factor (the global layer
unscaled), with its q head norms as w instead of 1 + w and with its sliding layers' rope base at the global one's
(`rope.freq_base_swa` set to `rope.freq_base`: the fixture's base is llama.cpp's default 10000, so dropping the key
would change nothing).

The padded fixtures (tiny-llama-padded, tiny-gemma3-padded: a tokenizer.model of 480 pieces; tiny-qwen2-padded: a
byte-level tokenizer.json of 400 tokens; 512 embedding rows each) check what the converter and `quantize` write for a
tokenizer shorter than the embedding: the token list padded to 512 ([PAD<id>] to [PAD511]), every row kept, so
llama.cpp's logits over all 512 rows are compared as above; their control zeroes the padded rows (zero_rows_past). The other fixtures have no tokenizer, which llama.cpp requires, so
their files are copied with `tokenizer.ggml.model = none` added (nothing else changes). The KV cache is F32 (F16 by default moves these logits by about 2e-3). Phi-3's
LongRoPE has an original context of 256, the smallest context llama.cpp allocates, so llama.cpp takes its short
factors (it takes the long ones when its context exceeds the original), as transformers and we do within it.

Tolerances: F32, logits within 1e-4 of transformers and losses within 1e-5 of ours (both float32 throughout); Q8_0
and the Q4_K_M mix (on these 64-value rows: Q5_0, with attn_v/attn_qkv/ffn_down on the last layer in Q8_0), losses
within 0.02 of ours at our default int8 activations (llama.cpp also multiplies quantized weights by 8-bit
activations, with its own rounding; the int8 tolerance of FamilyReferenceTests). 0.1 is the least a control must
differ by.

Gemma 2: ggml computes GELU through a table of float16 inputs and outputs (GGML_GELU_FP16 in ggml-cpu/vec.h:
fp16(gelu(fp16(x))) for |x| < 10), which moves this fixture's logits by about 1.5e-3 from transformers' exact GELU.
So Gemma 2's F32 logits are compared with transformers (+ PEFT) in float64 run here with that table's rounding put in
its MLP (`ggml_gelu`; the exact-GELU gap is printed beside it), within 5e-4: a GELU input that lies within float32's
rounding of a float16 rounding boundary can round the other way in llama.cpp's float32 than in transformers'
float64, and one such step moves a logit by up to 2.9e-4 (measured 2026-12-05 on the converter's file, whose closest
GELU input lies 2.2e-8 relative from a boundary; the merged export measured 5.6e-6, within the other families' 1e-4).
Its F32 losses are compared with ours (exact GELU) within 1e-4, the table's effect on these losses (3.9e-5 measured).
Gemma 2's example past its window is held to transformers' exact GELU within 5e-3 (1.65e-3 measured).
Gemma 3's F32 logits: 1.5e-2 against transformers' exact GELU: the converter's file differs by 2.73e-3, which is the
table's own effect on transformers' logits (2.73e-3); from transformers given the same float16 GELU it differs by
3.8e-4 at most (3.5e-4, 3.8e-4 and 1.6e-4 on the three examples), the rest of float16 rounding flips (measured
2026-12-06; the padded fixture's converter file: 1.97e-3 from the exact GELU). Its F32 export's losses are compared
with ours (exact GELU) within 1e-3: the table moves transformers' float64 LoRA losses by 3.1e-4, and llama.cpp's lie
within 2e-5 of transformers' given the table (measured 2026-12-05).

    swift build -c release --product conclave-client
    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:/work/tools/llama.cpp/gguf-py \\
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \\
    python3 Tests/LanguageModelTests/Reference/llamacpp_family_check.py [path/to/conclave-client] [family ...]
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
F32_LOGITS, F32_LOSS, QUANTIZED_LOSS, CONTROL_LOGITS = 1e-4, 1e-5, 0.02, 0.1
GELU_TABLE_LOGITS, GELU_TABLE_LOSS = 5e-4, 1e-4


def zero_biases(name, data):
    return np.zeros_like(data) if name.endswith(".bias") else data


def unit_head_norms(name, data):
    return np.ones_like(data) if name.endswith(("attn_q_norm.weight", "attn_k_norm.weight")) else data


def swap_gate_up(name, data):
    if not name.endswith("ffn_up.weight"):
        return data
    half = data.shape[0] // 2
    return np.concatenate([data[half:], data[:half]])


def post_ffw_norm_as_w(name, data):
    return data - 1 if name.endswith("post_ffw_norm.weight") else data


def q_norm_as_w(name, data):
    return data - 1 if name.endswith("attn_q_norm.weight") else data


def zero_rows_past(tokens):
    """An edit zeroing token_embd's rows past the tokenizer's `tokens` (a quantized row's bytes too: scale 0); the
    padded fixtures' output head is their embedding, so the logits of those rows become 0."""
    def edit(name, data):
        if name != "token_embd.weight":
            return data
        data = data.copy()
        data[tokens:] = 0
        return data
    return edit


# Per family: its controls (label, a key to drop, an edit of each tensor's data, optionally a key to set to another
# key's value), the F32 tolerances of llama.cpp's logits against transformers and of its losses against ours, where
# llama.cpp's GELU table must be put into transformers' forward its model class, references besides reference.json
# that the converter's file is checked on against transformers' exact GELU (Gemma 2's past its window) with their
# tolerance, other layer_types that our F32 export of the fixture is checked with (Gemma 3's), and the architecture of a
# fixture not named after its family (the padded ones).
FAMILIES = {
    "qwen2": dict(controls=[("biases zeroed", None, zero_biases)], f32_logits=F32_LOGITS, f32_loss=F32_LOSS),
    "qwen3": dict(controls=[("head norms set to 1", None, unit_head_norms)], f32_logits=F32_LOGITS, f32_loss=F32_LOSS),
    "phi3": dict(controls=[("gate/up swapped", None, swap_gate_up)], f32_logits=F32_LOGITS, f32_loss=F32_LOSS),
    "gemma2": dict(controls=[("final soft-capping key dropped", "gemma2.final_logit_softcapping", None),
                             ("post_ffw_norm as w, not 1 + w", None, post_ffw_norm_as_w)],
                   f32_logits=GELU_TABLE_LOGITS, f32_loss=GELU_TABLE_LOSS, ggml_gelu="Gemma2ForCausalLM",
                   extra_references=["window"], extra_logits=5e-3),
    "gemma3": dict(controls=[("window key dropped", "gemma3.attention.sliding_window", None),
                             ("rope scaling factor dropped", "gemma3.rope.scaling.factor", None),
                             ("attn_q_norm as w, not 1 + w", None, q_norm_as_w),
                             ("sliding rope base set to the global one", None, None,
                              ("gemma3.rope.freq_base_swa", "gemma3.rope.freq_base"))],
                   f32_logits=1.5e-2, f32_loss=1e-3,
                   layer_patterns={"alternating": ["sliding_attention", "full_attention"] * 3,
                                   "all global": ["full_attention"] * 6, "all sliding": ["sliding_attention"] * 6}),
    "llama-padded": dict(controls=[("padded rows zeroed", None, zero_rows_past(480))], f32_logits=F32_LOGITS,
                         f32_loss=F32_LOSS, architecture="llama"),
    "gemma3-padded": dict(controls=[("padded rows zeroed", None, zero_rows_past(480))], f32_logits=1.5e-2, f32_loss=1e-3,
                          architecture="gemma3"),
    "qwen2-padded": dict(controls=[("padded rows zeroed", None, zero_rows_past(400))], f32_logits=F32_LOGITS,
                         f32_loss=F32_LOSS, architecture="qwen2"),
}


def ggml_gelu(x):
    """ggml's tanh GELU through its float16 table (ggml_vec_geglu_f32 under GGML_GELU_FP16), on float64 tensors."""
    import torch
    h = x.to(torch.float16).to(torch.float32)
    table = (0.5 * h * (1.0 + torch.tanh(0.7978845608028654 * h * (1.0 + 0.044715 * h * h)))).to(torch.float16)
    y = table.to(x.dtype)
    return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


def ggml_gelu_logits(model_class, fixture, reference, adapter):
    """transformers' float64 logits of the fixture (with its PEFT adapter when `adapter`), eager attention, with
    ggml's float16 GELU table in every MLP."""
    import torch
    import transformers

    class TableGelu(torch.nn.Module):
        def forward(self, x):
            return ggml_gelu(x)

    model = getattr(transformers, model_class).from_pretrained(fixture, torch_dtype=torch.float64,
                                                               attn_implementation="eager").eval()
    for layer in model.model.layers:
        layer.mlp.act_fn = TableGelu()
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, os.path.join(fixture, "peft-adapter")).to(torch.float64).eval()
    with torch.no_grad():
        return np.stack([model(torch.tensor([ids])).logits[0].numpy() for ids in reference["input_ids"]])


def copy_for_llama_cpp(source, target, drop_key=None, edit=None, set_key=None):
    """`source` with `tokenizer.ggml.model = none` added where it has no tokenizer, `drop_key` left out, `edit` applied
    to each tensor and `set_key` (a key and the key whose value it takes) changed."""
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, architecture)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", drop_key):
            continue
        kind, value = field.types[0], field.contents()
        if set_key is not None and field.name == set_key[0]:
            value = reader.fields[set_key[1]].contents()
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, value)
        else:
            writer.add_key_value(field.name, value, kind)
    if "tokenizer.ggml.model" not in reader.fields:
        writer.add_string("tokenizer.ggml.model", "none")
    for tensor in reader.tensors:
        # data is (rows, bytes per row) for a quantized tensor, (rows, columns) for F32: gguf-py reads either, and
        # the edits touch only F32 tensors or exchange whole rows.
        data = np.array(tensor.data)
        if edit is not None:
            data = edit(tensor.name, data)
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


def pattern_gaps(client, family, fixture, folder, label, layer_types, reference):
    """The fixture with `layer_types` instead of its own, written by `quantize` as F32: the worst difference of
    llama.cpp's logits from transformers' float64 logits of that config, and of the latter from the fixture's."""
    import torch
    import transformers
    model_directory = os.path.join(folder, f"{family}-layers-{label.replace(' ', '-')}")
    os.makedirs(model_directory)
    config = json.load(open(os.path.join(fixture, "config.json")))
    config["layer_types"] = layer_types
    json.dump(config, open(os.path.join(model_directory, "config.json"), "w"))
    os.symlink(os.path.join(fixture, "model.safetensors"), os.path.join(model_directory, "model.safetensors"))
    model = transformers.AutoModelForCausalLM.from_pretrained(model_directory, torch_dtype=torch.float64,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        expected = np.stack([model(torch.tensor([ids])).logits[0].numpy() for ids in reference["input_ids"]])
    exported, runnable = model_directory + ".gguf", model_directory + "-run.gguf"
    subprocess.run([client, "quantize", "--model", model_directory, "--type", "f32", "--out", exported], check=True,
                   capture_output=True)
    copy_for_llama_cpp(exported, runnable)
    own = load_file(os.path.join(fixture, "reference.safetensors"))["logits"]
    return float(np.abs(llama_cpp_run(runnable, reference)[0] - expected).max()), float(np.abs(expected - own).max())


def control_gaps(path, folder, stem, controls, reference, expected):
    """The worst logit difference from `expected` of each control copy of `path`."""
    gaps = []
    for i, (label, drop_key, edit, *set_key) in enumerate(controls):
        copy = os.path.join(folder, f"{stem}-control-{i}.gguf")
        copy_for_llama_cpp(path, copy, drop_key=drop_key, edit=edit, set_key=set_key[0] if set_key else None)
        gaps.append((label, float(np.abs(llama_cpp_run(copy, reference)[0] - expected).max())))
    return gaps


def check(client, family, folder, failures):
    settings = FAMILIES[family]
    fixture = os.path.join(FIXTURES, f"tiny-{family}")
    reference = json.load(open(os.path.join(fixture, "reference.json")))
    if "padded_mass" in reference:
        print(f"{family}: transformers puts {reference['padded_mass']['mean']:.3g} of its probability on the padded rows "
              f"on average ({reference['padded_mass']['max']:.3g} at most), which llama.cpp keeps in its softmax")
    tensors = load_file(os.path.join(fixture, "reference.safetensors"))
    controls = settings["controls"]
    # What llama.cpp's F32 logits are held to: transformers' own, or with ggml's GELU table where the family has GELU.
    expected = {"logits": tensors["logits"], "lora_logits": tensors["lora_logits"]}
    if "ggml_gelu" in settings:
        expected = {"logits": ggml_gelu_logits(settings["ggml_gelu"], fixture, reference, adapter=False),
                    "lora_logits": ggml_gelu_logits(settings["ggml_gelu"], fixture, reference, adapter=True)}
        print(f"{family}: llama.cpp's F32 logits compared with transformers' under ggml's float16 GELU table, which "
              f"moves them by {float(np.abs(expected['logits'] - tensors['logits']).max()):.3g} from the exact GELU")

    runnable = os.path.join(folder, f"{family}-converter.gguf")
    copy_for_llama_cpp(os.path.join(fixture, "model.gguf.bin"), runnable)
    converter_logits = llama_cpp_run(runnable, reference)[0]
    gap = float(np.abs(converter_logits - expected["logits"]).max())
    for name in settings.get("extra_references", []):
        extra = json.load(open(os.path.join(fixture, f"{name}.json")))
        extra_gap = float(np.abs(llama_cpp_run(runnable, extra)[0]
                                 - load_file(os.path.join(fixture, f"{name}.safetensors"))["logits"]).max())
        print(f"{family} converter's F32 file on {name}.json: llama.cpp vs transformers float64 worst logit difference "
              f"{extra_gap:.3g} (within {settings['extra_logits']})")
        if not extra_gap <= settings["extra_logits"]:
            failures.append(f"{family} converter's file on {name}.json: logits {extra_gap} > {settings['extra_logits']}")
    gaps = control_gaps(os.path.join(fixture, "model.gguf.bin"), folder, f"{family}-converter", controls, reference,
                        expected["logits"])
    print(f"{family} converter's F32 file: llama.cpp vs transformers float64 worst logit difference {gap:.3g} "
          f"(exact transformers: {float(np.abs(converter_logits - tensors['logits']).max()):.3g}); controls "
          + ", ".join(f"{label} {g:.3g}" for label, g in gaps))
    if not gap <= settings["f32_logits"]:
        failures.append(f"{family} converter's file: logits {gap} > {settings['f32_logits']}")
    failures.extend(f"{family} converter's file: control '{label}' not far off ({g})" for label, g in gaps
                    if not g > CONTROL_LOGITS)

    for label, layer_types in settings.get("layer_patterns", {}).items():
        gap, control = pattern_gaps(client, family, fixture, folder, label, layer_types, reference)
        print(f"{family} F32 export with layers {label}: llama.cpp vs transformers float64 worst logit difference "
              f"{gap:.3g} (within {settings['f32_logits']}); control: that config's logits vs the fixture's {control:.3g}")
        if not gap <= settings["f32_logits"]:
            failures.append(f"{family} layers {label}: logits {gap} > {settings['f32_logits']}")
        if not control > CONTROL_LOGITS:
            failures.append(f"{family} layers {label}: control not far off ({control})")
    data = os.path.join(folder, f"{family}-examples.jsonl")
    with open(data, "w") as f:
        for ids, labels in zip(reference["input_ids"], reference["labels"]):
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    for kind in ("f32", "q8_0", "q4_k_m"):
        exported = os.path.join(folder, f"{family}-merged-{kind}.gguf")
        subprocess.run([client, "quantize", "--model", fixture, "--adapter", os.path.join(fixture, "peft-adapter"),
                        "--type", kind, "--out", exported], check=True, capture_output=True)
        runnable = os.path.join(folder, f"{family}-{kind}.gguf")
        architecture = copy_for_llama_cpp(exported, runnable)
        logits, losses = llama_cpp_run(runnable, reference)
        gaps = control_gaps(exported, folder, f"{family}-{kind}", controls, reference, expected["lora_logits"])
        ours = our_losses(client, exported, data, "float32" if kind == "f32" else "int8")
        logit_gap = float(np.abs(logits - expected["lora_logits"]).max())
        loss_gap = float(np.abs(losses - ours).max())
        print(f"{family} {kind} ({architecture}): llama.cpp vs transformers+PEFT float64 worst logit difference "
              f"{logit_gap:.3g}; llama.cpp vs our losses worst difference {loss_gap:.3g} (ours {np.round(ours, 6).tolist()}, "
              f"llama.cpp {np.round(losses, 6).tolist()}); controls " + ", ".join(f"{label} {g:.3g}" for label, g in gaps))
        if architecture != settings.get("architecture", family):
            failures.append(f"{family} {kind}: architecture {architecture}")
        if kind == "f32" and not (logit_gap <= settings["f32_logits"] and loss_gap <= settings["f32_loss"]):
            failures.append(f"{family} f32: logits {logit_gap} > {settings['f32_logits']} or losses {loss_gap} > "
                            f"{settings['f32_loss']}")
        if kind != "f32" and not loss_gap <= QUANTIZED_LOSS:
            failures.append(f"{family} {kind}: losses {loss_gap} > {QUANTIZED_LOSS}")
        failures.extend(f"{family} {kind}: control '{label}' not far off ({g})" for label, g in gaps if not g > CONTROL_LOGITS)


def main():
    arguments = sys.argv[1:]
    client = arguments.pop(0) if arguments and arguments[0] not in FAMILIES else \
        os.path.join(ROOT, ".build", "release", "conclave-client")
    families = arguments or list(FAMILIES)
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        for family in families:
            check(client, family, folder, failures)
    if failures:
        sys.exit("failed: " + "; ".join(failures))
    print("llama.cpp runs " + ", ".join(families) + " as transformers computes them, and the exports as we do")


if __name__ == "__main__":
    main()
