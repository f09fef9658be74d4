"""A Llama forward pass in numpy float64 over a GGUF's weights as gguf-py dequantizes them: the reference for
quantized files that does not depend on Conclave's code (nor on llama.cpp's kernels). GGUF's Q/K rows are
in llama.cpp's permuted order, so RoPE rotates adjacent pairs (llama.cpp's LLAMA_ROPE_TYPE_NORM)."""
import numpy as np

import gguf


class GGUFLlama:
    def __init__(self, path):
        reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in reader.tensors}
        self.cache = {}

        def field(key):
            f = reader.fields[key]
            return f.parts[f.data[0]][0]
        self.layers = int(field("llama.block_count"))
        self.heads = int(field("llama.attention.head_count"))
        self.kv_heads = int(field("llama.attention.head_count_kv"))
        self.hidden = int(field("llama.embedding_length"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(field("llama.rope.freq_base"))
        self.head_dim = self.hidden // self.heads
        self.embedding = self.weight("token_embd.weight")
        self.output = self.weight("output.weight") if "output.weight" in self.tensors else self.embedding

    def weight(self, name):
        if name not in self.cache:
            self.cache[name] = self.dequantized(name)
        return self.cache[name]

    def dequantized(self, name):
        t = self.tensors[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
            [int(d) for d in reversed(t.shape)])

    def norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.weight(name)

    def rope(self, x, positions):
        # x: (n, heads, head_dim); pairs (2i, 2i + 1) rotated by position · base^(−2i/head_dim)
        half = self.head_dim // 2
        angles = positions[:, None] * self.base ** (-np.arange(half) * 2.0 / self.head_dim)
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def logits(self, ids):
        """(n, vocab) float64 logits for the token ids."""
        n, d, hd = len(ids), self.hidden, self.head_dim
        x = self.embedding[ids]
        positions = np.arange(n, dtype=np.float64)
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for l in range(self.layers):
            p = f"blk.{l}."
            h = self.norm(x, p + "attn_norm.weight")
            q = self.rope((h @ self.weight(p + "attn_q.weight").T).reshape(n, self.heads, hd), positions)
            k = self.rope((h @ self.weight(p + "attn_k.weight").T).reshape(n, self.kv_heads, hd), positions)
            v = (h @ self.weight(p + "attn_v.weight").T).reshape(n, self.kv_heads, hd)
            group = self.heads // self.kv_heads
            attended = np.empty((n, self.heads, hd))
            for head in range(self.heads):
                scores = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                attended[:, head] = (scores / scores.sum(-1, keepdims=True)) @ v[:, head // group]
            x = x + attended.reshape(n, d) @ self.weight(p + "attn_output.weight").T
            h = self.norm(x, p + "ffn_norm.weight")
            gate, up = h @ self.weight(p + "ffn_gate.weight").T, h @ self.weight(p + "ffn_up.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.weight(p + "ffn_down.weight").T
        return self.norm(x, "output_norm.weight") @ self.output.T

    def mean_loss(self, ids):
        logits = self.logits(ids)[:-1]
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean()), logits

    def greedy(self, ids, count):
        ids, out = list(ids), []
        for _ in range(count):
            token = int(np.argmax(self.logits(ids)[-1]))
            out.append(token)
            ids.append(token)
        return out
