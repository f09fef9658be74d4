#!/usr/bin/env python3
"""Writes `quant-types/blocks.bin`, a GGUF (by gguf-py, llama.cpp's own Python package) holding, for each
quantized type the loader reads beyond Q8_0/Q4_0/Q4_1, a small tensor in that type and gguf-py's own
dequantization of it in F32. QuantTypeTests compares Conclave's dequantizers with those values, so the
reference is ggml's layout as llama.cpp's package reads it, not our own code.

- `<type>.q`: random blocks (every bit pattern of the packed values and scales occurs), with the f16 block
  scales `d` (and `dmin`) replaced by finite halves of realistic size (random bytes there would give
  infinities and NaNs, which say nothing about the layout).
- `<type>.dequantized`: gguf.quants.dequantize of `<type>.q`, float32.
- For Q5_0 and Q5_1, which gguf-py also quantizes: `<type>.source` (float32 values) and `<type>.quantized`,
  gguf-py's quantization of them (ggml's reference rounding), to check our quantizer bit for bit.
- For Q4_K, Q5_K and Q6_K, which gguf-py does not quantize: `<type>.source` and `<type>.quantized` made by
  ggml itself (`ggml_quantize_chunk` in libggml-base, called through ctypes; its reference quantizer, no
  importance matrix), so our quantizer's round-trip error can be held to ggml's. Needs
  LLAMA_CPP_LIB_PATH=<llama.cpp build>/bin (libggml-base.so).

Run from the repository root (gguf-py from llama.cpp's tree, or `pip install gguf numpy`):
    GGUF_PY=/work/tools/llama.cpp/gguf-py LLAMA_CPP_LIB_PATH=/work/tools/llama.cpp/build-avx2/bin \
        python3 Tests/LanguageModelTests/Reference/make_quant_types.py
Named .bin because *.gguf is kept for model files (.gitignore). The file is about 40 KB.
"""
import os
import sys

if os.environ.get("GGUF_PY"):
    sys.path.insert(0, os.environ["GGUF_PY"])
import gguf  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant-types", "blocks.bin")
T = gguf.GGMLQuantizationType

# type -> (byte offsets of the f16 scales in a block, rows, columns)
TYPES = {
    T.Q5_0: ([0], 3, 96),
    T.Q5_1: ([0, 2], 3, 96),
    T.Q2_K: ([80, 82], 3, 512),
    T.Q3_K: ([108], 3, 512),
    T.Q4_K: ([0, 2], 3, 512),
    T.Q5_K: ([0, 2], 3, 512),
    T.Q6_K: ([208], 3, 512),
}


def random_blocks(rng, qtype, halves, rows, columns):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * columns // block_size, type_size), dtype=np.uint8)
    for offset in halves:
        # |d| in [1e-3, 3e-2], either sign for the first scale (ggml's Q5_0 d is signed), positive after.
        scale = rng.uniform(1e-3, 3e-2, size=blocks.shape[0]).astype(np.float16)
        if offset == halves[0] and qtype in (T.Q5_0, T.Q6_K, T.Q3_K):
            scale = scale * rng.choice(np.array([-1, 1], dtype=np.float16), size=blocks.shape[0])
        blocks[:, offset:offset + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, columns // block_size * type_size)


def ggml_quantize(values, qtype):
    """ggml's own quantization of float32 rows (ggml_quantize_chunk, no importance matrix)."""
    import ctypes
    library = ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libggml-base.so"))
    library.ggml_quantize_chunk.restype = ctypes.c_size_t
    library.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    rows, columns = values.shape
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.zeros((rows, columns // block_size * type_size), dtype=np.uint8)
    source = np.ascontiguousarray(values, dtype=np.float32)
    written = library.ggml_quantize_chunk(int(qtype), source.ctypes.data, out.ctypes.data, 0, rows, columns, None)
    assert written == out.size
    return out


def main():
    rng = np.random.default_rng(20261205)
    writer = gguf.GGUFWriter(OUT, "conclave-quant-types")
    for qtype, (halves, rows, columns) in TYPES.items():
        name = qtype.name
        q = random_blocks(rng, qtype, halves, rows, columns)
        values = gguf.quants.dequantize(q, qtype).astype(np.float32)
        assert values.shape == (rows, columns) and np.isfinite(values).all()
        writer.add_tensor(f"{name}.q", q, raw_dtype=qtype)
        writer.add_tensor(f"{name}.dequantized", values)
        if qtype in (T.Q5_0, T.Q5_1):
            source = (rng.standard_normal((rows, columns)) * 0.05).astype(np.float32)
            source[0, :32] = 0  # an all-zero block (d = 0)
            writer.add_tensor(f"{name}.source", source)
            writer.add_tensor(f"{name}.quantized", gguf.quants.quantize(source, qtype), raw_dtype=qtype)
    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        # Weight-like rows: Gaussian, a few outliers (what makes the scale search matter), one all-zero block.
        source = (rng.standard_normal((8, 512)) * 0.02).astype(np.float32)
        source[rng.integers(0, 8, 12), rng.integers(0, 512, 12)] *= 8
        source[1, 256:] = 0
        writer.add_tensor(f"{qtype.name}.source", source)
        writer.add_tensor(f"{qtype.name}.quantized", ggml_quantize(source, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
