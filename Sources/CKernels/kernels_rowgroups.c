// Quantized weights in groups of 16 rows, for AVX-512 VNNI (vpdpbusd on 512-bit vectors).
//
// Packed once, when a matrix is first multiplied: for each group of 16 rows and each block of 32
// columns, the 16 rows' scales (f16), for Q4_1 their offsets (f16), then the weights as unsigned bytes
// interleaved so that 32-bit lane r of vector j holds row r's elements 4j..4j+3. One broadcast of four
// activation bytes against vector j is then one vpdpbusd for all 16 rows: a block costs eight of them
// and leaves each row's integer sum in its own lane, so scales apply sixteen rows at a time and no
// horizontal sum is ever needed. Generation (one token) streams each weight once, with no unpacking
// beyond a mask and a shift; prompts reuse each unpacked block for up to eight tokens.
//
// Weights are made unsigned so that they can be vpdpbusd's unsigned operand: Q4 nibbles already are
// (value = d·q + m, m = −8d for Q4_0, stored for Q4_1); Q8_0 bytes are stored as q + 128 (value =
// d·(q' − 128)). With activations x = dx·qx (qx signed bytes, sx = dx·Σqx), a block contributes
//     dw·dx·Σ q'·qx + c·sx,   c = mw (Q4_1), −8·dw (Q4_0), −128·dw (Q8_0).
// Rows past the end of the matrix are zero (zero scales) and are never stored.
#include "ckernels.h"
#include <string.h>

#define GROUP_ROWS 16
// Software prefetch distance: every cache line of the block this far ahead (the hardware prefetchers
// stop at page boundaries; a 16-row group's blocks are one contiguous stream).
#define PREFETCH_BYTES 2048

static size_t rg_block_bytes(int format) {
    switch (format) {
    case 2: return 32 + 256;       // Q4_0: 16 f16 scales, 16 rows × 16 bytes of nibbles
    case 3: return 32 + 32 + 256;  // Q4_1: scales, offsets, nibbles
    case 8: return 32 + 512;       // Q8_0: scales, 16 rows × 32 bytes
    default: return 0;
    }
}

size_t ck_rg_bytes(int format, int rows, int k) {
    const size_t groups = ((size_t)rows + GROUP_ROWS - 1) / GROUP_ROWS;
    return groups * ((size_t)k / 32) * rg_block_bytes(format);
}

// Packing is plain byte shuffling and runs once per matrix; it needs no vector instructions.
void ck_rg_pack(int format, const void *weights, size_t rowBytes, int rows, int k, void *out) {
    const int blocks = k / 32;
    const size_t blockBytes = rg_block_bytes(format);
    const size_t sourceBlockBytes = format == 8 ? 34 : (format == 2 ? 18 : 20);
    const int groups = (rows + GROUP_ROWS - 1) / GROUP_ROWS;
    uint8_t *o = (uint8_t *)out;
    for (int g = 0; g < groups; g++) {
        for (int b = 0; b < blocks; b++, o += blockBytes) {
            memset(o, 0, blockBytes);
            for (int r = 0; r < GROUP_ROWS; r++) {
                const int row = g * GROUP_ROWS + r;
                if (row >= rows) break;
                const uint8_t *src = (const uint8_t *)weights + (size_t)row * rowBytes + (size_t)b * sourceBlockBytes;
                memcpy(o + 2 * r, src, 2);                      // scale d
                if (format == 3) memcpy(o + 32 + 2 * r, src + 2, 2);  // offset m
                if (format == 8) {
                    // Element e = 4j + i goes to byte 64j + 4r + i, shifted to unsigned.
                    for (int e = 0; e < 32; e++)
                        o[32 + 64 * (e / 4) + 4 * r + e % 4] = (uint8_t)(src[2 + e] ^ 0x80);
                } else {
                    // Byte i of the nibbles holds elements i (low) and i + 16 (high); byte 4j + i goes to
                    // 64j + 4r + i of the nibble vectors, so j's low nibbles are elements 4j..4j+3 and
                    // its high nibbles 16 + 4j.. (group j + 4).
                    const uint8_t *nibbles = src + (format == 3 ? 4 : 2);
                    uint8_t *dst = o + (format == 3 ? 64 : 32);
                    for (int i = 0; i < 16; i++) dst[64 * (i / 4) + 4 * r + i % 4] = nibbles[i];
                }
            }
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RG __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
#define INLINE __attribute__((always_inline)) static inline

// The eight weight vectors of one block: vector j holds elements 4j..4j+3 of each of the 16 rows.
INLINE RG void rg_unpack(int format, const uint8_t *block, __m512i w[8]) {
    if (format == 8) {
        for (int j = 0; j < 8; j++) w[j] = _mm512_loadu_si512((const void *)(block + 32 + 64 * j));
        return;
    }
    const uint8_t *nibbles = block + (format == 3 ? 64 : 32);
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int j = 0; j < 4; j++) {
        __m512i v = _mm512_loadu_si512((const void *)(nibbles + 64 * j));
        w[j] = _mm512_and_si512(v, low);
        w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
}

INLINE RG int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// One group of 16 rows against T tokens (T a constant after inlining) over blocks [b0, b1), adding
// into acc[t]. q, d, s point at token 0 of the tile; k is the row length in elements.
INLINE RG void rg_tile(int format, const uint8_t *group, size_t blockBytes, int b0, int b1,
                       const int8_t *q, const float *d, const float *s, int k, int T, __m512 acc[8]) {
    const int blocks = k / 32;
    const float offsetScale = format == 2 ? -8.0f : -128.0f;
    for (int b = b0; b < b1; b++) {
        const uint8_t *block = group + (size_t)b * blockBytes;
        for (size_t line = 0; line < blockBytes; line += 64)
            _mm_prefetch((const char *)(block + PREFETCH_BYTES + line), _MM_HINT_T0);
        __m512i w[8];
        rg_unpack(format, block, w);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block));
        const __m512 cw = format == 3 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + 32)))
                                      : _mm512_mul_ps(dw, _mm512_set1_ps(offsetScale));
        for (int t = 0; t < T; t++) {
            const int8_t *x = q + (size_t)t * k + 32 * b;
            // Two chains so that one token alone (generation) is not latency-bound on vpdpbusd.
            __m512i i0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(load4(x)));
            __m512i i1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], _mm512_set1_epi32(load4(x + 4)));
            i0 = _mm512_dpbusd_epi32(i0, w[2], _mm512_set1_epi32(load4(x + 8)));
            i1 = _mm512_dpbusd_epi32(i1, w[3], _mm512_set1_epi32(load4(x + 12)));
            i0 = _mm512_dpbusd_epi32(i0, w[4], _mm512_set1_epi32(load4(x + 16)));
            i1 = _mm512_dpbusd_epi32(i1, w[5], _mm512_set1_epi32(load4(x + 20)));
            i0 = _mm512_dpbusd_epi32(i0, w[6], _mm512_set1_epi32(load4(x + 24)));
            i1 = _mm512_dpbusd_epi32(i1, w[7], _mm512_set1_epi32(load4(x + 28)));
            const __m512 sum = _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1));
            const float dx = d[(size_t)t * blocks + b], sx = s[(size_t)t * blocks + b];
            acc[t] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dw, _mm512_set1_ps(dx)), acc[t]);
            acc[t] = _mm512_fmadd_ps(cw, _mm512_set1_ps(sx), acc[t]);
        }
    }
}

// y rows [16g, 16g + 16) ∩ [0, rows) for T tokens, over blocks [b0, b1); adds to y when `add`.
INLINE RG void rg_group_tokens(int format, const uint8_t *group, size_t blockBytes, int b0, int b1,
                               const int8_t *q, const float *d, const float *s, int k, int T,
                               float *y, int ldy, __mmask16 mask, int add) {
    __m512 acc[8];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    rg_tile(format, group, blockBytes, b0, b1, q, d, s, k, T, acc);
    for (int t = 0; t < T; t++) {
        float *out = y + (size_t)t * ldy;
        __m512 v = acc[t];
        if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, out));
        _mm512_mask_storeu_ps(out, mask, v);
    }
}

// T from 1 to 8 as constants, so the accumulators stay in registers.
#define RG_CASE(N) case N: rg_group_tokens(FORMAT, group, blockBytes, b0, b1, qt, dt, st, k, N, yt, ldy, mask, add); break;

#define RG_GEMM(NAME, FORMAT_VALUE)                                                                      \
    RG static void NAME(const uint8_t *packed, int rows, int k, int groupStart, int groupCount,         \
                        const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy,  \
                        int accumulate) {                                                                \
        enum { FORMAT = FORMAT_VALUE };                                                                  \
        const int blocks = k / 32;                                                                       \
        const size_t blockBytes = rg_block_bytes(FORMAT);                                                \
        /* Spans of blocks keep a group's weights and a tile's activations in L1/L2 for wide rows. */   \
        const int span = 64;                                                                             \
        for (int g = groupStart; g < groupStart + groupCount; g++) {                                     \
            const uint8_t *group = packed + (size_t)g * blocks * blockBytes;                             \
            const int remaining = rows - g * GROUP_ROWS;                                                 \
            const __mmask16 mask = remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1); \
            for (int b0 = 0; b0 < blocks; b0 += span) {                                                  \
                const int b1 = blocks - b0 < span ? blocks : b0 + span;                                  \
                const int add = accumulate || b0 > 0;                                                    \
                for (int t0 = 0; t0 < tokens; t0 += 8) {                                                 \
                    const int T = tokens - t0 < 8 ? tokens - t0 : 8;                                     \
                    const int8_t *qt = q + (size_t)t0 * k;                                               \
                    const float *dt = d + (size_t)t0 * blocks, *st = s + (size_t)t0 * blocks;            \
                    float *yt = y + (size_t)t0 * ldy + (size_t)g * GROUP_ROWS;                           \
                    switch (T) { RG_CASE(1) RG_CASE(2) RG_CASE(3) RG_CASE(4)                             \
                                 RG_CASE(5) RG_CASE(6) RG_CASE(7) RG_CASE(8) }                           \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

RG_GEMM(rg_gemm_q4_0, 2)
RG_GEMM(rg_gemm_q4_1, 3)
RG_GEMM(rg_gemm_q8_0, 8)

void ck_rg_gemm(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    const uint8_t *p = (const uint8_t *)packed;
    switch (format) {
    case 2: rg_gemm_q4_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 3: rg_gemm_q4_1(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 8: rg_gemm_q8_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    }
}
#else
void ck_rg_gemm(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    (void)format; (void)packed; (void)rows; (void)k; (void)groupStart; (void)groupCount; (void)q; (void)d;
    (void)s; (void)tokens; (void)y; (void)ldy; (void)accumulate;
}
#endif
