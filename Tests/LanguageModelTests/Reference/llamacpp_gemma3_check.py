#!/usr/bin/env python3
"""llama.cpp reads the tiny Gemma 3 GGUF of Tests/Fixtures/tiny-gemma3 (llama.cpp's converter's own file) as transformers
computes it (issue 16), so the conventions Gemma3ReferenceTests relies on are llama.cpp's too: (1 + w) head norms, the
window of the sliding layers (a key `window` or more positions back masked: llama_hparams::is_masked_swa), which layers
slide (the converter writes no pattern; llama.cpp's default, every sixth layer global, is the fixture's), the sliding
layers' rope base (`gemma3.rope.freq_base_swa`) and the global layers' linear scaling. It also runs tiny-gemma2's F32 file
on the 48-token example past its window of 32 (window.json), the same check for Gemma 2's window.

Each file is copied with `tokenizer.ggml.model = none` (llama_cpp's loader needs a tokenizer model; nothing else
changes) by llamacpp_gemma2_check.py's helpers, F32 KV cache, and compared with transformers' float64 logits in the
fixtures (ours are compared with the same logits by Gemma3ReferenceTests and SlidingWindowTests). ggml's GELU goes through
a table of float16 inputs and outputs: Gemma 2's file stays within the 5e-3 of llamacpp_gemma2_check.py (1.65e-3 past
its window, measured 2026-12-05), Gemma 3's within 1.5e-2: it differs by 8.7e-3, and by 2.3e-3 from transformers given
the same float16 GELU, that rest from single float16 rounding flips (one example agrees to 5e-5 at every position; the
other two from one position on). Three control copies of the Gemma 3 file must be far off (0.1; they differ by 1.4 to
5.7), so the comparison can fail: without the window key (llama.cpp then runs no sliding layer), without the rope
scaling factor (the global layer unscaled), and with the q head norms as w instead of 1 + w.

    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36:/work/tools/llama.cpp/gguf-py \\
    LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \\
    python3 Tests/LanguageModelTests/Reference/llamacpp_gemma3_check.py
"""
import json
import os
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_gemma2_check import CONTROL, LOGITS, ROOT, copy_for_llama_cpp, llama_cpp_logits  # noqa: E402

FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
GEMMA3_LOGITS = 1.5e-2


def main():
    cases = [("gemma3: converter's F32 file", "tiny-gemma3", "reference", {}, False),
             ("gemma3 control: window key dropped", "tiny-gemma3", "reference",
              {"drop_key": "gemma3.attention.sliding_window"}, True),
             ("gemma3 control: rope scaling factor dropped", "tiny-gemma3", "reference",
              {"drop_key": "gemma3.rope.scaling.factor"}, True),
             ("gemma3 control: attn_q_norm as w, not 1 + w", "tiny-gemma3", "reference",
              {"shift_tensor": "attn_q_norm.weight"}, True),
             ("gemma2: converter's F32 file, 48 tokens past its window of 32", "tiny-gemma2", "window", {}, False)]
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (label, fixture, references, edit, control) in enumerate(cases):
            reference = json.load(open(os.path.join(FIXTURES, fixture, references + ".json")))
            expected = load_file(os.path.join(FIXTURES, fixture, references + ".safetensors"))["logits"].astype(np.float64)
            path = os.path.join(folder, f"{i}.gguf")
            copy_for_llama_cpp(os.path.join(FIXTURES, fixture, "model.gguf.bin"), path, **edit)
            worst = float(np.abs(llama_cpp_logits(path, reference) - expected).max())
            tolerance = CONTROL if control else GEMMA3_LOGITS if fixture == "tiny-gemma3" else LOGITS
            ok = worst > tolerance if control else worst <= tolerance
            print(f"{label}: worst logit difference from transformers float64 {worst:.3g} "
                  f"({'must exceed' if control else 'within'} {tolerance}): {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(label)
    if failures:
        sys.exit("failed: " + ", ".join(failures))


if __name__ == "__main__":
    main()
