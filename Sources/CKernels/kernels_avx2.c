// AVX2 + FMA + F16C kernels. Compiled with target attributes so the rest of the binary stays
// baseline x86-64; callers check ck_has_avx2() once and fall back to the Swift generic path.
#include "ckernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))

int ck_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

AVX2 static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

AVX2 static inline float half_to_float(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

// out[j] = scale · (x · rows[j·stride ...]) for j < count: four rows per pass share each loaded x
// vector, and their four sums are reduced together (attention scores: one query against the keys).
AVX2 void ck_dot_rows_avx2(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out) {
    const int vectorEnd = n / 8 * 8;
    int j = 0;
    for (; j + 4 <= count; j += 4) {
        const float *r0 = rows + (size_t)j * stride, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int i = 0; i < vectorEnd; i += 8) {
            const __m256 xv = _mm256_loadu_ps(x + i);
            a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(r0 + i), a0);
            a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(r1 + i), a1);
            a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(r2 + i), a2);
            a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(r3 + i), a3);
        }
        // Four horizontal sums at once: pairwise adds leave lane k of the result as row k's sum.
        const __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
        const __m256 h = _mm256_hadd_ps(h01, h23);
        __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        float tail[4];
        _mm_storeu_ps(tail, sums);
        for (int i = vectorEnd; i < n; i++) {
            tail[0] += x[i] * r0[i];
            tail[1] += x[i] * r1[i];
            tail[2] += x[i] * r2[i];
            tail[3] += x[i] * r3[i];
        }
        for (int k = 0; k < 4; k++) out[j + k] = tail[k] * scale;
    }
    for (; j < count; j++) out[j] = ck_dot_avx2(x, rows + (size_t)j * stride, (size_t)n) * scale;
}

AVX2 void ck_weighted_rows_avx2(float *out, const float *rows, size_t stride, const float *c, int count, int n,
                                int accumulate) {
    ck_weighted_rows_strided_avx2(out, rows, stride, c, 1, count, n, accumulate);
}

AVX2 void ck_weighted_rows_strided_avx2(float *out, const float *rows, size_t stride, const float *c, size_t cstride,
                                        int count, int n, int accumulate) {
    int i = 0;
    // 64 columns at a time: eight accumulators, enough independent FMA chains to fill both FMA units.
    for (; i + 64 <= n; i += 64) {
        __m256 a[8];
        for (int v = 0; v < 8; v++) a[v] = accumulate ? _mm256_loadu_ps(out + i + 8 * v) : _mm256_setzero_ps();
        for (int j = 0; j < count; j++) {
            const __m256 cj = _mm256_set1_ps(c[(size_t)j * cstride]);
            const float *r = rows + (size_t)j * stride + i;
            for (int v = 0; v < 8; v++) a[v] = _mm256_fmadd_ps(cj, _mm256_loadu_ps(r + 8 * v), a[v]);
        }
        for (int v = 0; v < 8; v++) _mm256_storeu_ps(out + i + 8 * v, a[v]);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = accumulate ? _mm256_loadu_ps(out + i) : _mm256_setzero_ps();
        for (int j = 0; j < count; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(c[(size_t)j * cstride]), _mm256_loadu_ps(rows + (size_t)j * stride + i), a);
        _mm256_storeu_ps(out + i, a);
    }
    for (; i < n; i++) {
        float a = accumulate ? out[i] : 0.0f;
        for (int j = 0; j < count; j++) a += c[(size_t)j * cstride] * rows[(size_t)j * stride + i];
        out[i] = a;
    }
}

// Lane masks for the last 1..7 columns of a tile: row k of the table, read from offset 8 − k, has k lanes set.
static const int32_t tail_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// One block of R rows (R ≤ 4, a constant after inlining) of ck_tile_product_avx2: 16 columns per pass, eight
// accumulators (four rows × two vectors, enough independent FMA chains for both units), each loaded vector of b
// serving the R rows; then 8 columns, then the last 1..7 under a mask.
__attribute__((always_inline)) AVX2 static inline void tile_rows(const int R, int columns, int depth, float scale,
                                                                const float *a, size_t aRow, size_t aDepth,
                                                                const float *b, size_t bStride, float *out,
                                                                size_t outStride, int accumulate) {
    const __m256 s = _mm256_set1_ps(scale);
    int col = 0;
    for (; col + 16 <= columns; col += 16) {
        __m256 acc[4][2];
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (int k = 0; k < depth; k++) {
            const float *bk = b + (size_t)k * bStride + col;
            const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
            for (int r = 0; r < R; r++) {
                const __m256 ar = _mm256_broadcast_ss(a + r * aRow + (size_t)k * aDepth);
                acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
            }
        }
        for (int r = 0; r < R; r++) {
            float *o = out + r * outStride + col;
            __m256 v0 = _mm256_mul_ps(acc[r][0], s), v1 = _mm256_mul_ps(acc[r][1], s);
            if (accumulate) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(o));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(o + 8));
            }
            _mm256_storeu_ps(o, v0);
            _mm256_storeu_ps(o + 8, v1);
        }
    }
    while (col < columns) {
        const int width = columns - col < 8 ? columns - col : 8;
        const __m256i mask = _mm256_loadu_si256((const __m256i *)(tail_mask_table + 8 - width));
        __m256 acc[4];
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
        for (int k = 0; k < depth; k++) {
            const __m256 bk = _mm256_maskload_ps(b + (size_t)k * bStride + col, mask);
            for (int r = 0; r < R; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r * aRow + (size_t)k * aDepth), bk, acc[r]);
        }
        for (int r = 0; r < R; r++) {
            float *o = out + r * outStride + col;
            __m256 v = _mm256_mul_ps(acc[r], s);
            if (accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(o, mask));
            _mm256_maskstore_ps(o, mask, v);
        }
        col += width;
    }
}

AVX2 void ck_tile_product_avx2(int rows, int columns, int depth, float scale, const float *a, size_t aRow,
                               size_t aDepth, const float *b, size_t bStride, float *out, size_t outStride,
                               int accumulate) {
    int r = 0;
    for (; r + 4 <= rows; r += 4)
        tile_rows(4, columns, depth, scale, a + r * aRow, aRow, aDepth, b, bStride, out + r * outStride, outStride,
                  accumulate);
    const float *ar = a + r * aRow;
    float *outr = out + r * outStride;
    switch (rows - r) {
    case 3: tile_rows(3, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    case 2: tile_rows(2, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    case 1: tile_rows(1, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    default: break;
    }
}

#define AVX512 __attribute__((target("avx512f,fma")))

// One tile of ck_tile_product_avx512: R rows (≤ 4) × V vectors of 16 columns (V ≤ 4, both constants after
// inlining), lanes past `columns` masked off; at R = V = 4 sixteen accumulators, four loads of b and four
// broadcasts of a per 16 FMAs.
__attribute__((always_inline)) AVX512 static inline void tile_512(const int R, const int V, int columns, int depth,
                                                                 float scale, const float *a, size_t aRow,
                                                                 size_t aDepth, const float *b, size_t bStride,
                                                                 float *out, size_t outStride, int accumulate) {
    __mmask16 mask[4];
    for (int v = 0; v < V; v++) {
        const int lanes = columns - 16 * v;
        mask[v] = lanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lanes) - 1);
    }
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
    for (int k = 0; k < depth; k++) {
        const float *bk = b + (size_t)k * bStride;
        __m512 bv[4];
        for (int v = 0; v < V; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], bk + 16 * v);
        for (int r = 0; r < R; r++) {
            const __m512 ar = _mm512_set1_ps(a[r * aRow + (size_t)k * aDepth]);
            for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
    }
    const __m512 s = _mm512_set1_ps(scale);
    for (int r = 0; r < R; r++) {
        for (int v = 0; v < V; v++) {
            float *o = out + r * outStride + 16 * v;
            __m512 x = _mm512_mul_ps(acc[r][v], s);
            if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], o));
            _mm512_mask_storeu_ps(o, mask[v], x);
        }
    }
}

__attribute__((always_inline)) AVX512 static inline void rows_512(const int R, int columns, int depth, float scale,
                                                                 const float *a, size_t aRow, size_t aDepth,
                                                                 const float *b, size_t bStride, float *out,
                                                                 size_t outStride, int accumulate) {
    for (int col = 0; col < columns; col += 64) {
        const int width = columns - col;
        const float *bc = b + col;
        float *oc = out + col;
        switch (width >= 64 ? 4 : (width + 15) / 16) {
        case 4: tile_512(R, 4, width, depth, scale, a, aRow, aDepth, bc, bStride, oc, outStride, accumulate); break;
        case 3: tile_512(R, 3, width, depth, scale, a, aRow, aDepth, bc, bStride, oc, outStride, accumulate); break;
        case 2: tile_512(R, 2, width, depth, scale, a, aRow, aDepth, bc, bStride, oc, outStride, accumulate); break;
        default: tile_512(R, 1, width, depth, scale, a, aRow, aDepth, bc, bStride, oc, outStride, accumulate); break;
        }
    }
}

AVX512 void ck_tile_product_avx512(int rows, int columns, int depth, float scale, const float *a, size_t aRow,
                                   size_t aDepth, const float *b, size_t bStride, float *out, size_t outStride,
                                   int accumulate) {
    int r = 0;
    for (; r + 4 <= rows; r += 4)
        rows_512(4, columns, depth, scale, a + r * aRow, aRow, aDepth, b, bStride, out + r * outStride, outStride,
                 accumulate);
    const float *ar = a + r * aRow;
    float *outr = out + r * outStride;
    switch (rows - r) {
    case 3: rows_512(3, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    case 2: rows_512(2, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    case 1: rows_512(1, columns, depth, scale, ar, aRow, aDepth, b, bStride, outr, outStride, accumulate); break;
    default: break;
    }
}

// Exponential.exp (Kernels/Exponential.swift) on one zmm, step for step: the same constants, the same multiplies
// and adds in the same order (no FMA), so each lane is bit-for-bit the Swift SIMD16 result.
AVX512 static inline __m512 exp_512(__m512 x) {
    const __m512 lower = _mm512_set1_ps(-87.33654f), upper = _mm512_set1_ps(88.37626f);
    const __mmask16 below = _mm512_cmp_ps_mask(x, lower, _CMP_LT_OQ), above = _mm512_cmp_ps_mask(x, upper, _CMP_GT_OQ);
    const __m512 clamped = _mm512_mask_mov_ps(_mm512_mask_mov_ps(x, below, lower), above, upper);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 shifted = _mm512_add_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504f)), magic);
    const __m512 n = _mm512_sub_ps(shifted, magic);
    __m512 r = _mm512_sub_ps(clamped, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.1219444e-4f)));
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    const __m512i exponent = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000)),
                         _mm512_set1_epi32(127)), 23);
    __m512 result = _mm512_mul_ps(p, _mm512_castsi512_ps(exponent));
    result = _mm512_mask_mov_ps(result, below, _mm512_setzero_ps());
    result = _mm512_mask_mov_ps(result, above, _mm512_set1_ps(__builtin_inff()));
    return _mm512_mask_mov_ps(result, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

AVX512 double ck_exponentiate_avx512(const float *x, float *out, size_t n, float shift) {
    const __m512 s = _mm512_set1_ps(shift);
    __m512 partial = _mm512_setzero_ps();
    double total = 0;
    size_t i = 0;
    int sinceFlush = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp_512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
        if (out) _mm512_storeu_ps(out + i, e);
        partial = _mm512_add_ps(partial, e);
        // A float partial sum per 1,024 elements, then Double: long rows (a vocabulary) keep full precision.
        if (++sinceFlush == 64) {
            total += _mm512_reduce_add_ps(partial);
            partial = _mm512_setzero_ps();
            sinceFlush = 0;
        }
    }
    total += _mm512_reduce_add_ps(partial);
    if (i < n) {
        const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        // Lanes past n hold −∞, whose exponential is 0, as the Swift tail does.
        const __m512 v = _mm512_mask_sub_ps(_mm512_set1_ps(-__builtin_inff()), tail, _mm512_maskz_loadu_ps(tail, x + i), s);
        const __m512 e = exp_512(v);
        if (out) _mm512_mask_storeu_ps(out + i, tail, e);
        total += _mm512_reduce_add_ps(e);
    }
    return total;
}

// The largest of x[0..<n], NaN skipped (it compares false), −∞ for n = 0: Exponential.largest on one zmm.
AVX512 float ck_maximum_avx512(const float *x, size_t n) {
    const __m512 lowest = _mm512_set1_ps(-__builtin_inff());
    __m512 best = lowest;
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 lanes = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_mask_loadu_ps(lowest, lanes, x + i);
        best = _mm512_mask_mov_ps(best, _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ), v);
    }
    return _mm512_reduce_max_ps(best);
}

// −x by flipping the sign bit, as Swift's prefix minus does (0 − x would keep a NaN's sign).
AVX512 static inline __m512 negate_512(__m512 x) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
}

// SiLU(g)·u, as Activation.swiglu's SIMD16 lanes: g / (1 + e^(−g)) · u, the same operations in the same order
// (exp_512 is Exponential.exp step for step), so each lane is bit-for-bit the Swift one, the tail's too.
AVX512 void ck_swiglu_avx512(const float *gate, const float *up, float *out, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 lanes = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(lanes, gate + i), u = _mm512_maskz_loadu_ps(lanes, up + i);
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp_512(negate_512(g))));
        _mm512_mask_storeu_ps(out + i, lanes, _mm512_mul_ps(silu, u));
    }
}

// SwiGLU's backward as Backward.swigluBackward's SIMD16 lanes: σ = 1 / (1 + e^(−g)), ∂u = (dy·g)·σ,
// ∂g = (dy·u)·(σ·(1 + g·(1 − σ))), the same operations in the same order, bit-for-bit the Swift lanes (its tail too).
AVX512 void ck_swiglu_backward_avx512(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                                      float *gradUp, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 lanes = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(lanes, gate + i), u = _mm512_maskz_loadu_ps(lanes, up + i);
        const __m512 dy = _mm512_maskz_loadu_ps(lanes, gradOutput + i);
        const __m512 sigmoid = _mm512_div_ps(one, _mm512_add_ps(one, exp_512(negate_512(g))));
        _mm512_mask_storeu_ps(gradUp + i, lanes, _mm512_mul_ps(_mm512_mul_ps(dy, g), sigmoid));
        const __m512 slope = _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, sigmoid)));
        // The Swift tail (its last n mod 16 elements, one at a time) associates ∂g as ((dy·u)·σ)·slope.
        const __m512 gradient = lanes == (__mmask16)0xFFFF
            ? _mm512_mul_ps(_mm512_mul_ps(dy, u), _mm512_mul_ps(sigmoid, slope))
            : _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dy, u), sigmoid), slope);
        _mm512_mask_storeu_ps(gradGate + i, lanes, gradient);
    }
}

// Exponential.exp on one ymm, step for step as exp_512: each lane bit-for-bit the Swift SIMD16 one.
AVX2 static inline __m256 exp_256(__m256 x) {
    const __m256 lower = _mm256_set1_ps(-87.33654f), upper = _mm256_set1_ps(88.37626f);
    const __m256 below = _mm256_cmp_ps(x, lower, _CMP_LT_OQ), above = _mm256_cmp_ps(x, upper, _CMP_GT_OQ);
    const __m256 clamped = _mm256_blendv_ps(_mm256_blendv_ps(x, lower, below), upper, above);
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 shifted = _mm256_add_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504f)), magic);
    const __m256 n = _mm256_sub_ps(shifted, magic);
    __m256 r = _mm256_sub_ps(clamped, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.1219444e-4f)));
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    const __m256i exponent = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000)),
                         _mm256_set1_epi32(127)), 23);
    __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
    result = _mm256_blendv_ps(result, _mm256_setzero_ps(), below);
    result = _mm256_blendv_ps(result, _mm256_set1_ps(__builtin_inff()), above);
    return _mm256_blendv_ps(result, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

AVX2 static inline __m256 negate_256(__m256 x) { return _mm256_xor_ps(x, _mm256_set1_ps(-0.0f)); }

// The lanes of x + i that lie below n: all eight, or a mask of the first n − i for maskload/maskstore.
AVX2 static inline __m256i lanes_256(size_t i, size_t n) {
    const int width = n - i < 8 ? (int)(n - i) : 8;
    return _mm256_loadu_si256((const __m256i *)(tail_mask_table + 8 - width));
}

// ck_swiglu_avx512 on ymm: each lane bit-for-bit Activation.swiglu's.
AVX2 void ck_swiglu_avx2(const float *gate, const float *up, float *out, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 8) {
        const __m256i lanes = lanes_256(i, n);
        const __m256 g = _mm256_maskload_ps(gate + i, lanes), u = _mm256_maskload_ps(up + i, lanes);
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp_256(negate_256(g))));
        _mm256_maskstore_ps(out + i, lanes, _mm256_mul_ps(silu, u));
    }
}

// ck_swiglu_backward_avx512 on ymm: each lane bit-for-bit Backward.swigluBackward's; the elements past the last
// whole 16 are the Swift tail's, whose ∂g is associated ((dy·u)·σ)·slope.
AVX2 void ck_swiglu_backward_avx2(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                                  float *gradUp, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const size_t vectorEnd = n / 16 * 16;
    for (size_t i = 0; i < n; i += 8) {
        const __m256i lanes = lanes_256(i, n);
        const __m256 g = _mm256_maskload_ps(gate + i, lanes), u = _mm256_maskload_ps(up + i, lanes);
        const __m256 dy = _mm256_maskload_ps(gradOutput + i, lanes);
        const __m256 sigmoid = _mm256_div_ps(one, _mm256_add_ps(one, exp_256(negate_256(g))));
        _mm256_maskstore_ps(gradUp + i, lanes, _mm256_mul_ps(_mm256_mul_ps(dy, g), sigmoid));
        const __m256 slope = _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, sigmoid)));
        const __m256 gradient = i < vectorEnd
            ? _mm256_mul_ps(_mm256_mul_ps(dy, u), _mm256_mul_ps(sigmoid, slope))
            : _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dy, u), sigmoid), slope);
        _mm256_maskstore_ps(gradGate + i, lanes, gradient);
    }
}

// Exponential.largest on ymm (NaN skipped, −∞ for n = 0).
AVX2 float ck_maximum_avx2(const float *x, size_t n) {
    const __m256 lowest = _mm256_set1_ps(-__builtin_inff());
    __m256 best = lowest;
    for (size_t i = 0; i < n; i += 8) {
        const __m256i lanes = lanes_256(i, n);
        const __m256 v = _mm256_blendv_ps(lowest, _mm256_maskload_ps(x + i, lanes), _mm256_castsi256_ps(lanes));
        best = _mm256_blendv_ps(best, v, _mm256_cmp_ps(v, best, _CMP_GT_OQ));
    }
    // No lane holds NaN, so max is exact whatever the order.
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(best), _mm256_extractf128_ps(best, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AVX2 float ck_dot_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// Sixteen packed nibbles → two vectors of 8 floats for elements 0..15 (low nibbles) and 16..31 (high).
AVX2 static inline void unpack_nibbles(const uint8_t *q, __m256 out[4]) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)q);
    __m128i lo = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

AVX2 void ck_dequantize_row_avx2(int format, const void *source, float *out, size_t count) {
    const uint8_t *s = (const uint8_t *)source;
    switch (format) {
    case 0:
        memcpy(out, source, count * sizeof(float));
        return;
    case 1: {
        size_t i = 0;
        for (; i + 8 <= count; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
        for (; i < count; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); out[i] = half_to_float(h); }
        return;
    }
    case 8:  // Q8_0: d, 32 × int8
        for (size_t b = 0; b < count / 32; b++, s += 34, out += 32) {
            uint16_t hd; memcpy(&hd, s, 2);
            __m256 d = _mm256_set1_ps(half_to_float(hd));
            for (int j = 0; j < 4; j++) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(s + 2 + 8 * j));
                _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
            }
        }
        return;
    case 2:  // Q4_0: d, nibbles; value = (q − 8)·d
        for (size_t b = 0; b < count / 32; b++, s += 18, out += 32) {
            uint16_t hd; memcpy(&hd, s, 2);
            __m256 d = _mm256_set1_ps(half_to_float(hd)), eight = _mm256_set1_ps(8.0f);
            __m256 v[4];
            unpack_nibbles(s + 2, v);
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(_mm256_sub_ps(v[j], eight), d));
        }
        return;
    case 3:  // Q4_1: d, m, nibbles; value = q·d + m
        for (size_t b = 0; b < count / 32; b++, s += 20, out += 32) {
            uint16_t hd, hm; memcpy(&hd, s, 2); memcpy(&hm, s + 2, 2);
            __m256 d = _mm256_set1_ps(half_to_float(hd)), m = _mm256_set1_ps(half_to_float(hm));
            __m256 v[4];
            unpack_nibbles(s + 4, v);
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + 8 * j, _mm256_fmadd_ps(v[j], d, m));
        }
        return;
    }
}

AVX2 void ck_panel_gemm_avx2(const float *w, int rows, const float *x, int tokens, int k,
                             float *y, int ldy, int accumulate) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + (size_t)r * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        for (int t = 0; t < tokens; t++) {
            const float *xt = x + (size_t)t * k;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            int i = 0;
            for (; i + 8 <= k; i += 8) {
                __m256 xv = _mm256_loadu_ps(xt + i);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
            }
            float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
            for (; i < k; i++) { s0 += w0[i] * xt[i]; s1 += w1[i] * xt[i]; s2 += w2[i] * xt[i]; s3 += w3[i] * xt[i]; }
            float *yt = y + (size_t)t * ldy + r;
            if (accumulate) { yt[0] += s0; yt[1] += s1; yt[2] += s2; yt[3] += s3; }
            else { yt[0] = s0; yt[1] = s1; yt[2] = s2; yt[3] = s3; }
        }
    }
    for (; r < rows; r++) {
        for (int t = 0; t < tokens; t++) {
            float s = ck_dot_avx2(w + (size_t)r * k, x + (size_t)t * k, (size_t)k);
            float *yt = y + (size_t)t * ldy + r;
            if (accumulate) *yt += s; else *yt = s;
        }
    }
}

#else
int ck_has_avx2(void) { return 0; }
void ck_swiglu_avx2(const float *gate, const float *up, float *out, size_t n) {
    (void)gate; (void)up; (void)out; (void)n;
}
void ck_swiglu_backward_avx2(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                             float *gradUp, size_t n) {
    (void)gate; (void)up; (void)gradOutput; (void)gradGate; (void)gradUp; (void)n;
}
float ck_maximum_avx2(const float *x, size_t n) {
    (void)x; (void)n;
    return 0;
}
float ck_maximum_avx512(const float *x, size_t n) {
    (void)x; (void)n;
    return 0;
}
void ck_swiglu_avx512(const float *gate, const float *up, float *out, size_t n) {
    (void)gate; (void)up; (void)out; (void)n;
}
void ck_swiglu_backward_avx512(const float *gate, const float *up, const float *gradOutput, float *gradGate,
                               float *gradUp, size_t n) {
    (void)gate; (void)up; (void)gradOutput; (void)gradGate; (void)gradUp; (void)n;
}
double ck_exponentiate_avx512(const float *x, float *out, size_t n, float shift) {
    (void)x; (void)out; (void)n; (void)shift;
    return 0;
}
void ck_tile_product_avx512(int rows, int columns, int depth, float scale, const float *a, size_t aRow,
                            size_t aDepth, const float *b, size_t bStride, float *out, size_t outStride, int accumulate) {
    ck_tile_product_avx2(rows, columns, depth, scale, a, aRow, aDepth, b, bStride, out, outStride, accumulate);
}
void ck_tile_product_avx2(int rows, int columns, int depth, float scale, const float *a, size_t aRow,
                          size_t aDepth, const float *b, size_t bStride, float *out, size_t outStride, int accumulate) {
    (void)rows; (void)columns; (void)depth; (void)scale; (void)a; (void)aRow; (void)aDepth; (void)b; (void)bStride;
    (void)out; (void)outStride; (void)accumulate;
}
void ck_dequantize_row_avx2(int format, const void *source, float *out, size_t count) {
    (void)format; (void)source; (void)out; (void)count;
}
void ck_panel_gemm_avx2(const float *w, int rows, const float *x, int tokens, int k, float *y, int ldy, int accumulate) {
    (void)w; (void)rows; (void)x; (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
float ck_dot_avx2(const float *a, const float *b, size_t n) { (void)a; (void)b; (void)n; return 0; }
void ck_dot_rows_avx2(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out) {
    (void)x; (void)rows; (void)stride; (void)count; (void)n; (void)scale; (void)out;
}
void ck_weighted_rows_avx2(float *out, const float *rows, size_t stride, const float *c, int count, int n,
                           int accumulate) {
    (void)out; (void)rows; (void)stride; (void)c; (void)count; (void)n; (void)accumulate;
}
void ck_weighted_rows_strided_avx2(float *out, const float *rows, size_t stride, const float *c, size_t cstride,
                                   int count, int n, int accumulate) {
    (void)out; (void)rows; (void)stride; (void)c; (void)cstride; (void)count; (void)n; (void)accumulate;
}
#endif
