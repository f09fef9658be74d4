// Integer kernels for quantized weights (AVX2): activations are quantized to 8-bit blocks of 32
// (scale d = max|x| / 127, plus s = d · Σq for formats with an offset), and each weight block is
// multiplied with them by byte dot products (vpmaddubsw + vpmaddwd), as ggml does. The Swift generic
// path in `Kernels` (Linear.genericInt8Forward) computes the same sums and is the reference.
#include "ckernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE __attribute__((always_inline)) static inline

// Blocks of 32 to signed integers in [−limit, limit] (limit ≤ 127), scale max|x| / limit.
INLINE AVX2 void quantize_blocks(const float *x, int tokens, int k, int8_t *q, float *d, float *s, float limit) {
    const int blocks = k / 32;
    const __m256 signMask = _mm256_set1_ps(-0.0f);
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const float *xb = x + (size_t)t * k + 32 * b;
            __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
            __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
            __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signMask, v0), _mm256_andnot_ps(signMask, v1)),
                                     _mm256_max_ps(_mm256_andnot_ps(signMask, v2), _mm256_andnot_ps(signMask, v3)));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float amax = _mm_cvtss_f32(m4);
            const float scale = amax / limit;
            const float inverse = amax > 0 ? limit / amax : 0.0f;
            __m256 iv = _mm256_set1_ps(inverse);
            // Round half away from zero is what ggml does; nearest-even differs only on exact ties.
            __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, iv), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, iv), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, iv), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, iv), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC));
            __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum32), _mm256_extracti128_si256(sum32, 1));
            s4 = _mm_hadd_epi32(s4, s4);
            s4 = _mm_hadd_epi32(s4, s4);
            // Pack 32 int32 → 32 int8 in order: packs work per 128-bit lane, so fix the order after.
            __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
            __m256i p = _mm256_packs_epi16(p01, p23);
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + (size_t)t * k + 32 * b), p);
            d[(size_t)t * blocks + b] = scale;
            s[(size_t)t * blocks + b] = scale * (float)_mm_cvtsi128_si32(s4);
        }
    }
}

AVX2 void ck_quantize_q8_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    quantize_blocks(x, tokens, k, q, d, s, 127.0f);
}

AVX2 void ck_quantize_q7_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    quantize_blocks(x, tokens, k, q, d, s, 63.0f);
}

// One weight block as 32 bytes in element order, and its scale and offset (value = d·q + m).
// Q8_0: signed bytes, m = 0. Q4_0: nibbles 0..15 with m = −8d. Q4_1: nibbles with its own m.
INLINE AVX2 __m256i load_block(int format, const uint8_t *block, float *dw, float *mw) {
    uint16_t hd;
    memcpy(&hd, block, 2);
    *dw = _cvtsh_ss(hd);
    if (format == 8) {
        *mw = 0;
        return _mm256_loadu_si256((const __m256i *)(block + 2));
    }
    const uint8_t *nibbles;
    if (format == 2) {
        *mw = -8.0f * *dw;
        nibbles = block + 2;
    } else {
        uint16_t hm;
        memcpy(&hm, block + 2, 2);
        *mw = _cvtsh_ss(hm);
        nibbles = block + 4;
    }
    __m128i bytes = _mm_loadu_si128((const __m128i *)nibbles);
    __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(bytes), _mm_srli_epi16(bytes, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Σ over 32 byte products as 8 int32 lanes. Weights unsigned (nibbles) or signed (Q8_0, sign trick).
INLINE AVX2 __m256 block_dot(int format, __m256i w, __m256i x) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i products;
    if (format == 8) {
        products = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    } else {
        products = _mm256_maddubs_epi16(w, x);
    }
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
}

#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
// The same with vpdpbusd (one instruction for the byte products and their sums).
INLINE VNNI __m256 block_dot_vnni(int format, __m256i w, __m256i x) {
    __m256i sums = format == 8
        ? _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
        : _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
    return _mm256_cvtepi32_ps(sums);
}

INLINE AVX2 float hsum8(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// A tile of R rows × T tokens over all k; R and T are constants after inlining. Each block read
// prefetches the next-but-one tile's rows at the same place: weights stream from memory once per
// token, and the hardware prefetchers stop at 4 KiB page boundaries of the mapped file.
#define TILE_FUNCTION(TILE_NAME, ATTR, DOT)                                                            \
INLINE ATTR void TILE_NAME(int format, const uint8_t *w, size_t rowBytes, int blockBytes, int R,     \
                      const int8_t *q, const float *d, const float *s, int T, int k,                 \
                      float *y, int ldy, int accumulate) {                                           \
    const int blocks = k / 32;                                                                       \
    __m256 acc[4][4];                                                                                \
    float offset[4][4];                                                                              \
    for (int r = 0; r < R; r++)                                                                      \
        for (int t = 0; t < T; t++) { acc[r][t] = _mm256_setzero_ps(); offset[r][t] = 0; }           \
    for (int b = 0; b < blocks; b++) {                                                               \
        __m256i xv[4];                                                                               \
        float dx[4], sx[4];                                                                          \
        for (int t = 0; t < T; t++) {                                                                \
            xv[t] = _mm256_loadu_si256((const __m256i *)(q + (size_t)t * k + 32 * b));               \
            dx[t] = d[(size_t)t * blocks + b];                                                       \
            sx[t] = s[(size_t)t * blocks + b];                                                       \
        }                                                                                            \
        for (int r = 0; r < R; r++) {                                                                \
            float dw, mw;                                                                            \
            const uint8_t *block = w + r * rowBytes + (size_t)b * blockBytes;                        \
            _mm_prefetch((const char *)(block + 2 * R * rowBytes), _MM_HINT_T0);                     \
            __m256i wv = load_block(format, block, &dw, &mw);                                        \
            for (int t = 0; t < T; t++) {                                                            \
                acc[r][t] = _mm256_fmadd_ps(DOT(format, wv, xv[t]), _mm256_set1_ps(dw * dx[t]), acc[r][t]); \
                offset[r][t] += mw * sx[t];                                                          \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    for (int t = 0; t < T; t++) {                                                                    \
        float *yt = y + (size_t)t * ldy;                                                             \
        for (int r = 0; r < R; r++) {                                                                \
            float v = hsum8(acc[r][t]) + offset[r][t];                                               \
            if (accumulate) yt[r] += v; else yt[r] = v;                                              \
        }                                                                                            \
    }                                                                                                \
}

TILE_FUNCTION(tile, AVX2, block_dot)
TILE_FUNCTION(tile_vnni, VNNI, block_dot_vnni)

#define TILE(R, T) TILE_FN(format, w + (size_t)row * rowBytes, rowBytes, blockBytes, R, \
                        q + (size_t)t * k, d + (size_t)t * blocks, s + (size_t)t * blocks, T, k, \
                        y + (size_t)t * ldy + row, ldy, accumulate)

// Specialised per format so the format branches fold away inside the tiles.
#define GEMM_FOR_FORMAT(NAME, FORMAT, ATTR)                                                         \
    ATTR static void NAME(const uint8_t *w, size_t rowBytes, int rows, const int8_t *q,             \
                          const float *d, const float *s, int tokens, int k, float *y, int ldy,     \
                          int accumulate) {                                                         \
        const int format = FORMAT;                                                                  \
        const int blockBytes = FORMAT == 8 ? 34 : (FORMAT == 2 ? 18 : 20);                          \
        const int blocks = k / 32;                                                                  \
        int row = 0;                                                                                \
        for (; row + 4 <= rows; row += 4) {                                                         \
            int t = 0;                                                                              \
            for (; t + 2 <= tokens; t += 2) TILE(4, 2);                                             \
            for (; t < tokens; t++) TILE(4, 1);                                                     \
        }                                                                                           \
        for (; row < rows; row++) {                                                                 \
            int t = 0;                                                                              \
            for (; t + 2 <= tokens; t += 2) TILE(1, 2);                                             \
            for (; t < tokens; t++) TILE(1, 1);                                                     \
        }                                                                                           \
    }

#define TILE_FN tile
GEMM_FOR_FORMAT(gemm_q8_0, 8, AVX2)
GEMM_FOR_FORMAT(gemm_q4_0, 2, AVX2)
GEMM_FOR_FORMAT(gemm_q4_1, 3, AVX2)
#undef TILE_FN
#define TILE_FN tile_vnni
GEMM_FOR_FORMAT(gemm_q8_0_vnni, 8, VNNI)
GEMM_FOR_FORMAT(gemm_q4_0_vnni, 2, VNNI)
GEMM_FOR_FORMAT(gemm_q4_1_vnni, 3, VNNI)
#undef TILE_FN

AVX2 void ck_gemm_q8_avx2(int format, const void *weights, size_t rowBytes, int rows,
                          const int8_t *q, const float *d, const float *s, int tokens, int k,
                          float *y, int ldy, int accumulate) {
    const uint8_t *w = (const uint8_t *)weights;
    if (format < 0) {  // the VNNI variants: format negated
        switch (-format) {
        case 8: gemm_q8_0_vnni(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        case 2: gemm_q4_0_vnni(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        case 3: gemm_q4_1_vnni(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        }
        return;
    }
    switch (format) {
    case 8: gemm_q8_0(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    case 2: gemm_q4_0(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    case 3: gemm_q4_1(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    }
}

#else
void ck_quantize_q8_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    (void)x; (void)tokens; (void)k; (void)q; (void)d; (void)s;
}
void ck_quantize_q7_avx2(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    (void)x; (void)tokens; (void)k; (void)q; (void)d; (void)s;
}
void ck_gemm_q8_avx2(int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *s, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    (void)format; (void)weights; (void)rowBytes; (void)rows; (void)q; (void)d; (void)s;
    (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
#endif

// ---------------------------------------------------------------------------------------------
// Prompt-sized products (many tokens): weight rows are unpacked once per panel into an interleaved
// layout where lane l of a 32-byte vector holds four bytes of block 8g + l, so that eight byte-dot
// steps leave one whole block's integer sum in each lane; scales are then applied eight blocks at a
// time. Activations are interleaved the same way, once per call. Blocks are padded with zeros to a
// multiple of eight (zero scales), so any k that is a multiple of 32 works.
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__) || defined(__i386__)

int ck_has_avx512_vnni(void) {
    __builtin_cpu_init();
    return ck_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
}

size_t ck_interleaved_bytes(int tokens, int k) {
    const size_t groups = ((size_t)k / 32 + 7) / 8;
    return (size_t)tokens * groups * (256 + 64);  // 8 blocks of 32 bytes, 8 scales, 8 offsets
}

// Layout per token and group: 256 bytes of values, then 8 floats d, then 8 floats s.
AVX2 void ck_interleave_q8(const int8_t *q, const float *d, const float *s, int tokens, int k, void *out) {
    const int blocks = k / 32, groups = (blocks + 7) / 8;
    uint8_t *o = (uint8_t *)out;
    for (int t = 0; t < tokens; t++) {
        for (int g = 0; g < groups; g++, o += 320) {
            float *od = (float *)(o + 256), *os = (float *)(o + 288);
            for (int l = 0; l < 8; l++) {
                const int b = 8 * g + l;
                if (b < blocks) {
                    const int8_t *src = q + (size_t)t * k + 32 * b;
                    for (int j = 0; j < 8; j++) memcpy(o + 32 * j + 4 * l, src + 4 * j, 4);
                    od[l] = d[(size_t)t * blocks + b];
                    os[l] = s[(size_t)t * blocks + b];
                } else {
                    for (int j = 0; j < 8; j++) memset(o + 32 * j + 4 * l, 0, 4);
                    od[l] = 0;
                    os[l] = 0;
                }
            }
        }
    }
}

// One row of weights into the same layout: unsigned nibbles (Q4_0, Q4_1) or signed bytes (Q8_0),
// with per-block scale dw and offset mw (value = dw·q + mw).
AVX2 static void interleave_row(int format, const uint8_t *row, int k, uint8_t *o) {
    const int blocks = k / 32, groups = (blocks + 7) / 8;
    const int blockBytes = format == 8 ? 34 : (format == 2 ? 18 : 20);
    for (int g = 0; g < groups; g++, o += 320) {
        float *od = (float *)(o + 256), *om = (float *)(o + 288);
        for (int l = 0; l < 8; l++) {
            const int b = 8 * g + l;
            uint8_t values[32];
            if (b < blocks) {
                float dw, mw;
                __m256i v = load_block(format, row + (size_t)b * blockBytes, &dw, &mw);
                _mm256_storeu_si256((__m256i *)values, v);
                od[l] = dw;
                om[l] = mw;
            } else {
                memset(values, 0, 32);
                od[l] = 0;
                om[l] = 0;
            }
            for (int j = 0; j < 8; j++) memcpy(o + 32 * j + 4 * l, values + 4 * j, 4);
        }
    }
}

// The panel product, one variant per dot instruction. R rows × T tokens per tile.
#define PANEL_KERNEL(NAME, ATTR, DOT)                                                                   \
    ATTR static void NAME(int format, const uint8_t *panel, int rows, const uint8_t *x, int tokens,    \
                          int groups, int groupStart, int groupCount, float *y, int ldy, int accumulate) { \
        const size_t stride = (size_t)groups * 320;                                                     \
        for (int r0 = 0; r0 < rows; r0 += 2) {                                                          \
            const int R = rows - r0 >= 2 ? 2 : 1;                                                       \
            for (int t0 = 0; t0 < tokens; t0 += 4) {                                                    \
                const int T = tokens - t0 >= 4 ? 4 : tokens - t0;                                       \
                __m256 acc[2][4];                                                                       \
                for (int r = 0; r < 2; r++) for (int t = 0; t < 4; t++) acc[r][t] = _mm256_setzero_ps(); \
                for (int g = groupStart; g < groupStart + groupCount; g++) {                            \
                    __m256i iacc[2][4];                                                                 \
                    for (int r = 0; r < 2; r++) for (int t = 0; t < 4; t++) iacc[r][t] = _mm256_setzero_si256(); \
                    const uint8_t *wg[2], *xg[4];                                                       \
                    for (int r = 0; r < 2; r++) wg[r] = panel + (size_t)(r0 + (r < R ? r : 0)) * stride + (size_t)g * 320; \
                    for (int t = 0; t < 4; t++) xg[t] = x + (size_t)(t0 + (t < T ? t : 0)) * stride + (size_t)g * 320; \
                    for (int j = 0; j < 8; j++) {                                                       \
                        __m256i wv0 = _mm256_loadu_si256((const __m256i *)(wg[0] + 32 * j));            \
                        __m256i wv1 = _mm256_loadu_si256((const __m256i *)(wg[1] + 32 * j));            \
                        for (int t = 0; t < 4; t++) {                                                   \
                            __m256i xv = _mm256_loadu_si256((const __m256i *)(xg[t] + 32 * j));         \
                            iacc[0][t] = DOT(format, iacc[0][t], wv0, xv);                              \
                            iacc[1][t] = DOT(format, iacc[1][t], wv1, xv);                              \
                        }                                                                               \
                    }                                                                                   \
                    for (int r = 0; r < 2; r++) {                                                       \
                        __m256 dw = _mm256_loadu_ps((const float *)(wg[r] + 256));                      \
                        __m256 mw = _mm256_loadu_ps((const float *)(wg[r] + 288));                      \
                        for (int t = 0; t < 4; t++) {                                                   \
                            __m256 dx = _mm256_loadu_ps((const float *)(xg[t] + 256));                  \
                            __m256 sx = _mm256_loadu_ps((const float *)(xg[t] + 288));                  \
                            acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][t]), _mm256_mul_ps(dw, dx), acc[r][t]); \
                            acc[r][t] = _mm256_fmadd_ps(mw, sx, acc[r][t]);                             \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
                for (int r = 0; r < R; r++)                                                             \
                    for (int t = 0; t < T; t++) {                                                       \
                        float v = hsum8(acc[r][t]);                                                     \
                        float *out = y + (size_t)(t0 + t) * ldy + r0 + r;                               \
                        if (accumulate) *out += v; else *out = v;                                       \
                    }                                                                                   \
            }                                                                                           \
        }                                                                                               \
    }

// AVX2: u8·s8 pairs to int16 (vpmaddubsw), then pairs to int32 (vpmaddwd). Nibbles (≤ 15) cannot
// saturate the int16 step; Q8_0 uses the sign trick (|w| · sign(x, w)), ≤ 2·128·127 < 32768.
INLINE AVX2 __m256i dot_avx2(int format, __m256i acc, __m256i w, __m256i x) {
    __m256i p = format == 8 ? _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
                            : _mm256_maddubs_epi16(w, x);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// AVX-512 VNNI: u8·s8 quadruples straight into int32 lanes (vpdpbusd), no intermediate saturation.
INLINE VNNI __m256i dot_vnni(int format, __m256i acc, __m256i w, __m256i x) {
    return format == 8 ? _mm256_dpbusd_epi32(acc, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
                       : _mm256_dpbusd_epi32(acc, w, x);
}

PANEL_KERNEL(panel_avx2, AVX2, dot_avx2)
PANEL_KERNEL(panel_vnni, VNNI, dot_vnni)

void ck_gemm_q8_panel(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                      const void *interleaved, int tokens, int k, float *y, int ldy, int accumulate) {
    const int groups = (k / 32 + 7) / 8;
    enum { PANEL_ROWS = 16 };
    uint8_t panel[PANEL_ROWS * 8 * 320];  // up to 64 blocks per row on the stack; larger k loops below
    const size_t stride = (size_t)groups * 320;
    if ((size_t)PANEL_ROWS * stride > sizeof(panel)) {
        // Very wide rows: one row at a time.
        for (int r = 0; r < rows; r++) {
            uint8_t *big = (uint8_t *)__builtin_alloca(stride);
            interleave_row(format, (const uint8_t *)weights + (size_t)r * rowBytes, k, big);
            if (use_vnni) panel_vnni(format, big, 1, interleaved, tokens, groups, 0, groups, y + r, ldy, accumulate);
            else panel_avx2(format, big, 1, interleaved, tokens, groups, 0, groups, y + r, ldy, accumulate);
        }
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += PANEL_ROWS) {
        const int count = rows - r0 < PANEL_ROWS ? rows - r0 : PANEL_ROWS;
        for (int r = 0; r < count; r++)
            interleave_row(format, (const uint8_t *)weights + (size_t)(r0 + r) * rowBytes, k, panel + (size_t)r * stride);
        if (use_vnni) panel_vnni(format, panel, count, interleaved, tokens, groups, 0, groups, y + r0, ldy, accumulate);
        else panel_avx2(format, panel, count, interleaved, tokens, groups, 0, groups, y + r0, ldy, accumulate);
    }
}

#else
int ck_has_avx512_vnni(void) { return 0; }
size_t ck_interleaved_bytes(int tokens, int k) { (void)tokens; (void)k; return 0; }
void ck_interleave_q8(const int8_t *q, const float *d, const float *s, int tokens, int k, void *out) {
    (void)q; (void)d; (void)s; (void)tokens; (void)k; (void)out;
}
void ck_gemm_q8_panel(int use_vnni, int format, const void *weights, size_t rowBytes, int rows,
                      const void *interleaved, int tokens, int k, float *y, int ldy, int accumulate) {
    (void)use_vnni; (void)format; (void)weights; (void)rowBytes; (void)rows; (void)interleaved;
    (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
#endif
