#!/usr/bin/env python3
"""llama.cpp's own reading of the SentencePiece GGUF (Tests/Fixtures/tiny-llama-spm/model.gguf.bin), for
SentencePieceModelTests: for each reference text of tiny-llama-spm/reference.json, llama.cpp's token ids with
special tokens parsed and not, and its detokenized text of HF's ids (llama_token_to_piece concatenated, as
llama-cpp-python's detokenize gives it). llama.cpp 0.3.36 through llama-cpp-python, vocabulary only.

    PYTHONPATH=/work/tools/llama_cpp_python-0.3.36 LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \\
        python3 Tests/LanguageModelTests/Reference/make_spm_llamacpp_reference.py
"""
import hashlib
import json
import os

import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "Tests", "Fixtures", "tiny-llama-spm", "model.gguf.bin")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-llama-spm", "llama-cpp.json")


def main():
    llm = Llama(model_path=MODEL, vocab_only=True, verbose=False)
    reference = json.load(open(os.path.join(ROOT, "Tests", "Fixtures", "tiny-llama-spm", "reference.json")))
    cases = []
    for case in reference["cases"]:
        text = case["text"].encode()
        cases.append({"text": case["text"],
                      "ids": llm.tokenize(text, add_bos=False, special=True),
                      "ids_plain": llm.tokenize(text, add_bos=False, special=False),
                      "detokenized_hf_ids": llm.detokenize(case["hf_ids"]).decode("utf-8", errors="replace")})
    digest = hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
    with open(OUT, "w") as f:
        json.dump({"model_sha256": digest, "cases": cases,
                   "source": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp 0.3.36), vocab_only, "
                             "Tests/LanguageModelTests/Reference/make_spm_llamacpp_reference.py"},
                  f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(len(cases), "cases written to", OUT)


if __name__ == "__main__":
    main()
