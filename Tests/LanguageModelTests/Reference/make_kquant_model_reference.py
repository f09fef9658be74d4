#!/usr/bin/env python3
"""References for the default model requantized to Q4_K_M (KQuantModelTests), from two independent sources:

- numpy in float64 over the file's weights as gguf-py dequantizes them (gguf_llama_float64.py; on the Q4_1
  default model it reproduces the transformers float64 losses of ../shared/fixtures/smollm2 to 4e-7): mean
  losses and top-5 next tokens of three texts, and greedy continuations of two prompts;
- llama.cpp (0.3.36 through llama-cpp-python, 2 threads): its greedy continuations of the same prompts, and
  the smallest top-2 logit margin along them (llama.cpp rounds differently, so where that margin is tiny
  the two may part; the test compares with llama.cpp only as far as the margins allow, see there).

Writes kquant-model/reference.json with the file's SHA-256 and the tensor types it holds. Make the model
with llama.cpp's quantizer (llama-quantize, or the same function through the bindings), then the reference:
    /work/tools/llama.cpp/build-avx2/bin/llama-quantize --allow-requantize \\
        models/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_K_M.gguf Q4_K_M
    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36 LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \\
    GGUF_PY=/work/tools/llama.cpp/gguf-py \\
        python3 Tests/LanguageModelTests/Reference/make_kquant_model_reference.py models/SmolLM2-135M-Instruct.Q4_K_M.gguf
"""
import collections
import hashlib
import json
import os
import sys

if os.environ.get("GGUF_PY"):
    sys.path.insert(0, os.environ["GGUF_PY"])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

# The three texts of the shared smollm2 fixture, with the ids its tokenizer (transformers) gave.
TEXTS = [("The capital of France is Paris.", [504, 3575, 282, 4649, 314, 7042, 30])]
PROMPTS = ["The capital of France is", "Patient presents with a persistent cough and"]
TOKENS = 12
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kquant-model", "reference.json")


def llama_cpp_greedy(llm, ids):
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(TOKENS):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        top = np.sort(logits)[-2:]
        margins.append(float(top[1] - top[0]))
        out.append(int(np.argmax(logits)))
        llm.eval([out[-1]])
    return out, margins


def main():
    import gguf
    import llama_cpp
    from gguf_llama_float64 import GGUFLlama
    from llama_cpp import Llama

    path = sys.argv[1]
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    types = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors)
    model = GGUFLlama(path)
    llm = Llama(model_path=path, n_threads=2, n_ctx=256, verbose=False)
    texts = []
    for text, ids in TEXTS:
        loss, logits = model.mean_loss(ids)
        texts.append({"text": text, "ids": ids, "loss": loss,
                      "top5_next": np.argsort(model.logits(ids)[-1])[-5:][::-1].tolist()})
    prompts = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=False)
        ours = model.greedy(ids, TOKENS)
        theirs, margins = llama_cpp_greedy(llm, ids)
        prompts.append({"prompt": text, "prompt_ids": ids, "greedy_ids": ours,
                        "greedy_text": llm.detokenize(ours).decode(errors="replace"),
                        "llama_cpp_greedy_ids": theirs, "llama_cpp_top2_margins": margins})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"model": os.path.basename(path), "sha256": digest, "tensor_types": dict(types),
                   "source": "numpy float64 over gguf-py's dequantization (gguf_llama_float64.py); llama.cpp via "
                             f"llama-cpp-python {llama_cpp.__version__}, argmax decoding, 2 threads",
                   "texts": texts, "prompts": prompts}, f, indent=1)
    print(json.dumps({"texts": texts, "prompts": prompts}))


if __name__ == "__main__":
    main()
