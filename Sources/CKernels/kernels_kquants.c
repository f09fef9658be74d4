// Products of Q5_0, Q5_1 and K-quant weights with int8 activations, AVX2 and AVX-512 VNNI. Each row is
// decoded once into int8 values (32 per vector) with a scale and an offset per 16 values, as the Swift
// reference `QuantBlocks.decode` does, then multiplied with every token: one maddubs/madd (or vpdpbusd)
// per 32 values gives eight int32 lanes, lanes 0-3 covering the first 16 values and 4-7 the second, so the
// two groups' scales multiply them as one vector. The offsets' term is Σ_g offset_g·sums16_g per token.
#include "ckernels.h"
#include "kq_layout.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KQ_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

KQ_AVX2 static inline float kq_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

// Byte e of the result is 0xFF where bit e of `bits` is set, else 0.
KQ_AVX2 static inline __m256i kq_bits_to_bytes(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                              0x0202020202020202, 0x0303030303030303);
    const __m256i mask = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread), mask);
    return _mm256_cmpeq_epi8(v, mask);
}

// Bit `shift` of every byte of v, moved to bit `to` (v >> shift & 1) << to.
KQ_AVX2 static inline __m256i kq_bit(__m256i v, int shift, int to) {
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), one);
    return _mm256_sll_epi16(bit, _mm_cvtsi32_si128(to));
}

KQ_AVX2 static inline void kq_store(int8_t *q, __m256i v) { _mm256_storeu_si256((__m256i *)q, v); }

// Q4_K/Q5_K's 6-bit scale and min of sub-block j from the 12 packed bytes.
static inline void kq_scale_min(const uint8_t *p, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = p[j] & 63;
        *m = p[j + 4] & 63;
    } else {
        *sc = (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4);
        *m = (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
    }
}

// One block into q (32 or 256 values), scales and offsets (one per 16 values).
KQ_AVX2 static void kq_decode_block(int format, const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    switch (format) {
    case 6: case 7: {
        const int isQ5_0 = format == 6;
        uint32_t high;
        memcpy(&high, b + (isQ5_0 ? 2 : 4), 4);
        const __m128i packed = _mm_loadu_si128((const __m128i *)(b + (isQ5_0 ? 6 : 8)));
        const __m128i m4h = _mm_set1_epi8(15);
        __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), m4h), _mm_and_si128(packed, m4h));
        v = _mm256_or_si256(v, _mm256_and_si256(kq_bits_to_bytes(high), _mm256_set1_epi8(16)));
        if (isQ5_0) v = _mm256_sub_epi8(v, _mm256_set1_epi8(16));
        kq_store(q, v);
        const float d = kq_half(b), m = isQ5_0 ? 0.0f : kq_half(b + 2);
        scales[0] = scales[1] = d;
        offsets[0] = offsets[1] = m;
        return;
    }
    case 10: {  // Q2_K: scales[16], qs[64], d, dmin
        const float d = kq_half(b + 80), dmin = kq_half(b + 82);
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * h));
            for (int s = 0; s < 4; s++)
                kq_store(q + 128 * h + 32 * s, _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * s)), m2));
        }
        for (int g = 0; g < 16; g++) {
            scales[g] = d * (float)(b[g] & 15);
            offsets[g] = -(dmin * (float)(b[g] >> 4));
        }
        return;
    }
    case 11: {  // Q3_K: hmask[32], qs[64], scales[12], d
        const float d = kq_half(b + 108);
        const __m256i hmask = _mm256_loadu_si256((const __m256i *)b), four = _mm256_set1_epi8(4);
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * h));
            for (int s = 0; s < 4; s++) {
                const __m256i low = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * s)), m2);
                // q = low − 4 unless the mask bit is set: low + 4·bit − 4.
                const __m256i kept = kq_bit(hmask, 4 * h + s, 2);
                kq_store(q + 128 * h + 32 * s, _mm256_sub_epi8(_mm256_add_epi8(low, kept), four));
            }
        }
        for (int g = 0; g < 16; g++) {
            const int low = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4;
            const int high = (b[104 + g % 4] >> (2 * (g / 4))) & 3;
            scales[g] = d * (float)((low | high << 4) - 32);
            offsets[g] = 0;
        }
        return;
    }
    case 12: case 13: {  // Q4_K: d, dmin, scales[12], qs[128]; Q5_K: qh[32] before qs
        const int isQ5 = format == 13;
        const float d = kq_half(b), dmin = kq_half(b + 2);
        const uint8_t *quants = b + (isQ5 ? 48 : 16);
        const __m256i qh = isQ5 ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(quants + 32 * c));
            __m256i low = _mm256_and_si256(v, m4), high = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (isQ5) {
                low = _mm256_or_si256(low, kq_bit(qh, 2 * c, 4));
                high = _mm256_or_si256(high, kq_bit(qh, 2 * c + 1, 4));
            }
            kq_store(q + 64 * c, low);
            kq_store(q + 64 * c + 32, high);
        }
        for (int j = 0; j < 8; j++) {
            int sc, m;
            kq_scale_min(b + 4, j, &sc, &m);
            scales[2 * j] = scales[2 * j + 1] = d * (float)sc;
            offsets[2 * j] = offsets[2 * j + 1] = -(dmin * (float)m);
        }
        return;
    }
    case 14: {  // Q6_K: ql[128], qh[64], scales[16] (int8), d
        const float d = kq_half(b + 208);
        const __m256i bias = _mm256_set1_epi8(32);
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            const __m256i low[4] = {_mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4)};
            for (int t = 0; t < 4; t++) {
                const __m256i up = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * t)), m2);
                const __m256i v = _mm256_or_si256(low[t], _mm256_slli_epi16(up, 4));
                kq_store(q + 128 * h + 32 * t, _mm256_sub_epi8(v, bias));
            }
        }
        for (int g = 0; g < 16; g++) {
            scales[g] = d * (float)(int8_t)b[192 + g];
            offsets[g] = 0;
        }
        return;
    }
    default:
        return;
    }
}


KQ_AVX2 void ck_kq_decode_row_avx2(int format, const void *row, int count, int8_t *q, float *scales, float *offsets) {
    const int size = kq_block_size(format);
    const size_t bytes = kq_block_bytes(format);
    for (int b = 0; b < count / size; b++)
        kq_decode_block(format, (const uint8_t *)row + (size_t)b * bytes, q + b * size, scales + b * (size / 16),
                        offsets + b * (size / 16));
}

KQ_AVX2 static inline float kq_hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// Eight int32 sums of four products each, w signed and x signed: |x| times w with x's sign.
KQ_AVX2 static inline __m256i kq_dot_avx2(__m256i w, __m256i x) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

KQ_VNNI static inline __m256i kq_dot_vnni(__m256i w, __m256i x) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
}

// The rows of one call: decode, then every token (two accumulators over alternate chunks).
#define KQ_GEMM(name, ATTR, DOT)                                                                                  \
    ATTR static void name(int format, const uint8_t *w, size_t rowBytes, int rows, const int8_t *q,             \
                          const float *d, const float *sums16, int tokens, int k, float *y, int ldy,             \
                          int accumulate, int8_t *wq, float *scales, float *offsets) {                          \
        const int chunks = k / 32, groups = k / 16;                                                              \
        const int hasOffsets = format == 7 || format == 10 || format == 12 || format == 13;                      \
        for (int r = 0; r < rows; r++) {                                                                         \
            ck_kq_decode_row_avx2(format, w + (size_t)r * rowBytes, k, wq, scales, offsets);                     \
            for (int t = 0; t < tokens; t++) {                                                                   \
                const int8_t *xq = q + (size_t)t * k;                                                            \
                const float *xd = d + (size_t)t * chunks;                                                        \
                __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                   \
                int c = 0;                                                                                       \
                for (; c + 2 <= chunks; c += 2) {                                                                \
                    const __m256i p0 = DOT(_mm256_loadu_si256((const __m256i *)(wq + 32 * c)),                   \
                                           _mm256_loadu_si256((const __m256i *)(xq + 32 * c)));                  \
                    const __m256i p1 = DOT(_mm256_loadu_si256((const __m256i *)(wq + 32 * c + 32)),              \
                                           _mm256_loadu_si256((const __m256i *)(xq + 32 * c + 32)));             \
                    const __m256 s0 = _mm256_mul_ps(_mm256_set_m128(_mm_set1_ps(scales[2 * c + 1]),              \
                                                                    _mm_set1_ps(scales[2 * c])),                 \
                                                    _mm256_set1_ps(xd[c]));                                      \
                    const __m256 s1 = _mm256_mul_ps(_mm256_set_m128(_mm_set1_ps(scales[2 * c + 3]),              \
                                                                    _mm_set1_ps(scales[2 * c + 2])),             \
                                                    _mm256_set1_ps(xd[c + 1]));                                  \
                    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), s0, acc0);                                    \
                    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), s1, acc1);                                    \
                }                                                                                                \
                for (; c < chunks; c++) {                                                                        \
                    const __m256i p0 = DOT(_mm256_loadu_si256((const __m256i *)(wq + 32 * c)),                   \
                                           _mm256_loadu_si256((const __m256i *)(xq + 32 * c)));                  \
                    const __m256 s0 = _mm256_mul_ps(_mm256_set_m128(_mm_set1_ps(scales[2 * c + 1]),              \
                                                                    _mm_set1_ps(scales[2 * c])),                 \
                                                    _mm256_set1_ps(xd[c]));                                      \
                    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), s0, acc0);                                    \
                }                                                                                                \
                float total = kq_hsum(_mm256_add_ps(acc0, acc1));                                                \
                if (hasOffsets) total += ck_dot_avx2(offsets, sums16 + (size_t)t * groups, (size_t)groups);      \
                float *out = y + (size_t)t * ldy + r;                                                            \
                *out = accumulate ? *out + total : total;                                                        \
            }                                                                                                    \
        }                                                                                                        \
    }

KQ_GEMM(kq_gemm_avx2, KQ_AVX2, kq_dot_avx2)
KQ_GEMM(kq_gemm_vnni, KQ_VNNI, kq_dot_vnni)

void ck_gemm_kq_avx2(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    // Per call: the decoded row (k bytes, 32-byte vectors) and its scales and offsets.
    int8_t *wq = aligned_alloc(64, ((size_t)k + 63) / 64 * 64);
    float *factors = malloc(sizeof(float) * 2 * (size_t)(k / 16));
    if (wq == NULL || factors == NULL) abort();
    if (use_vnni)
        kq_gemm_vnni(format, weights, rowBytes, rows, q, d, sums16, tokens, k, y, ldy, accumulate, wq, factors,
                     factors + k / 16);
    else
        kq_gemm_avx2(format, weights, rowBytes, rows, q, d, sums16, tokens, k, y, ldy, accumulate, wq, factors,
                     factors + k / 16);
    free(wq);
    free(factors);
}

#else
void ck_gemm_kq_avx2(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    (void)use_vnni; (void)format; (void)weights; (void)rowBytes; (void)rows; (void)q; (void)d; (void)sums16;
    (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
void ck_kq_decode_row_avx2(int format, const void *row, int count, int8_t *q, float *scales, float *offsets) {
    (void)format; (void)row; (void)count; (void)q; (void)scales; (void)offsets;
}
#endif
