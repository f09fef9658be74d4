// Quantized weights in groups of 16 rows, for AVX-512 VNNI (vpdpbusd on 512-bit vectors) and AVX2
// (vpmaddubsw + vpmaddwd on 256-bit vectors, eight rows at a time: ck_rg_gemm_avx2 at the end).
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
// (value = d·q + m, m = −8d for Q4_0, stored for Q4_1); Q5_0's five bits are too (its nibbles as Q4_0's,
// then its fifth bits as one 64-bit mask per vector, bit 4r + i for row r's element i of the vector, so
// that the unpacked byte is the nibble | 16 where the bit is set; value = d·(q' − 16)); Q8_0 bytes are
// stored as q + 128 (value = d·(q' − 128)). With activations x = dx·qx (qx signed bytes, sx = dx·Σqx), a
// block contributes
//     dw·dx·Σ q'·qx + c·sx,   c = mw (Q4_1), −8·dw (Q4_0), −16·dw (Q5_0), −128·dw (Q8_0).
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
    case 6: return 32 + 256 + 64;  // Q5_0: scales, nibbles as Q4_0's, 8 masks of fifth bits
    case 8: return 32 + 512;       // Q8_0: scales, 16 rows × 32 bytes
    case 9: return 32 + 512;       // Q8_0 packed the same, for 7-bit activations (AVX2)
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
    const size_t sourceBlockBytes = format == 8 ? 34 : format == 2 ? 18 : format == 6 ? 22 : 20;
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
                    const uint8_t *nibbles = src + (format == 3 ? 4 : format == 6 ? 6 : 2);
                    uint8_t *dst = o + (format == 3 ? 64 : 32);
                    for (int i = 0; i < 16; i++) dst[64 * (i / 4) + 4 * r + i % 4] = nibbles[i];
                }
                if (format == 6) {
                    // Bit e of qh is element e's fifth bit; vector v holds elements 4v..4v+3, so its mask
                    // (8 bytes at 288 + 8v) gets bit 4v + i of qh at bit 4r + i.
                    uint32_t qh;
                    memcpy(&qh, src + 2, 4);
                    uint8_t *masks = o + 32 + 256;
                    for (int e = 0; e < 32; e++)
                        if (qh >> e & 1) {
                            const int bit = 4 * r + e % 4;
                            masks[8 * (e / 4) + bit / 8] |= (uint8_t)(1u << (bit % 8));
                        }
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
    if (format == 6) {  // the fifth bits: one masked move of 16 per vector
        const __m512i sixteen = _mm512_set1_epi8(16);
        for (int j = 0; j < 8; j++) {
            uint64_t mask;
            memcpy(&mask, block + 32 + 256 + 8 * j, 8);
            w[j] = _mm512_or_si512(w[j], _mm512_maskz_mov_epi8(mask, sixteen));
        }
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
    const float offsetScale = format == 2 ? -8.0f : format == 6 ? -16.0f : -128.0f;
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
RG_GEMM(rg_gemm_q5_0, 6)
RG_GEMM(rg_gemm_q8_0, 8)

void ck_rg_gemm(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    const uint8_t *p = (const uint8_t *)packed;
    switch (format) {
    case 2: rg_gemm_q4_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 3: rg_gemm_q4_1(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 6: rg_gemm_q5_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 8: rg_gemm_q8_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    }
}

// ---- AVX2 (no VNNI): the same packed groups, eight rows per 256-bit vector ----------------------------
// Vector j of a block (64 bytes: rows 0..15 × four bytes) is read as two halves, rows 0..7 and 8..15.
// vpmaddubsw multiplies the unsigned weight bytes with a broadcast of four activation bytes into int16
// pairs, vpmaddwd by ones finishes each row's four-element sum in its own int32 lane. Nibbles (≤ 15)
// allow summing all eight vectors' int16 pairs before vpmaddwd (8 · 2 · 15 · 127 = 30,480 < 32,767).
// Q8_0's stored q + 128 would saturate vpmaddubsw, so its bytes go back to signed q (xor 0x80) and take
// the sign trick (|q| · sign(x, q), 2 · 128 · 127 < 32,768) with no −128 correction; each pair is widened
// by vpmaddwd before it is summed. Format 9 (training's input gradients, which can spare a bit) meets the
// stored bytes with 7-bit activations instead: no saturation (2 · 255 · 63 < 32,768), no sign trick, three
// instructions per vector where the sign trick takes four to five, and the −128 correction as Q4_0's −8.
// Q5_0's bytes (≤ 31) allow four vectors' pairs in int16 (4 · 2 · 31 · 128 = 31,744), not eight: its two
// chains are widened apart; its fifth bits are expanded from each mask's 32 bits for the half's 8 rows
// (a byte shuffle, a bit test against 1, 2, ..., 128, an or of 16).
#define RG2 __attribute__((target("avx2,fma,f16c")))

// Half h of the eight weight vectors of one block (format 8: signed q; else nibbles).
INLINE RG2 void rg2_unpack(int format, const uint8_t *block, int h, __m256i w[8]) {
    if (format == 9) {  // unsigned q + 128, as stored
        for (int j = 0; j < 8; j++) w[j] = _mm256_loadu_si256((const __m256i *)(block + 32 + 64 * j + 32 * h));
        return;
    }
    if (format == 8) {
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        for (int j = 0; j < 8; j++)
            w[j] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(block + 32 + 64 * j + 32 * h)), flip);
        return;
    }
    const uint8_t *nibbles = block + (format == 3 ? 64 : 32) + 32 * h;
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(nibbles + 64 * j));
        w[j] = _mm256_and_si256(v, low);
        w[j + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    }
    if (format == 6) {
        // Byte i of the half is bit i of the mask's 32 bits for rows 8h..8h+7: byte i / 8, tested against 1 << i % 8.
        const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
        const __m256i sixteen = _mm256_set1_epi8(16);
        for (int j = 0; j < 8; j++) {
            int32_t mask;
            memcpy(&mask, block + 32 + 256 + 8 * j + 4 * h, 4);
            const __m256i spreadMask = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(mask), spread), bits);
            w[j] = _mm256_or_si256(w[j], _mm256_and_si256(_mm256_cmpeq_epi8(spreadMask, bits), sixteen));
        }
    }
}

INLINE RG2 __m256i rg2_broadcast(const int8_t *x) {
    int32_t v;
    memcpy(&v, x, 4);
    return _mm256_set1_epi32(v);
}

// Each of eight rows' integer dot product with one block of activations x, in its int32 lane.
INLINE RG2 __m256i rg2_block_dot(int format, const __m256i w[8], const int8_t *x) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (format == 9) {  // 2 · 255 · 63 = 32,130: one vpmaddubsw cannot saturate; pairs are widened at once
        __m256i a = _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], rg2_broadcast(x)), ones);
        __m256i b = _mm256_madd_epi16(_mm256_maddubs_epi16(w[1], rg2_broadcast(x + 4)), ones);
        for (int j = 2; j < 8; j += 2) {
            a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(w[j], rg2_broadcast(x + 4 * j)), ones));
            b = _mm256_add_epi32(b, _mm256_madd_epi16(_mm256_maddubs_epi16(w[j + 1], rg2_broadcast(x + 4 * j + 4)), ones));
        }
        return _mm256_add_epi32(a, b);
    }
    if (format == 8) {
        __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
        for (int j = 0; j < 8; j += 2) {
            __m256i x0 = rg2_broadcast(x + 4 * j), x1 = rg2_broadcast(x + 4 * j + 4);
            a = _mm256_add_epi32(a, _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w[j], w[j]), _mm256_sign_epi8(x0, w[j])), ones));
            b = _mm256_add_epi32(b, _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w[j + 1], w[j + 1]), _mm256_sign_epi8(x1, w[j + 1])), ones));
        }
        return _mm256_add_epi32(a, b);
    }
    // Two chains, so one token alone is not latency-bound.
    __m256i a = _mm256_maddubs_epi16(w[0], rg2_broadcast(x));
    __m256i b = _mm256_maddubs_epi16(w[1], rg2_broadcast(x + 4));
    for (int j = 2; j < 8; j += 2) {
        a = _mm256_add_epi16(a, _mm256_maddubs_epi16(w[j], rg2_broadcast(x + 4 * j)));
        b = _mm256_add_epi16(b, _mm256_maddubs_epi16(w[j + 1], rg2_broadcast(x + 4 * j + 4)));
    }
    if (format == 6) return _mm256_add_epi32(_mm256_madd_epi16(a, ones), _mm256_madd_epi16(b, ones));
    return _mm256_madd_epi16(_mm256_add_epi16(a, b), ones);
}

// Rows 8h..8h+7 of one group against T tokens (a constant after inlining) over blocks [b0, b1).
INLINE RG2 void rg2_tile(int format, const uint8_t *group, size_t blockBytes, int h, int b0, int b1,
                         const int8_t *q, const float *d, const float *s, int k, int T, __m256 acc[4]) {
    const int blocks = k / 32;
    for (int b = b0; b < b1; b++) {
        const uint8_t *block = group + (size_t)b * blockBytes;
        if (h == 0)
            for (size_t line = 0; line < blockBytes; line += 64)
                _mm_prefetch((const char *)(block + PREFETCH_BYTES + line), _MM_HINT_T0);
        __m256i w[8];
        rg2_unpack(format, block, h, w);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 16 * h)));
        const __m256 cw = format == 3 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 32 + 16 * h)))
                                      : _mm256_mul_ps(dw, _mm256_set1_ps(format == 9 ? -128.0f : format == 6 ? -16.0f : -8.0f));
        for (int t = 0; t < T; t++) {
            const __m256 sum = _mm256_cvtepi32_ps(rg2_block_dot(format, w, q + (size_t)t * k + 32 * b));
            acc[t] = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_set1_ps(d[(size_t)t * blocks + b])), acc[t]);
            if (format != 8) acc[t] = _mm256_fmadd_ps(cw, _mm256_set1_ps(s[(size_t)t * blocks + b]), acc[t]);
        }
    }
}

// y rows [16g + 8h, +8) ∩ [0, rows) for T tokens over blocks [b0, b1); `valid` rows are written.
INLINE RG2 void rg2_half_tokens(int format, const uint8_t *group, size_t blockBytes, int h, int b0, int b1,
                                const int8_t *q, const float *d, const float *s, int k, int T,
                                float *y, int ldy, int valid, int add) {
    __m256 acc[4];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    rg2_tile(format, group, blockBytes, h, b0, b1, q, d, s, k, T, acc);
    for (int t = 0; t < T; t++) {
        float *out = y + (size_t)t * ldy;
        if (valid == 8) {
            _mm256_storeu_ps(out, add ? _mm256_add_ps(acc[t], _mm256_loadu_ps(out)) : acc[t]);
        } else {
            float v[8];
            _mm256_storeu_ps(v, acc[t]);
            for (int r = 0; r < valid; r++) out[r] = add ? out[r] + v[r] : v[r];
        }
    }
}

#define RG2_CASE(N) case N: rg2_half_tokens(FORMAT, group, blockBytes, h, b0, b1, qt, dt, st, k, N, yt, ldy, valid, add); break;

// Loop order for many tokens: spans of 64 blocks; within a span, runs of groups whose span of weights
// fits in 128 KiB (L2); within a run, chunks of 64 tokens (a chunk's span of activations, at most
// 64 × 2 KiB, also stays in L2), then the run's groups. So neither operand streams from memory once per
// tile of the other: not the activations once per group (what made the transposed output matrix, 49,152
// columns wide, memory-bound) nor a tall matrix's weights once per chunk of tokens.
#define RG2_TOKEN_CHUNK 64
#define RG2_RUN_BYTES (128 * 1024)
#define RG2_GEMM(NAME, FORMAT_VALUE)                                                                     \
    RG2 static void NAME(const uint8_t *packed, int rows, int k, int groupStart, int groupCount,        \
                         const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, \
                         int accumulate) {                                                               \
        enum { FORMAT = FORMAT_VALUE };                                                                  \
        const int blocks = k / 32;                                                                       \
        const size_t blockBytes = rg_block_bytes(FORMAT);                                                \
        const int span = 64;                                                                             \
        const int groupEnd = groupStart + groupCount;                                                    \
        for (int b0 = 0; b0 < blocks; b0 += span) {                                                      \
            const int b1 = blocks - b0 < span ? blocks : b0 + span;                                      \
            const int add = accumulate || b0 > 0;                                                        \
            const size_t spanBytes = (size_t)(b1 - b0) * blockBytes;                                     \
            const int run = spanBytes >= RG2_RUN_BYTES ? 1 : (int)(RG2_RUN_BYTES / spanBytes);           \
            for (int r0 = groupStart; r0 < groupEnd; r0 += run) {                                        \
                const int r1 = groupEnd - r0 < run ? groupEnd : r0 + run;                                \
                for (int c0 = 0; c0 < tokens; c0 += RG2_TOKEN_CHUNK) {                                   \
                    const int c1 = tokens - c0 < RG2_TOKEN_CHUNK ? tokens : c0 + RG2_TOKEN_CHUNK;        \
                    for (int g = r0; g < r1; g++) {                                                      \
                        const uint8_t *group = packed + (size_t)g * blocks * blockBytes;                 \
                        for (int h = 0; h < 2; h++) {                                                    \
                            const int remaining = rows - g * GROUP_ROWS - 8 * h;                         \
                            if (remaining <= 0) break;                                                   \
                            const int valid = remaining < 8 ? remaining : 8;                             \
                            for (int t0 = c0; t0 < c1; t0 += 4) {                                        \
                                const int T = c1 - t0 < 4 ? c1 - t0 : 4;                                 \
                                const int8_t *qt = q + (size_t)t0 * k;                                   \
                                const float *dt = d + (size_t)t0 * blocks, *st = s + (size_t)t0 * blocks; \
                                float *yt = y + (size_t)t0 * ldy + (size_t)g * GROUP_ROWS + 8 * h;       \
                                switch (T) { RG2_CASE(1) RG2_CASE(2) RG2_CASE(3) RG2_CASE(4) }           \
                            }                                                                            \
                        }                                                                                \
                    }                                                                                    \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

RG2_GEMM(rg2_gemm_q4_0, 2)
RG2_GEMM(rg2_gemm_q4_1, 3)
RG2_GEMM(rg2_gemm_q5_0, 6)
RG2_GEMM(rg2_gemm_q8_0, 8)
RG2_GEMM(rg2_gemm_q8_0_x7, 9)

void ck_rg_gemm_avx2(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                     const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    const uint8_t *p = (const uint8_t *)packed;
    switch (format) {
    case 2: rg2_gemm_q4_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 3: rg2_gemm_q4_1(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 6: rg2_gemm_q5_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 8: rg2_gemm_q8_0(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    case 9: rg2_gemm_q8_0_x7(p, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate); return;
    }
}
#else
void ck_rg_gemm(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    (void)format; (void)packed; (void)rows; (void)k; (void)groupStart; (void)groupCount; (void)q; (void)d;
    (void)s; (void)tokens; (void)y; (void)ldy; (void)accumulate;
}
void ck_rg_gemm_avx2(int format, const void *packed, int rows, int k, int groupStart, int groupCount,
                     const int8_t *q, const float *d, const float *s, int tokens, float *y, int ldy, int accumulate) {
    ck_rg_gemm(format, packed, rows, k, groupStart, groupCount, q, d, s, tokens, y, ldy, accumulate);
}
#endif
