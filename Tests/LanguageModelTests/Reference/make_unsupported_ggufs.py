#!/usr/bin/env python3
"""Writes tiny Llama GGUF files with gguf-py (llama.cpp's own writer), one per feature that changes the
computation and that the model does not compute, plus `plain.bin`, the same model with nothing added,
which must load and run (the positive control). UnsupportedGGUFTests reads them. Three of the features are
computed now and their files must load too: rope-freqs (llama3's factors), rope-scaling-linear and
rope-scaling-factor (linear; their numbers are checked by RopeScalingTests on the converter's own files).

Run from the repository root:
    python3 -m venv /tmp/gguf && /tmp/gguf/bin/pip install gguf numpy
    /tmp/gguf/bin/python Tests/LanguageModelTests/Reference/make_unsupported_ggufs.py
Outputs are named .bin because *.gguf is kept for model files (.gitignore). Weights are random (seeded
here; they are test inputs, not reference numbers); each file is about 20 KB.
"""
import os

import gguf
import numpy as np

VOCAB, HIDDEN, FF, HEADS, KV_HEADS, LAYERS, CONTEXT = 32, 16, 32, 2, 1, 1, 64
HEAD_DIM = HIDDEN // HEADS
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unsupported-gguf")


def tensors(rng):
    """(name, array) in GGUF's names; numpy shape (rows, columns) becomes GGUF dimensions [columns, rows]."""
    def m(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
    yield "token_embd.weight", m(VOCAB, HIDDEN)
    yield "output_norm.weight", np.ones(HIDDEN, dtype=np.float32)
    yield "output.weight", m(VOCAB, HIDDEN)
    for l in range(LAYERS):
        yield f"blk.{l}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32)
        yield f"blk.{l}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32)
        yield f"blk.{l}.attn_q.weight", m(HEADS * HEAD_DIM, HIDDEN)
        yield f"blk.{l}.attn_k.weight", m(KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"blk.{l}.attn_v.weight", m(KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"blk.{l}.attn_output.weight", m(HIDDEN, HEADS * HEAD_DIM)
        yield f"blk.{l}.ffn_gate.weight", m(FF, HIDDEN)
        yield f"blk.{l}.ffn_up.weight", m(FF, HIDDEN)
        yield f"blk.{l}.ffn_down.weight", m(HIDDEN, FF)


def write(name, extra_metadata=None, extra_tensors=(), rope_dimensions=HEAD_DIM):
    """One file: the plain model's keys (as convert_hf_to_gguf.py writes a Llama), then the additions."""
    path = os.path.join(OUT, name + ".bin")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(rope_dimensions)
    for call in (extra_metadata or []):
        call(w)
    for tensor_name, array in tensors(np.random.default_rng(7)):
        w.add_tensor(tensor_name, array)
    for tensor_name, array in extra_tensors:
        w.add_tensor(tensor_name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    write("plain")
    # Llama 3.x: convert_hf_to_gguf.py writes the llama3 rope scaling as per-dimension frequency factors.
    write("rope-freqs", extra_tensors=[("rope_freqs.weight", np.linspace(1, 8, HEAD_DIM // 2).astype(np.float32))])
    write("rope-scaling-linear", [lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR),
                                  lambda w: w.add_rope_scaling_factor(8.0)])
    write("rope-scaling-yarn", [lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN),
                                lambda w: w.add_rope_scaling_factor(4.0),
                                lambda w: w.add_rope_scaling_orig_ctx_len(32)])
    # A factor without a type is linear scaling to llama.cpp.
    write("rope-scaling-factor", [lambda w: w.add_rope_scaling_factor(2.0)])
    write("partial-rotary", rope_dimensions=HEAD_DIM // 2)
    write("layer-norm", [lambda w: w.add_layer_norm_eps(1e-5)])
    write("experts", [lambda w: w.add_expert_count(8), lambda w: w.add_expert_used_count(2)])
    write("sliding-window", [lambda w: w.add_sliding_window(16)])
    write("logit-softcapping", [lambda w: w.add_final_logit_softcapping(30.0)])
    write("query-bias", extra_tensors=[("blk.0.attn_q.bias", np.zeros(HEADS * HEAD_DIM, dtype=np.float32))])


if __name__ == "__main__":
    main()
