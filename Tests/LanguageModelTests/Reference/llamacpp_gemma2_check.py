#!/usr/bin/env python3
"""llama.cpp reads the tiny Gemma 2 GGUF of Tests/Fixtures/tiny-gemma2 (llama.cpp's converter's own file) as
transformers computes it (issue 16), so the GGUF conventions Gemma2ReferenceTests relies on are llama.cpp's too: norm
weights stored as 1 + w, the soft-capping keys, GGUF's missing query_pre_attn_scalar taken as the head size (the
fixture's 32), the sliding window of the even layers. It runs the F32 file with llama-cpp-python 0.3.36 and compares
llama.cpp's logits with transformers' float64 logits in the fixture (ours are compared with the same logits by
Gemma2ReferenceTests). Two control copies must be far off, so the comparison can fail: one without the final
soft-capping key, one with the post-feed-forward norms' 1 subtracted (w instead of 1 + w).

The fixture has no tokenizer, which llama.cpp requires, so each file is copied with `tokenizer.ggml.model = none`
added (nothing else changes). The KV cache is F32 (F16 moves logits by about 1e-3). Tolerance: 5e-3 on logits, not
the 1e-4 of float32 elsewhere: ggml computes GELU through a table of float16 inputs and outputs (GGML_GELU_FP16), and
on this fixture llama.cpp's logits differ from transformers' by 1.6e-3, of which all but 2.9e-4 goes when transformers'
GELU is given the same float16 rounding (measured 2026-12-05). 0.1 is the least a control must differ by; they differ
by 2 to 4.

    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:/work/tools/llama.cpp/gguf-py \\
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \\
    python3 Tests/LanguageModelTests/Reference/llamacpp_gemma2_check.py
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
FIXTURE = os.path.join(ROOT, "Tests", "Fixtures", "tiny-gemma2")
LOGITS, CONTROL = 5e-3, 0.1


def copy_for_llama_cpp(source, target, drop_key=None, shift_tensor=None):
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", drop_key):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, field.contents())
        else:
            writer.add_key_value(field.name, field.contents(), kind)
    writer.add_string("tokenizer.ggml.model", "none")
    for tensor in reader.tensors:
        data = np.array(tensor.data)
        if shift_tensor and tensor.name.endswith(shift_tensor):
            data = data - 1
        writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_logits(path, reference):
    model = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, type_k=0, type_v=0,
                            flash_attn=False, verbose=False)
    rows = []
    for ids in reference["input_ids"]:
        model.reset()
        model.eval(ids)
        rows.append(np.array(model.scores[:len(ids)], dtype=np.float64))
    return np.stack(rows)


def main():
    reference = json.load(open(os.path.join(FIXTURE, "reference.json")))
    expected = load_file(os.path.join(FIXTURE, "reference.safetensors"))["logits"].astype(np.float64)
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        cases = [("converter's F32 file", {}, False), ("control: final soft-capping key dropped",
                  {"drop_key": "gemma2.final_logit_softcapping"}, True),
                 ("control: post_ffw_norm as w, not 1 + w", {"shift_tensor": "post_ffw_norm.weight"}, True)]
        for i, (label, edit, control) in enumerate(cases):
            path = os.path.join(folder, f"{i}.gguf")
            copy_for_llama_cpp(os.path.join(FIXTURE, "model.gguf.bin"), path, **edit)
            worst = float(np.abs(llama_cpp_logits(path, reference) - expected).max())
            ok = worst > CONTROL if control else worst <= LOGITS
            print(f"{label}: worst logit difference from transformers float64 {worst:.3g} "
                  f"({'must exceed' if control else 'within'} {CONTROL if control else LOGITS}): {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(label)
    if failures:
        sys.exit("failed: " + ", ".join(failures))


if __name__ == "__main__":
    main()
