// NEON kernels for aarch64 (Advanced SIMD is part of the ARMv8-A baseline, so they need no run-time
// check), plus int8 products with the dot-product extension (sdot, ARMv8.2 FEAT_DotProd), which is
// optional and checked at run time by ck_has_neon_dotprod(); without it the same products run on
// plain NEON (vmull_s8 + vpadalq_s16). Same layouts, roundings and sums as the AVX2 kernels and the
// Swift generic path, for Q8_0, Q4_0, Q4_1 and (below the tiles) Q5_0, Q5_1 and the K-quants;
// Tests/CKernelsCross/kernel_test.c compares each one with a scalar C reference under qemu-aarch64, with
// and without the dot-product feature (`make test-arm`).
#include "ckernels.h"
#include "kq_layout.h"
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)  // arch/arm64/include/uapi/asm/hwcap.h
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define INLINE __attribute__((always_inline)) static inline
// GCC and clang both accept this spelling; the rest of the file is baseline ARMv8-A.
#define DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

int ck_has_neon(void) { return 1; }

int ck_has_neon_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int value = 0;
    size_t size = sizeof(value);
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, NULL, 0) == 0 && value != 0;
#else
    return 0;  // no portable way to ask: the plain NEON products run
#endif
}

INLINE float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

INLINE void store_scaled(float *out, int8x16_t v, float d) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
    vst1q_f32(out, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
    vst1q_f32(out + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
    vst1q_f32(out + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
    vst1q_f32(out + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
}

// value = q·d + m for 16 unsigned nibbles (Q4_1); not fused, like the generic path.
INLINE void store_affine(float *out, uint8x16_t v, float d, float m) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_high_u8(v);
    const float32x4_t mv = vdupq_n_f32(m);
    vst1q_f32(out, vaddq_f32(vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), d), mv));
    vst1q_f32(out + 4, vaddq_f32(vmulq_n_f32(vcvtq_f32_u32(vmovl_high_u16(lo)), d), mv));
    vst1q_f32(out + 8, vaddq_f32(vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), d), mv));
    vst1q_f32(out + 12, vaddq_f32(vmulq_n_f32(vcvtq_f32_u32(vmovl_high_u16(hi)), d), mv));
}

static void kq_dequantize_row(int format, const uint8_t *s, float *out, size_t count);

void ck_dequantize_row_neon(int format, const void *source, float *out, size_t count) {
    const uint8_t *s = (const uint8_t *)source;
    switch (format) {
    case 6: case 7: case 10: case 11: case 12: case 13: case 14:  // Q5_0, Q5_1, Q2_K-Q6_K: below
        kq_dequantize_row(format, s, out, count);
        return;
    case 0:
        memcpy(out, source, count * sizeof(float));
        return;
    case 1: {
        size_t i = 0;
        for (; i + 8 <= count; i += 8) {
            const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(s + 2 * i));
            vst1q_f32(out + i, vcvt_f32_f16(vget_low_f16(h)));
            vst1q_f32(out + i + 4, vcvt_high_f32_f16(h));
        }
        for (; i < count; i++) out[i] = half_to_float(s + 2 * i);
        return;
    }
    case 8:  // Q8_0: d, 32 × int8
        for (size_t b = 0; b < count / 32; b++, s += 34, out += 32) {
            const float d = half_to_float(s);
            store_scaled(out, vld1q_s8((const int8_t *)s + 2), d);
            store_scaled(out + 16, vld1q_s8((const int8_t *)s + 18), d);
        }
        return;
    case 2:  // Q4_0: d, nibbles (byte j holds elements j and j + 16); value = (q − 8)·d
        for (size_t b = 0; b < count / 32; b++, s += 18, out += 32) {
            const float d = half_to_float(s);
            const uint8x16_t bytes = vld1q_u8(s + 2);
            const int8x16_t eight = vdupq_n_s8(8);
            store_scaled(out, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(0x0F))), eight), d);
            store_scaled(out + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4)), eight), d);
        }
        return;
    case 3:  // Q4_1: d, m, nibbles; value = q·d + m
        for (size_t b = 0; b < count / 32; b++, s += 20, out += 32) {
            const float d = half_to_float(s), m = half_to_float(s + 2);
            const uint8x16_t bytes = vld1q_u8(s + 4);
            store_affine(out, vandq_u8(bytes, vdupq_n_u8(0x0F)), d, m);
            store_affine(out + 16, vshrq_n_u8(bytes, 4), d, m);
        }
        return;
    }
}

float ck_dot_neon(const float *a, const float *b, size_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// Four rows at a time share each loaded x vector; their sums are reduced together by pairwise adds.
void ck_dot_rows_neon(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out) {
    const int vectorEnd = n / 4 * 4;
    int j = 0;
    for (; j + 4 <= count; j += 4) {
        const float *r0 = rows + (size_t)j * stride, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < vectorEnd; i += 4) {
            const float32x4_t xv = vld1q_f32(x + i);
            a0 = vfmaq_f32(a0, xv, vld1q_f32(r0 + i));
            a1 = vfmaq_f32(a1, xv, vld1q_f32(r1 + i));
            a2 = vfmaq_f32(a2, xv, vld1q_f32(r2 + i));
            a3 = vfmaq_f32(a3, xv, vld1q_f32(r3 + i));
        }
        float sums[4];
        vst1q_f32(sums, vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3)));
        for (int i = vectorEnd; i < n; i++) {
            sums[0] += x[i] * r0[i];
            sums[1] += x[i] * r1[i];
            sums[2] += x[i] * r2[i];
            sums[3] += x[i] * r3[i];
        }
        for (int k = 0; k < 4; k++) out[j + k] = sums[k] * scale;
    }
    for (; j < count; j++) out[j] = ck_dot_neon(x, rows + (size_t)j * stride, (size_t)n) * scale;
}

void ck_panel_gemm_neon(const float *w, int rows, const float *x, int tokens, int k, float *y, int ldy, int accumulate) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + (size_t)r * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        for (int t = 0; t < tokens; t++) {
            const float *xt = x + (size_t)t * k;
            float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
            int i = 0;
            for (; i + 4 <= k; i += 4) {
                const float32x4_t xv = vld1q_f32(xt + i);
                a0 = vfmaq_f32(a0, vld1q_f32(w0 + i), xv);
                a1 = vfmaq_f32(a1, vld1q_f32(w1 + i), xv);
                a2 = vfmaq_f32(a2, vld1q_f32(w2 + i), xv);
                a3 = vfmaq_f32(a3, vld1q_f32(w3 + i), xv);
            }
            float s[4];
            vst1q_f32(s, vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3)));
            for (; i < k; i++) { s[0] += w0[i] * xt[i]; s[1] += w1[i] * xt[i]; s[2] += w2[i] * xt[i]; s[3] += w3[i] * xt[i]; }
            float *yt = y + (size_t)t * ldy + r;
            for (int j = 0; j < 4; j++) yt[j] = accumulate ? yt[j] + s[j] : s[j];
        }
    }
    for (; r < rows; r++) {
        for (int t = 0; t < tokens; t++) {
            const float s = ck_dot_neon(w + (size_t)r * k, x + (size_t)t * k, (size_t)k);
            float *yt = y + (size_t)t * ldy + r;
            *yt = accumulate ? *yt + s : s;
        }
    }
}

// Blocks of 32: d = max|x| / 127, q = x · (127 / max|x|) rounded to nearest even (vcvtnq, as the AVX2
// kernel's _MM_ROUND_NEAREST and the generic path's .toNearestOrEven), s = d · Σq.
void ck_quantize_q8_neon(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    const int blocks = k / 32;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const float *xb = x + (size_t)t * k + 32 * b;
            float32x4_t v[8];
            float32x4_t m = vdupq_n_f32(0);
            for (int j = 0; j < 8; j++) {
                v[j] = vld1q_f32(xb + 4 * j);
                m = vmaxq_f32(m, vabsq_f32(v[j]));
            }
            const float amax = vmaxvq_f32(m);
            const float scale = amax / 127.0f;
            const float inverse = amax > 0 ? 127.0f / amax : 0.0f;
            int32x4_t sum = vdupq_n_s32(0);
            int16x8_t halves[4];
            for (int j = 0; j < 4; j++) {
                const int32x4_t i0 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * j], inverse));
                const int32x4_t i1 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * j + 1], inverse));
                sum = vaddq_s32(sum, vaddq_s32(i0, i1));
                halves[j] = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
            }
            int8_t *qb = q + (size_t)t * k + 32 * b;
            vst1q_s8(qb, vcombine_s8(vqmovn_s16(halves[0]), vqmovn_s16(halves[1])));
            vst1q_s8(qb + 16, vcombine_s8(vqmovn_s16(halves[2]), vqmovn_s16(halves[3])));
            d[(size_t)t * blocks + b] = scale;
            s[(size_t)t * blocks + b] = scale * (float)vaddvq_s32(sum);
        }
    }
}

// One weight block as two vectors of 16 signed bytes (elements 0..15 and 16..31), with its scale and
// offset (value = d·q + m). Q8_0: bytes as stored, m = 0. Q4_0: nibbles 0..15, m = −8d. Q4_1: nibbles, m.
INLINE void load_block(int format, const uint8_t *block, int8x16_t w[2], float *dw, float *mw) {
    *dw = half_to_float(block);
    if (format == 8) {
        *mw = 0;
        w[0] = vld1q_s8((const int8_t *)block + 2);
        w[1] = vld1q_s8((const int8_t *)block + 18);
        return;
    }
    const uint8_t *nibbles = block + (format == 2 ? 2 : 4);
    *mw = format == 2 ? -8.0f * *dw : half_to_float(block + 2);
    const uint8x16_t bytes = vld1q_u8(nibbles);
    w[0] = vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(0x0F)));
    w[1] = vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4));
}

// Σ of 32 byte products in four int32 lanes. Plain NEON: int8 × int8 → int16 (|w·x| ≤ 128·127 fits),
// pairs added into int32 lanes; sdot does four products per lane in one instruction.
INLINE int32x4_t block_dot_plain(const int8x16_t w[2], const int8x16_t x[2]) {
    int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(w[0]), vget_low_s8(x[0])));
    acc = vpadalq_s16(acc, vmull_high_s8(w[0], x[0]));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w[1]), vget_low_s8(x[1])));
    return vpadalq_s16(acc, vmull_high_s8(w[1], x[1]));
}

INLINE DOTPROD int32x4_t block_dot_sdot(const int8x16_t w[2], const int8x16_t x[2]) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w[0], x[0]), w[1], x[1]);
}

// A tile of R rows × T tokens (constants after inlining) over all k: each weight block is unpacked once
// for T tokens, each activation block loaded once for R rows. Per block, the integer sum is scaled by
// dw·dx into a float vector accumulator (no horizontal sum until the end), the offset mw·sx apart.
#define NEON_TILE(NAME, ATTR, DOT)                                                                       \
INLINE ATTR void NAME(int format, const uint8_t *w, size_t rowBytes, int blockBytes, int R,             \
                      const int8_t *q, const float *d, const float *s, int T, int k,                    \
                      float *y, int ldy, int accumulate) {                                              \
    const int blocks = k / 32;                                                                          \
    float32x4_t acc[4][4];                                                                              \
    float offset[4][4];                                                                                 \
    for (int r = 0; r < R; r++)                                                                         \
        for (int t = 0; t < T; t++) { acc[r][t] = vdupq_n_f32(0); offset[r][t] = 0; }                   \
    for (int b = 0; b < blocks; b++) {                                                                  \
        int8x16_t xv[4][2];                                                                             \
        float dx[4], sx[4];                                                                             \
        for (int t = 0; t < T; t++) {                                                                   \
            xv[t][0] = vld1q_s8(q + (size_t)t * k + 32 * b);                                            \
            xv[t][1] = vld1q_s8(q + (size_t)t * k + 32 * b + 16);                                       \
            dx[t] = d[(size_t)t * blocks + b];                                                          \
            sx[t] = s[(size_t)t * blocks + b];                                                          \
        }                                                                                               \
        for (int r = 0; r < R; r++) {                                                                   \
            int8x16_t wv[2];                                                                            \
            float dw, mw;                                                                               \
            load_block(format, w + r * rowBytes + (size_t)b * blockBytes, wv, &dw, &mw);                \
            for (int t = 0; t < T; t++) {                                                               \
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(DOT(wv, xv[t])), dw * dx[t]);          \
                offset[r][t] += mw * sx[t];                                                             \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    for (int t = 0; t < T; t++) {                                                                       \
        float *yt = y + (size_t)t * ldy;                                                                \
        for (int r = 0; r < R; r++) {                                                                   \
            const float v = vaddvq_f32(acc[r][t]) + offset[r][t];                                       \
            yt[r] = accumulate ? yt[r] + v : v;                                                         \
        }                                                                                               \
    }                                                                                                   \
}

NEON_TILE(tile_plain, , block_dot_plain)
NEON_TILE(tile_sdot, DOTPROD, block_dot_sdot)

#define NEON_TILE_AT(R, T) TILE_FN(format, w + (size_t)row * rowBytes, rowBytes, blockBytes, R,            \
                                   q + (size_t)t * k, d + (size_t)t * blocks, s + (size_t)t * blocks, T, k, \
                                   y + (size_t)t * ldy + row, ldy, accumulate)

// 4 rows × 4 tokens for prompts, 4 × 1 for generation; the format is a constant in each copy.
#define NEON_GEMM(NAME, FORMAT, ATTR)                                                                    \
    ATTR static void NAME(const uint8_t *w, size_t rowBytes, int rows, const int8_t *q, const float *d,  \
                          const float *s, int tokens, int k, float *y, int ldy, int accumulate) {        \
        const int format = FORMAT;                                                                       \
        const int blockBytes = FORMAT == 8 ? 34 : (FORMAT == 2 ? 18 : 20);                               \
        const int blocks = k / 32;                                                                       \
        int row = 0;                                                                                     \
        for (; row + 4 <= rows; row += 4) {                                                              \
            int t = 0;                                                                                   \
            for (; t + 4 <= tokens; t += 4) NEON_TILE_AT(4, 4);                                          \
            for (; t < tokens; t++) NEON_TILE_AT(4, 1);                                                  \
        }                                                                                                \
        for (; row < rows; row++) {                                                                      \
            int t = 0;                                                                                   \
            for (; t + 4 <= tokens; t += 4) NEON_TILE_AT(1, 4);                                          \
            for (; t < tokens; t++) NEON_TILE_AT(1, 1);                                                  \
        }                                                                                                \
    }

#define TILE_FN tile_plain
NEON_GEMM(gemm_q8_0_plain, 8, )
NEON_GEMM(gemm_q4_0_plain, 2, )
NEON_GEMM(gemm_q4_1_plain, 3, )
#undef TILE_FN
#define TILE_FN tile_sdot
NEON_GEMM(gemm_q8_0_sdot, 8, DOTPROD)
NEON_GEMM(gemm_q4_0_sdot, 2, DOTPROD)
NEON_GEMM(gemm_q4_1_sdot, 3, DOTPROD)
#undef TILE_FN

void ck_gemm_q8_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *s, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    const uint8_t *w = (const uint8_t *)weights;
    if (use_dotprod) {
        switch (format) {
        case 8: gemm_q8_0_sdot(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        case 2: gemm_q4_0_sdot(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        case 3: gemm_q4_1_sdot(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
        }
        return;
    }
    switch (format) {
    case 8: gemm_q8_0_plain(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    case 2: gemm_q4_0_plain(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    case 3: gemm_q4_1_plain(w, rowBytes, rows, q, d, s, tokens, k, y, ldy, accumulate); return;
    }
}

// ---- Q5_0, Q5_1 and the K-quants --------------------------------------------------------------------
// As kernels_kquants.c does on x86: each block decoded into int8 values (16 per vector) with a scale and an
// offset per 16 values (QuantBlocks.decode's table), then the int8 products per group of 16, whose integer
// sums the group's scale multiplies; the offsets' term is Σ_g offset_g·sums16_g per token.

// Byte e of the result is 0xFF where bit e of `bits` is set, else 0.
INLINE uint8x16_t kq_bits_to_bytes(uint32_t bits) {
    static const uint8_t lanes[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t spread = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vtstq_u8(spread, vld1q_u8(lanes));
}

// (v >> shift) & mask for a shift known only at run time (vshlq by a negative count shifts right).
INLINE uint8x16_t kq_field(uint8x16_t v, int shift, uint8_t mask) {
    return vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)-shift)), vdupq_n_u8(mask));
}

INLINE void kq_store(int8_t *q, uint8x16_t v) { vst1q_s8(q, vreinterpretq_s8_u8(v)); }

// Q4_K/Q5_K's 6-bit scale and min of sub-block j from the 12 packed bytes.
INLINE void kq_scale_min(const uint8_t *p, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = p[j] & 63;
        *m = p[j + 4] & 63;
    } else {
        *sc = (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4);
        *m = (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
    }
}

// Q5_0 (d, qh, qs[16]) and Q5_1 (d, m, qh, qs[16]): nibble | bit e of qh << 4, minus 16 for Q5_0.
INLINE void kq_decode_q5(int isQ5_0, const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    uint32_t high;
    memcpy(&high, b + (isQ5_0 ? 2 : 4), 4);
    const uint8x16_t packed = vld1q_u8(b + (isQ5_0 ? 6 : 8)), sixteen = vdupq_n_u8(16);
    uint8x16_t low = vorrq_u8(vandq_u8(packed, vdupq_n_u8(15)), vandq_u8(kq_bits_to_bytes(high), sixteen));
    uint8x16_t up = vorrq_u8(vshrq_n_u8(packed, 4), vandq_u8(kq_bits_to_bytes(high >> 16), sixteen));
    if (isQ5_0) {
        low = vsubq_u8(low, sixteen);
        up = vsubq_u8(up, sixteen);
    }
    kq_store(q, low);
    kq_store(q + 16, up);
    const float d = half_to_float(b), m = isQ5_0 ? 0.0f : half_to_float(b + 2);
    scales[0] = scales[1] = d;
    offsets[0] = offsets[1] = m;
}

// Q2_K: scales[16], qs[64], d, dmin; q(128h + 32s + l) = qs[32h + l] >> 2s & 3.
INLINE void kq_decode_q2_k(const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    const float d = half_to_float(b + 80), dmin = half_to_float(b + 82);
    for (int h = 0; h < 2; h++)
        for (int half = 0; half < 2; half++) {
            const uint8x16_t v = vld1q_u8(b + 16 + 32 * h + 16 * half);
            for (int s = 0; s < 4; s++) kq_store(q + 128 * h + 32 * s + 16 * half, kq_field(v, 2 * s, 3));
        }
    for (int g = 0; g < 16; g++) {
        scales[g] = d * (float)(b[g] & 15);
        offsets[g] = -(dmin * (float)(b[g] >> 4));
    }
}

// Q3_K: hmask[32], qs[64], scales[12], d; as Q2_K's q, minus 4 unless bit e/32 of hmask[e % 32] is set.
INLINE void kq_decode_q3_k(const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    const float d = half_to_float(b + 108);
    for (int half = 0; half < 2; half++) {
        const uint8x16_t hmask = vld1q_u8(b + 16 * half);
        for (int h = 0; h < 2; h++) {
            const uint8x16_t v = vld1q_u8(b + 32 + 32 * h + 16 * half);
            for (int s = 0; s < 4; s++) {
                const uint8x16_t kept = vshlq_n_u8(kq_field(hmask, 4 * h + s, 1), 2);  // 4·bit
                const uint8x16_t value = vsubq_u8(vaddq_u8(kq_field(v, 2 * s, 3), kept), vdupq_n_u8(4));
                kq_store(q + 128 * h + 32 * s + 16 * half, value);
            }
        }
    }
    for (int g = 0; g < 16; g++) {
        const int low = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4;
        const int high = (b[104 + g % 4] >> (2 * (g / 4))) & 3;
        scales[g] = d * (float)((low | high << 4) - 32);
        offsets[g] = 0;
    }
}

// Q4_K: d, dmin, scales[12], qs[128]; Q5_K: qh[32] before qs. q(64c + 32s + l) = qs[32c + l] >> 4s & 15
// (| bit 2c + s of qh[l] << 4 for Q5_K).
INLINE void kq_decode_q45_k(int isQ5, const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    const float d = half_to_float(b), dmin = half_to_float(b + 2);
    const uint8_t *quants = b + (isQ5 ? 48 : 16);
    for (int half = 0; half < 2; half++) {
        const uint8x16_t qh = isQ5 ? vld1q_u8(b + 16 + 16 * half) : vdupq_n_u8(0);
        for (int c = 0; c < 4; c++) {
            const uint8x16_t v = vld1q_u8(quants + 32 * c + 16 * half);
            uint8x16_t low = vandq_u8(v, vdupq_n_u8(15)), high = vshrq_n_u8(v, 4);
            if (isQ5) {
                low = vorrq_u8(low, vshlq_n_u8(kq_field(qh, 2 * c, 1), 4));
                high = vorrq_u8(high, vshlq_n_u8(kq_field(qh, 2 * c + 1, 1), 4));
            }
            kq_store(q + 64 * c + 16 * half, low);
            kq_store(q + 64 * c + 32 + 16 * half, high);
        }
    }
    for (int j = 0; j < 8; j++) {
        int sc, m;
        kq_scale_min(b + 4, j, &sc, &m);
        scales[2 * j] = scales[2 * j + 1] = d * (float)sc;
        offsets[2 * j] = offsets[2 * j + 1] = -(dmin * (float)m);
    }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d; q(128h + 32t + l) = (low nibble t of ql | (qh[32h + l] >> 2t
// & 3) << 4) − 32, the nibbles being ql[64h + l] low, ql[64h + 32 + l] low, then both high.
INLINE void kq_decode_q6_k(const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    const float d = half_to_float(b + 208);
    for (int h = 0; h < 2; h++)
        for (int half = 0; half < 2; half++) {
            const uint8x16_t ql0 = vld1q_u8(b + 64 * h + 16 * half), ql1 = vld1q_u8(b + 64 * h + 32 + 16 * half);
            const uint8x16_t qh = vld1q_u8(b + 128 + 32 * h + 16 * half), m4 = vdupq_n_u8(15);
            const uint8x16_t low[4] = {vandq_u8(ql0, m4), vandq_u8(ql1, m4), vshrq_n_u8(ql0, 4), vshrq_n_u8(ql1, 4)};
            for (int t = 0; t < 4; t++) {
                const uint8x16_t v = vorrq_u8(low[t], vshlq_n_u8(kq_field(qh, 2 * t, 3), 4));
                kq_store(q + 128 * h + 32 * t + 16 * half, vsubq_u8(v, vdupq_n_u8(32)));
            }
        }
    for (int g = 0; g < 16; g++) {
        scales[g] = d * (float)(int8_t)b[192 + g];
        offsets[g] = 0;
    }
}

// One block into q (32 or 256 values), scales and offsets (one per 16 values).
static void kq_decode_block(int format, const uint8_t *b, int8_t *q, float *scales, float *offsets) {
    switch (format) {
    case 6: case 7: kq_decode_q5(format == 6, b, q, scales, offsets); return;
    case 10: kq_decode_q2_k(b, q, scales, offsets); return;
    case 11: kq_decode_q3_k(b, q, scales, offsets); return;
    case 12: case 13: kq_decode_q45_k(format == 13, b, q, scales, offsets); return;
    case 14: kq_decode_q6_k(b, q, scales, offsets); return;
    default: return;
    }
}


void ck_kq_decode_row_neon(int format, const void *row, int count, int8_t *q, float *scales, float *offsets) {
    const int size = kq_block_size(format);
    const size_t bytes = kq_block_bytes(format);
    for (int b = 0; b < count / size; b++)
        kq_decode_block(format, (const uint8_t *)row + (size_t)b * bytes, q + b * size, scales + b * (size / 16),
                        offsets + b * (size / 16));
}

// value = scale·q + offset for one group of 16; not fused, like QuantBlocks.dequantizeRow.
INLINE void store_group(float *out, int8x16_t v, float scale, float offset) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
    const float32x4_t m = vdupq_n_f32(offset);
    vst1q_f32(out, vaddq_f32(vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), scale), m));
    vst1q_f32(out + 4, vaddq_f32(vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), scale), m));
    vst1q_f32(out + 8, vaddq_f32(vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), scale), m));
    vst1q_f32(out + 12, vaddq_f32(vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), scale), m));
}

static void kq_dequantize_row(int format, const uint8_t *s, float *out, size_t count) {
    const int size = kq_block_size(format);
    const size_t bytes = kq_block_bytes(format);
    int8_t q[256];
    float scales[16], offsets[16];
    for (size_t b = 0; b < count / (size_t)size; b++, s += bytes, out += size) {
        kq_decode_block(format, s, q, scales, offsets);
        for (int g = 0; g < size / 16; g++) store_group(out + 16 * g, vld1q_s8(q + 16 * g), scales[g], offsets[g]);
    }
}

// Σ of 16 byte products in four int32 lanes: plain NEON (int16 products, pairs added into int32) or sdot.
INLINE int32x4_t group_dot_plain(int8x16_t w, int8x16_t x) {
    return vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x))), vmull_high_s8(w, x));
}

INLINE DOTPROD int32x4_t group_dot_sdot(int8x16_t w, int8x16_t x) { return vdotq_s32(vdupq_n_s32(0), w, x); }

// One decoded row (wq, scales, offsets) against T tokens (a constant after inlining): per 32 values, both
// groups' integer sums scaled by scale_g·dx into a float vector per token, reduced at the end.
#define KQ_TILE(NAME, ATTR, DOT)                                                                               \
INLINE ATTR void NAME(const int8_t *wq, const float *scales, const float *offsets, int hasOffsets,            \
                      const int8_t *q, const float *d, const float *sums16, int T, int k, float *y, int ldy,  \
                      int accumulate) {                                                                       \
    const int chunks = k / 32, groups = k / 16;                                                               \
    float32x4_t acc[4];                                                                                       \
    for (int t = 0; t < T; t++) acc[t] = vdupq_n_f32(0);                                                      \
    for (int c = 0; c < chunks; c++) {                                                                        \
        const int8x16_t w0 = vld1q_s8(wq + 32 * c), w1 = vld1q_s8(wq + 32 * c + 16);                          \
        for (int t = 0; t < T; t++) {                                                                         \
            const int8_t *x = q + (size_t)t * k + 32 * c;                                                     \
            const float dx = d[(size_t)t * chunks + c];                                                       \
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(DOT(w0, vld1q_s8(x))), scales[2 * c] * dx);            \
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(DOT(w1, vld1q_s8(x + 16))), scales[2 * c + 1] * dx);   \
        }                                                                                                     \
    }                                                                                                         \
    for (int t = 0; t < T; t++) {                                                                             \
        float total = vaddvq_f32(acc[t]);                                                                     \
        if (hasOffsets) total += ck_dot_neon(offsets, sums16 + (size_t)t * groups, (size_t)groups);           \
        float *out = y + (size_t)t * ldy;                                                                     \
        *out = accumulate ? *out + total : total;                                                             \
    }                                                                                                         \
}

KQ_TILE(kq_tile_plain, , group_dot_plain)
KQ_TILE(kq_tile_sdot, DOTPROD, group_dot_sdot)

#define KQ_TILE_AT(TILE, T) TILE(wq, scales, offsets, hasOffsets, q + (size_t)t * k, d + (size_t)t * chunks,      \
                                 sums16 + (size_t)t * groups, T, k, y + (size_t)t * ldy + r, ldy, accumulate)

// Every row decoded once, then multiplied with the tokens four at a time.
#define KQ_GEMM(NAME, ATTR, TILE)                                                                              \
ATTR static void NAME(int format, const uint8_t *w, size_t rowBytes, int rows, const int8_t *q, const float *d, \
                      const float *sums16, int tokens, int k, float *y, int ldy, int accumulate, int8_t *wq,   \
                      float *scales, float *offsets) {                                                         \
    const int chunks = k / 32, groups = k / 16;                                                                \
    const int hasOffsets = format == 7 || format == 10 || format == 12 || format == 13;                        \
    for (int r = 0; r < rows; r++) {                                                                           \
        ck_kq_decode_row_neon(format, w + (size_t)r * rowBytes, k, wq, scales, offsets);                       \
        int t = 0;                                                                                             \
        for (; t + 4 <= tokens; t += 4) KQ_TILE_AT(TILE, 4);                                                   \
        for (; t < tokens; t++) KQ_TILE_AT(TILE, 1);                                                           \
    }                                                                                                          \
}

KQ_GEMM(kq_gemm_plain, , kq_tile_plain)
KQ_GEMM(kq_gemm_sdot, DOTPROD, kq_tile_sdot)

void ck_gemm_kq_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    // Per call: the decoded row (k bytes) and its scales and offsets.
    int8_t *wq = malloc((size_t)k);
    float *factors = malloc(sizeof(float) * 2 * (size_t)(k / 16));
    if (wq == NULL || factors == NULL) abort();
    (use_dotprod ? kq_gemm_sdot : kq_gemm_plain)(format, (const uint8_t *)weights, rowBytes, rows, q, d, sums16,
                                                 tokens, k, y, ldy, accumulate, wq, factors, factors + k / 16);
    free(wq);
    free(factors);
}

#else
// Not aarch64: no NEON; these are never called (ck_has_neon() is 0) but keep the symbols everywhere.
int ck_has_neon(void) { return 0; }
int ck_has_neon_dotprod(void) { return 0; }
void ck_dequantize_row_neon(int format, const void *source, float *out, size_t count) {
    (void)format; (void)source; (void)out; (void)count;
}
float ck_dot_neon(const float *a, const float *b, size_t n) { (void)a; (void)b; (void)n; return 0; }
void ck_dot_rows_neon(const float *x, const float *rows, size_t stride, int count, int n, float scale, float *out) {
    (void)x; (void)rows; (void)stride; (void)count; (void)n; (void)scale; (void)out;
}
void ck_panel_gemm_neon(const float *w, int rows, const float *x, int tokens, int k, float *y, int ldy, int accumulate) {
    (void)w; (void)rows; (void)x; (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
void ck_quantize_q8_neon(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    (void)x; (void)tokens; (void)k; (void)q; (void)d; (void)s;
}
void ck_gemm_q8_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *s, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    (void)use_dotprod; (void)format; (void)weights; (void)rowBytes; (void)rows; (void)q; (void)d; (void)s;
    (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
void ck_kq_decode_row_neon(int format, const void *row, int count, int8_t *q, float *scales, float *offsets) {
    (void)format; (void)row; (void)count; (void)q; (void)scales; (void)offsets;
}
void ck_gemm_kq_neon(int use_dotprod, int format, const void *weights, size_t rowBytes, int rows,
                     const int8_t *q, const float *d, const float *sums16, int tokens, int k,
                     float *y, int ldy, int accumulate) {
    (void)use_dotprod; (void)format; (void)weights; (void)rowBytes; (void)rows; (void)q; (void)d; (void)sums16;
    (void)tokens; (void)k; (void)y; (void)ldy; (void)accumulate;
}
#endif
