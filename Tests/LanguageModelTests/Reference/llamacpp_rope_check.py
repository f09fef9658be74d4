#!/usr/bin/env python3
"""llama.cpp's own forward pass on the converter's rope-scaled tiny models (Tests/Fixtures/tiny-llama3: its
rope_freqs.weight; tiny-llama-linear: llama.rope.scaling.type/factor; tiny-yarn-{llama,qwen2,qwen3}: YaRN's
rope.scaling.type/factor/original_context_length) against transformers' float64 logits in the same fixtures:
evidence, beside RopeScalingTests and YarnTests, that llama.cpp reads these files as transformers computes the
models, and so that reading them as llama.cpp does (LlamaConfiguration.ggufRopeScaling, ggufYarn) is right.

tiny-phi3-long (LongRoPE, original context 8): llama.cpp's context is at least 256 tokens (it pads n_ctx), past
the original context, so it takes the long factors (llama_model::get_rope_factors), as transformers does for the
16-token examples; the same file with its original context set to 256 makes it take the short ones, which must
give transformers' logits of the examples' first 8 tokens (short_logits; the attention factor is its own key).

The fixtures have no tokenizer, which llama.cpp requires, so each file is copied to a temporary folder with
`tokenizer.ggml.model = none` added (nothing else changes); the control copy also drops the scaling (the
rope.scaling keys and rope_freqs.weight; for LongRoPE, the long factors replaced by the short ones) and must be
far off. The KV cache is F32 (F16 by default, which alone moves these logits by about 2e-3).

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


def copy_with_vocabulary(source, target, keep_scaling, original_context=None):
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, architecture)
    longrope = any(tensor.name == "rope_factors_long.weight" for tensor in reader.tensors)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if not keep_scaling and not longrope and field.name.startswith(architecture + ".rope.scaling"):
            continue
        kind = field.types[0]
        value = field.contents()
        if original_context is not None and field.name == architecture + ".rope.scaling.original_context_length":
            value = original_context
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, value)
        else:
            writer.add_key_value(field.name, value, kind)
    writer.add_string("tokenizer.ggml.model", "none")
    short = next((t for t in reader.tensors if t.name == "rope_factors_short.weight"), None)
    for tensor in reader.tensors:
        if not keep_scaling and tensor.name == "rope_freqs.weight":
            continue
        data = short.data if not keep_scaling and tensor.name == "rope_factors_long.weight" else tensor.data
        writer.add_tensor(tensor.name, data, raw_shape=list(reversed([int(d) for d in tensor.shape])),
                          raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def worst_logit_difference(path, reference, expected, tokens=None):
    model = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, type_k=0, type_v=0,
                            flash_attn=False, verbose=False)
    worst = 0.0
    for i, ids in enumerate(reference["input_ids"]):
        ids = ids[:tokens] if tokens else ids
        model.reset()
        model.eval(ids)
        worst = max(worst, float(np.abs(np.array(model.scores[:len(ids)]) - expected[i]).max()))
    return worst


def check_short_factors(folder):
    """tiny-phi3-long with its original context raised to 256 (llama.cpp's smallest context): the short factors."""
    directory = os.path.join(ROOT, "Tests", "Fixtures", "tiny-phi3-long")
    reference = json.load(open(os.path.join(directory, "reference.json")))
    expected = load_file(os.path.join(directory, "reference.safetensors"))["short_logits"]
    path = os.path.join(folder, "tiny-phi3-long-short.gguf")
    copy_with_vocabulary(os.path.join(directory, "model.gguf.bin"), path, True, original_context=256)
    worst = worst_logit_difference(path, reference, expected, tokens=reference["short"]["tokens"])
    print(f"tiny-phi3-long within its original context: llama.cpp vs transformers float64 (short factors), worst logit "
          f"difference {worst:.3g}")
    if not worst < 1e-4:
        sys.exit("tiny-phi3-long: llama.cpp's short factors do not compute what transformers does")


def main():
    with tempfile.TemporaryDirectory() as folder:
        check_short_factors(folder)
        for name in ["tiny-llama3", "tiny-llama-linear", "tiny-yarn-llama", "tiny-yarn-qwen2", "tiny-yarn-qwen3",
                     "tiny-phi3-long"]:
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
