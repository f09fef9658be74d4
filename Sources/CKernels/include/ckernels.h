#ifndef CONCLAVE_CKERNELS_H
#define CONCLAVE_CKERNELS_H
// Hot numeric kernels with run-time CPU-feature dispatch (AVX2+FMA+F16C, else none: the Swift
// generic path in `Kernels` is the fallback and the reference). Block layouts are ggml's.
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

/// Σ a[i]·b[i] with AVX2 FMA.
float ck_dot_avx2(const float *a, const float *b, size_t n);
#endif
