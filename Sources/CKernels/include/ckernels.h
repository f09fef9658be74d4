#ifndef CONCLAVE_CKERNELS_H
#define CONCLAVE_CKERNELS_H
// Hot numeric kernels with run-time CPU-feature dispatch (x86: AVX2+FMA+F16C, AVX-512 VNNI; aarch64:
// NEON, with or without the dot-product extension; else none: the Swift generic path in `Kernels` is the
// fallback and the reference). Block layouts are ggml's. Every function is defined on every architecture;
// a tier's functions may only be called where its ck_has_* says so.
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU can run the AVX2 kernels below (AVX2, FMA and F16C), else 0.
int ck_has_avx2(void);

/// Dequantizes `count` elements (a multiple of 32 for quantized formats) of one row.
/// format: 0 = f32, 1 = f16, 2 = q4_0, 3 = q4_1, 8 = q8_0 (ggml type numbers).
void ck_dequantize_row_avx2(int format, const void *source, float *out, size_t count);

/// y[t * ldy + r] (+)= dot(w[r * k ...], x[t * k ...]) for r < rows, t < tokens: a panel of float rows
/// against every token, 4 rows × 1 token per inner step so each loaded x vector serves 4 rows.
void ck_panel_gemm_avx2(const float *w, int rows, const float *x, int tokens, int k,
                        float *y, int ldy, int accumulate);

/// out[j] = scale · Σ_i x[i]·rows[j·stride + i] for j < count (four rows per pass), AVX2 FMA.
void ck_dot_rows_avx2(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out);

/// out[i] (+)= Σ_j c[j]·rows[j·stride + i] for i < n (attention's weighted sum of value rows), AVX2 FMA,
/// 64 columns per pass over the rows.
void ck_weighted_rows_avx2(float *out, const float *rows, size_t stride, const float *c, int count, int n,
                           int accumulate);
/// The same with coefficients c[j·cstride] (a column of attention's probabilities: dV = Pᵀ·dO).
void ck_weighted_rows_strided_avx2(float *out, const float *rows, size_t stride, const float *c, size_t cstride,
                                   int count, int n, int accumulate);

/// out[r·outStride + c] = scale · Σ_k a[r·aRow + k·aDepth] · b[k·bStride + c] (+ out[r·outStride + c] when
/// `accumulate`) for r < rows, c < columns, k < depth: a small matrix product, AVX2 FMA, four rows × 16 columns per
/// pass so that each loaded vector of b serves four rows of a (attention's blocks of query or key rows).
void ck_tile_product_avx2(int rows, int columns, int depth, float scale, const float *a, size_t aRow, size_t aDepth,
                          const float *b, size_t bStride, float *out, size_t outStride, int accumulate);

/// ck_tile_product_avx2 on AVX-512F: four rows × 64 columns per pass (sixteen zmm accumulators), the last columns
/// under a lane mask; check ck_has_avx512_vnni first (the tier that runs it).
void ck_tile_product_avx512(int rows, int columns, int depth, float scale, const float *a, size_t aRow, size_t aDepth,
                            const float *b, size_t bStride, float *out, size_t outStride, int accumulate);

/// Σ e^(x[i] − shift) over n elements, each also stored to out[i] unless `out` is NULL (it may be x): Exponential's
/// `exponentiate` on AVX-512F, its lanes bit-for-bit the Swift ones, its float partial sums added to a double every
/// 1,024 elements as there (only the order of each partial's 16 lanes may differ); check ck_has_avx512_vnni first.
double ck_exponentiate_avx512(const float *x, float *out, size_t n, float shift);

/// The largest of x[0..<n] (NaN skipped, −∞ for n = 0): Exponential's `largest` on AVX-512F; check
/// ck_has_avx512_vnni first.
float ck_maximum_avx512(const float *x, size_t n);

/// out[i] = SiLU(gate[i])·up[i] over n elements (out may be gate or up): Activation's `swiglu` on AVX-512F, each lane
/// bit-for-bit the Swift one; check ck_has_avx512_vnni first.
void ck_swiglu_avx512(const float *gate, const float *up, float *out, size_t n);

/// SwiGLU's gradients with respect to gate and up from the output's: Backward's `swigluBackward` on AVX-512F, each
/// lane bit-for-bit the Swift one; check ck_has_avx512_vnni first.
void ck_swiglu_backward_avx512(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                               float *gradUp, size_t n);

/// `ck_swiglu_avx512`, `ck_swiglu_backward_avx512` and `ck_maximum_avx512` on AVX2, each lane bit-for-bit the Swift
/// one; check ck_has_avx2 first.
void ck_swiglu_avx2(const float *gate, const float *up, float *out, size_t n);
void ck_swiglu_backward_avx2(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                             float *gradUp, size_t n);
float ck_maximum_avx2(const float *x, size_t n);

/// Σ a[i]·b[i] with AVX2 FMA.
float ck_dot_avx2(const float *a, const float *b, size_t n);

/// Quantizes `tokens` rows of `k` floats (k a multiple of 32) to 8-bit blocks of 32: q[t·k + i],
/// scales d[t·(k/32) + b] = max|x|/127 and offsets s[t·(k/32) + b] = d·Σq (round to nearest even).
void ck_quantize_q8_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s);
/// The same with 7-bit values: q in [−63, 63], d = max|x|/63. For ck_rg_gemm_avx2's format 9, where
/// signed activations meet unsigned 8-bit weights in vpmaddubsw without saturating it.
void ck_quantize_q7_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s);

/// y[t·ldy + r] (+)= Σ over blocks of W[r] · x[t], with x quantized by ck_quantize_q8_avx2 and
/// W in ggml's Q8_0 (8), Q4_0 (2) or Q4_1 (3) layout, `rowBytes` bytes per row.
/// A negated format (−8, −2, −3) runs the AVX-512 VNNI variant (check ck_has_avx512_vnni first).
void ck_gemm_q8_avx2(int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *s, int tokens, int k,
                     float *y, int ldy, int accumulate);

/// 1 when this CPU also has AVX-512 F/VL/BW and VNNI (vpdpbusd on 256-bit vectors).
int ck_has_avx512_vnni(void);

/// Bytes `ck_interleave_q8` writes for `tokens` rows of width `k`.
size_t ck_interleaved_bytes(int tokens, int k);

/// Quantized activations (as from ck_quantize_q8_avx2) in the interleaved layout of the panel product.
void ck_interleave_q8(const int8_t *q, const float *d, const float *s, int tokens, int k, void *out);

/// y[t·ldy + r] (+)= W[r] · x[t] for many tokens: rows unpacked and interleaved once per panel of 16,
/// then eight blocks per vector; `use_vnni` selects vpdpbusd (check ck_has_avx512_vnni first).
void ck_gemm_q8_panel(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                      const void *interleaved, int tokens, int k, float *y, int ldy, int accumulate);

/// Bytes of a `rows` × `k` matrix of ggml type `format` (8 = Q8_0, 2 = Q4_0, 3 = Q4_1, 6 = Q5_0) in groups of
/// 16 rows (see kernels_rowgroups.c): the format's own size, rows padded to a multiple of 16.
size_t ck_rg_bytes(int format, int rows, int k);

/// Packs `rows` rows of ggml blocks (`rowBytes` each) into 16-row groups (ck_rg_bytes bytes at `out`).
void ck_rg_pack(int format, const void *weights, size_t rowBytes, int rows, int k, void *out);

/// y[t·ldy + r] (+)= W[r] · x[t] for the rows of groups [groupStart, groupStart + groupCount) (rows past
/// `rows` are not written), with x quantized by ck_quantize_q8_avx2. `y` points at row 0 of token 0.
/// AVX-512 VNNI only: check ck_has_avx512_vnni first.
void ck_rg_gemm(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate);

/// ck_rg_gemm on AVX2 (vpmaddubsw + vpmaddwd, eight rows per vector) over the same packed groups; check
/// ck_has_avx2 first. Format 9 is Q8_0 packed as format 8, multiplied with 7-bit activations
/// (ck_quantize_q7_avx2): the stored unsigned bytes go straight into vpmaddubsw, with no sign trick.
void ck_rg_gemm_avx2(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                     const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate);

// ---- Q5_0, Q5_1 and the K-quants (kernels_kquants.c) ---------------------------------------------------
// Layouts: ggml's (the table in Kernels/QuantBlocks.swift). Each row is decoded once into int8 values with a
// scale and an offset per 16 (value = scale·q + offset), then multiplied with every token.

/// y[t·ldy + r] (+)= W[r] · x[t] for `rows` rows of ggml type `format` (6 = Q5_0, 7 = Q5_1, 10 = Q2_K,
/// 11 = Q3_K, 12 = Q4_K, 13 = Q5_K, 14 = Q6_K; `rowBytes` each, k a multiple of the block), x quantized by
/// ck_quantize_q8 (q, d per 32) and `sums16[t·(k/16) + g]` = d·Σq over activations 16g..16g+15 (the factor
/// of the offsets). `use_vnni` selects vpdpbusd (check ck_has_avx512_vnni first); else AVX2 (check ck_has_avx2).
void ck_gemm_kq_avx2(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate);

/// Decodes `count` values (whole blocks) of one row of `format` into q[i], scales[i/16], offsets[i/16]
/// (AVX2; check ck_has_avx2 first): the first step of ck_gemm_kq_avx2, exposed for the tests.
void ck_kq_decode_row_avx2(int format, const void *row, int count, int8_t *q, float *scales, float *offsets);

// ---- aarch64 (kernels_neon.c) ----------------------------------------------------------------------
// The same operations as the AVX2 functions of the same name, with the same arguments, layouts and
// roundings.

/// 1 on aarch64 (Advanced SIMD is part of its baseline), else 0.
int ck_has_neon(void);

/// 1 when this aarch64 CPU has the dot-product extension (sdot; HWCAP_ASIMDDP on Linux,
/// hw.optional.arm.FEAT_DotProd on Darwin), else 0.
int ck_has_neon_dotprod(void);

void ck_dequantize_row_neon(int format, const void *source, float *out, size_t count);
void ck_panel_gemm_neon(const float *w, int rows, const float *x, int tokens, int k, float *y, int ldy, int accumulate);
void ck_dot_rows_neon(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out);
float ck_dot_neon(const float *a, const float *b, size_t n);
void ck_quantize_q8_neon(const float *x, int tokens, int k, int8_t *q, float *d, float *s);

/// ck_gemm_q8_avx2's product for any number of tokens (4 × 4 tiles); `use_dotprod` selects sdot (check
/// ck_has_neon_dotprod first), else plain NEON (vmull_s8, vpadalq_s16). format: 8, 2 or 3.
void ck_gemm_q8_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *s, int tokens, int k,
                     float *y, int ldy, int accumulate);

/// ck_gemm_kq_avx2's product on aarch64 (formats 6, 7, 10-14; sums16 as there): each row decoded once, then
/// 4 tokens at a time; `use_dotprod` selects sdot (check ck_has_neon_dotprod first), else plain NEON.
/// ck_dequantize_row_neon takes these formats too (value = scale·q + offset per element, not fused).
void ck_gemm_kq_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate);

/// ck_kq_decode_row_avx2 on aarch64: the first step of ck_gemm_kq_neon.
void ck_kq_decode_row_neon(int format, const void *row, int count, int8_t *q, float *scales, float *offsets);

// ---- this architecture's float kernels, by operation -----------------------------------------------
// The float32 kernels have one vector tier per architecture (AVX2 on x86-64, NEON on aarch64), so the
// choice is made here, at compile time; the caller checks that a tier exists (ck_has_avx2() or
// ck_has_neon(): KernelBackend.hasCKernels). The int8 products differ within an architecture
// (vpmaddubsw/vpdpbusd, plain NEON/sdot) and are called by their tier's name.
#if defined(__aarch64__)
#define CK_ARCH(name) name##_neon
#else
#define CK_ARCH(name) name##_avx2
#endif
static inline void ck_dequantize_row(int format, const void *source, float *out, size_t count) {
    CK_ARCH(ck_dequantize_row)(format, source, out, count);
}
static inline void ck_panel_gemm(const float *w, int rows, const float *x, int tokens, int k, float *y, int ldy,
                                 int accumulate) {
    CK_ARCH(ck_panel_gemm)(w, rows, x, tokens, k, y, ldy, accumulate);
}
static inline void ck_dot_rows(const float *x, const float *rows, size_t stride, int count, int n, float scale,
                               float *out) {
    CK_ARCH(ck_dot_rows)(x, rows, stride, count, n, scale, out);
}
static inline float ck_dot(const float *a, const float *b, size_t n) { return CK_ARCH(ck_dot)(a, b, n); }
static inline void ck_quantize_q8(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    CK_ARCH(ck_quantize_q8)(x, tokens, k, q, d, s);
}
#undef CK_ARCH
#endif
