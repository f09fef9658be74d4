#!/usr/bin/env python3
"""llama.cpp's own forward pass on the converter's rope-scaled tiny Llamas (Tests/Fixtures/tiny-llama3: its
rope_freqs.weight; tiny-llama-linear: llama.rope.scaling.type/factor) against transformers' float64 logits in
the same fixtures: evidence, beside RopeScalingTests, that llama.cpp reads these files as transformers computes
the models, and so that reading them as llama.cpp does (LlamaConfiguration.ggufRopeScaling) is right.

The fixtures have no tokenizer, which llama.cpp requires, so each file is copied to a temporary folder with
`tokenizer.ggml.model = none` added (nothing else changes); the control copy also drops the scaling (the
rope.scaling keys and rope_freqs.weight) and must be far off. The KV cache is F32 (F16 by default, which alone
moves these logits by about 2e-3).

    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:.build/llama_cpp_python/vendor/llama.cpp/gguf-py \
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \
    python3 Tests/LanguageModelTests/Reference/llamacpp_rope_check.py
"""
import json
import os
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def copy_with_vocabulary(source, target, keep_scaling):
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if not keep_scaling and field.name.startswith("llama.rope.scaling"):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, field.contents())
        else:
            writer.add_key_value(field.name, field.contents(), kind)
    writer.add_string("tokenizer.ggml.model", "none")
    for tensor in reader.tensors:
        if not keep_scaling and tensor.name == "rope_freqs.weight":
            continue
        writer.add_tensor(tensor.name, tensor.data, raw_shape=list(reversed([int(d) for d in tensor.shape])),
                          raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def worst_logit_difference(path, reference, expected):
    model = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, type_k=0, type_v=0,
                            flash_attn=False, verbose=False)
    worst = 0.0
    for i, ids in enumerate(reference["input_ids"]):
        model.reset()
        model.eval(ids)
        worst = max(worst, float(np.abs(np.array(model.scores[:len(ids)]) - expected[i]).max()))
    return worst


def main():
    with tempfile.TemporaryDirectory() as folder:
        for name in ["tiny-llama3", "tiny-llama-linear"]:
            directory = os.path.join(ROOT, "Tests", "Fixtures", name)
            reference = json.load(open(os.path.join(directory, "reference.json")))
            expected = load_file(os.path.join(directory, "reference.safetensors"))["logits"]
            results = {}
            for keep in (True, False):
                path = os.path.join(folder, f"{name}-{keep}.gguf")
                copy_with_vocabulary(os.path.join(directory, "model.gguf.bin"), path, keep)
                results[keep] = worst_logit_difference(path, reference, expected)
            print(f"{name}: llama.cpp vs transformers float64, worst logit difference {results[True]:.3g}; "
                  f"with the scaling dropped {results[False]:.3g}")
            if not (results[True] < 1e-4 < 100 * 1e-4 < results[False]):
                sys.exit(f"{name}: llama.cpp does not compute what transformers does, or the control does not show it")


if __name__ == "__main__":
    main()
