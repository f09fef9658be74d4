// Every C kernel of a tier against a scalar C reference, by normalised mean squared error
// (NMSE = Σ(got − want)² / Σ want², as ggml's test-backend-ops does), over shapes off the vector widths.
//
// Built twice by `make test-arm` / `make test-ckernels` (see the Makefile):
//   - for aarch64 with clang --target=aarch64-linux-gnu, run under qemu-aarch64 -cpu cortex-a53 (no
//     dot-product extension) and -cpu max (with it): the NEON kernels, plain and sdot;
//   - natively on x86-64: the AVX2 kernels (and AVX-512 VNNI where the CPU has it).
// Each comparison has a positive control: the same check on a copy with one output element corrupted
// must fail. `--expect-dotprod yes|no` makes the run fail unless ck_has_neon_dotprod() agrees; without
// dotprod, an sdot kernel run in a child process must die of SIGILL (so qemu's CPU really lacks it, and
// the plain kernels that passed used no sdot). Exit status 0 only when every check and control held.
#include "ckernels.h"
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// ---- test data ------------------------------------------------------------------------------------
// Deterministic test inputs (xorshift64*), so a failure reproduces; nothing here is security-relevant.
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static float uniform(void) { return (float)next_u32() / 4294967296.0f * 2.0f - 1.0f; }
static void fill(float *x, size_t n) { for (size_t i = 0; i < n; i++) x[i] = uniform(); }

// A finite normal half with exponent in [e0, e1] (biased), random sign and mantissa.
static uint16_t random_half(int e0, int e1, int allowNegative) {
    const uint32_t r = next_u32();
    const uint16_t sign = allowNegative && (r & 1) ? 0x8000 : 0;
    const uint16_t exponent = (uint16_t)(e0 + (int)((r >> 1) % (uint32_t)(e1 - e0 + 1)));
    return (uint16_t)(sign | exponent << 10 | ((r >> 8) & 0x3FF));
}
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static int block_bytes(int format) { return format == 8 ? 34 : format == 2 ? 18 : format == 3 ? 20 : 0; }
static size_t row_bytes(int format, int k) {
    return format == 0 ? 4u * (size_t)k : format == 1 ? 2u * (size_t)k : (size_t)(k / 32) * (size_t)block_bytes(format);
}

// One row of `format` with random contents: scales 2^-10..2^-3, Q4_1 offsets of either sign.
static void random_row(int format, uint8_t *row, int k) {
    if (format == 0) { fill((float *)row, (size_t)k); return; }
    if (format == 1) { for (int i = 0; i < k; i++) put16(row + 2 * i, random_half(1, 30, 1)); return; }
    for (int b = 0; b < k / 32; b++) {
        uint8_t *block = row + (size_t)b * block_bytes(format);
        put16(block, random_half(5, 12, format == 8));
        if (format == 3) put16(block + 2, random_half(5, 14, 1));
        const int payload = format == 8 ? 32 : 16, start = format == 3 ? 4 : 2;
        for (int i = 0; i < payload; i++) block[start + i] = (uint8_t)next_u32();
    }
}

// ---- the scalar reference -------------------------------------------------------------------------
// IEEE binary16 decoded from its bits (no hardware conversion).
static float ref_half(uint16_t h) {
    const int sign = h >> 15, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    float v;
    if (exponent == 0) v = ldexpf((float)mantissa, -24);
    else if (exponent == 31) v = mantissa ? NAN : INFINITY;
    else v = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return sign ? -v : v;
}

// Element i of a row as (integer q, scale d, offset m): value = d·q + m (ggml's formats).
static void ref_element(int format, const uint8_t *row, int i, int *q, float *d, float *m) {
    const uint8_t *block = row + (size_t)(i / 32) * block_bytes(format);
    const int j = i % 32;
    *d = ref_half(get16(block));
    if (format == 8) { *q = (int8_t)block[2 + j]; *m = 0; return; }
    const uint8_t byte = block[(format == 3 ? 4 : 2) + j % 16];
    *q = j < 16 ? byte & 0x0F : byte >> 4;
    *m = format == 3 ? ref_half(get16(block + 2)) : -8.0f * *d;
}

static void ref_dequantize(int format, const uint8_t *row, double *out, int count) {
    for (int i = 0; i < count; i++) {
        if (format == 0) { float v; memcpy(&v, row + 4 * i, 4); out[i] = v; continue; }
        if (format == 1) { out[i] = ref_half(get16(row + 2 * i)); continue; }
        int q; float d, m;
        ref_element(format, row, i, &q, &d, &m);
        out[i] = format == 2 ? (double)((float)(q - 8) * d) : (double)((float)q * d + m);
    }
}

static double ref_dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// ggml's Q8 activation blocks: d = max|x|/127, q = round-to-nearest-even(x · 127/max|x|), s = d·Σq.
static void ref_quantize(const float *x, int tokens, int k, int8_t *q, float *d, float *s) {
    for (int block = 0; block < tokens * k / 32; block++) {
        const float *xb = x + 32 * block;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
        const float inverse = amax > 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            const float scaled = xb[i] * inverse;
            const int v = (int)nearbyintf(scaled);  // default rounding mode: to nearest, ties to even
            q[32 * block + i] = (int8_t)v;
            sum += v;
        }
        d[block] = amax / 127.0f;
        s[block] = d[block] * (float)sum;
    }
}

// Σ over blocks of dw·dx·Σ qw·qx + mw·sx, in double: the int8 product every tier computes.
static double ref_int8_row_token(int format, const uint8_t *row, const int8_t *q, const float *d, const float *s, int k) {
    double total = 0;
    for (int b = 0; b < k / 32; b++) {
        long dot = 0;
        float dw = 0, mw = 0;
        for (int j = 0; j < 32; j++) {
            int qw;
            ref_element(format, row, 32 * b + j, &qw, &dw, &mw);
            dot += (long)qw * q[32 * b + j];
        }
        total += (double)dw * d[b] * (double)dot + (double)mw * s[b];
    }
    return total;
}

// ---- checks ---------------------------------------------------------------------------------------
typedef struct {
    const char *name;
    double threshold, worst;
    int cases, failures, controlsMissed;
} Stat;

static int verbose = 0;
// --first-failure: exit at the first failed check (the mutation controls need only one).
static int stopAtFirstFailure = 0;
static void failed(void) {
    if (!stopAtFirstFailure) return;
    fflush(stdout);
    exit(1);
}

static double nmse(const float *got, const double *want, size_t n) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)got[i] - want[i];
        err += e * e;
        norm += want[i] * want[i];
    }
    return norm > 0 ? err / norm : err;  // all-zero reference: the plain squared error
}

// Compares, then checks the comparison fails on a copy with one element off by 1e-3 of the norm.
static void check(Stat *st, const char *what, const float *got, const double *want, size_t n) {
    const double e = nmse(got, want, n);
    st->cases++;
    if (!(e <= st->threshold)) {
        st->failures++;
        fprintf(stderr, "FAIL %s %s: NMSE %.3g > %.0e\n", st->name, what, e, st->threshold);
        failed();
    }
    if (e > st->worst || e != e) st->worst = e;
    if (verbose) printf("  %s %s NMSE %.3g\n", st->name, what, e);
    if (n == 0) return;
    float *copy = malloc(n * sizeof(float));
    memcpy(copy, got, n * sizeof(float));
    double norm = 0;
    for (size_t i = 0; i < n; i++) norm += want[i] * want[i];
    copy[n / 2] += (float)(1e-3 * sqrt(norm > 0 ? norm : 1.0));
    if (nmse(copy, want, n) <= st->threshold) {
        st->controlsMissed++;
        fprintf(stderr, "CONTROL MISSED %s %s: a corrupted output passed\n", st->name, what);
    }
    free(copy);
}

// Words past the end of an output must be untouched (sentinel), so a kernel writing too far fails.
static const float sentinel = -12345.0f;
static void check_sentinels(Stat *st, const char *what, const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != sentinel) {
            st->failures++;
            fprintf(stderr, "FAIL %s %s: wrote past its output\n", st->name, what);
            failed();
            return;
        }
}

// ---- tiers ----------------------------------------------------------------------------------------
typedef void (*GemmQ8)(int format, const void *w, size_t rowBytes, int rows, const int8_t *q, const float *d,
                       const float *s, int tokens, int k, float *y, int ldy, int accumulate);
typedef struct {
    const char *name;
    void (*dequantize)(int, const void *, float *, size_t);
    void (*panel)(const float *, int, const float *, int, int, float *, int, int);
    void (*dotRows)(const float *, const float *, size_t, int, int, float, float *);
    float (*dot)(const float *, const float *, size_t);
    void (*quantize)(const float *, int, int, int8_t *, float *, float *);
    GemmQ8 gemm;
    // Q5_0, Q5_1, Q2_K-Q6_K: the row dequantizer (NULL where the tier has none) and the int8 product, whose
    // last float arguments are sums16 (d·Σq per 16 activations) rather than s.
    void (*dequantizeKq)(int, const void *, float *, size_t);
    GemmQ8 gemmKq;
    // The row-group kernels take Q5_0 only of these formats (their s per 32, not sums16).
    int kqQ5_0Only;
} Tier;

static int test_dequantize(const Tier *tier, Stat *st) {
    static const int formats[] = {0, 1, 8, 2, 3};
    static const int plain[] = {1, 3, 7, 8, 9, 17, 100}, blocked[] = {32, 96, 160, 544};
    for (int f = 0; f < 5; f++) {
        const int format = formats[f];
        const int *counts = format < 2 ? plain : blocked, ncounts = format < 2 ? 7 : 4;
        for (int c = 0; c < ncounts; c++) {
            const int k = counts[c];
            uint8_t *row = malloc(row_bytes(format, k));
            random_row(format, row, k);
            if (format == 1 && k >= 7) {  // zero, negative zero, a subnormal, one, the largest half
                put16(row, 0); put16(row + 2, 0x8000); put16(row + 4, 0x0001); put16(row + 6, 0x3C00);
                put16(row + 8, 0x7BFF);
            }
            float *got = malloc((k + 1) * sizeof(float));
            double *want = malloc(k * sizeof(double));
            got[k] = sentinel;
            tier->dequantize(format, row, got, (size_t)k);
            ref_dequantize(format, row, want, k);
            char what[64];
            snprintf(what, sizeof what, "format %d k %d", format, k);
            check(st, what, got, want, (size_t)k);
            check_sentinels(st, what, got + k, 1);
            free(row); free(got); free(want);
        }
    }
    return 0;
}

static int test_dot(const Tier *tier, Stat *st) {
    static const int lengths[] = {0, 1, 3, 4, 5, 15, 16, 17, 31, 33, 64, 100, 1000, 1023};
    for (int c = 0; c < 14; c++) {
        const int n = lengths[c];
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        fill(a, (size_t)n); fill(b, (size_t)n);
        // One reference value per call; several draws make the NMSE a mean rather than one ratio.
        float got[4];
        double want[4];
        for (int r = 0; r < 4; r++) {
            fill(a, (size_t)n);
            got[r] = tier->dot(a, b, (size_t)n);
            want[r] = ref_dot(a, b, (size_t)n);
        }
        char what[32];
        snprintf(what, sizeof what, "n %d", n);
        check(st, what, got, want, 4);
        free(a); free(b);
    }
    return 0;
}

static int test_dot_rows(const Tier *tier, Stat *st) {
    static const int shapes[][3] = {{1, 64, 64}, {3, 8, 24}, {5, 64, 192}, {9, 13, 13}, {4, 7, 9}, {7, 1, 3},
                                    {13, 67, 70}, {130, 64, 192}};
    for (int c = 0; c < 8; c++) {
        const int count = shapes[c][0], n = shapes[c][1], stride = shapes[c][2];
        float *x = malloc(n * sizeof(float)), *rows = malloc((size_t)count * stride * sizeof(float));
        float *got = malloc((count + 1) * sizeof(float));
        double *want = malloc(count * sizeof(double));
        fill(x, (size_t)n); fill(rows, (size_t)count * stride);
        got[count] = sentinel;
        tier->dotRows(x, rows, (size_t)stride, count, n, 0.125f, got);
        for (int j = 0; j < count; j++) want[j] = 0.125 * ref_dot(x, rows + (size_t)j * stride, (size_t)n);
        char what[64];
        snprintf(what, sizeof what, "count %d n %d stride %d", count, n, stride);
        check(st, what, got, want, (size_t)count);
        check_sentinels(st, what, got + count, 1);
        free(x); free(rows); free(got); free(want);
    }
    return 0;
}

// y (tokens × ldy, rows used per token) starts as sentinels, or as random values when accumulating.
static void prepare_output(float *y, double *want, int rows, int tokens, int ldy, int accumulate) {
    for (int i = 0; i < tokens * ldy; i++) y[i] = sentinel;
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++) {
            y[t * ldy + r] = accumulate ? uniform() : sentinel;
            want[t * rows + r] = accumulate ? y[t * ldy + r] : 0;
        }
}

// The rows of each token compared (gathered out of the ldy stride), the padding checked for writes.
static void check_output(Stat *st, const char *what, const float *y, const double *want, int rows, int tokens, int ldy) {
    float *got = malloc(((size_t)rows * tokens + 1) * sizeof(float));
    for (int t = 0; t < tokens; t++) {
        memcpy(got + (size_t)t * rows, y + (size_t)t * ldy, rows * sizeof(float));
        check_sentinels(st, what, y + (size_t)t * ldy + rows, (size_t)(ldy - rows));
    }
    check(st, what, got, want, (size_t)rows * tokens);
    free(got);
}

static int test_panel(const Tier *tier, Stat *st) {
    static const int rowCounts[] = {1, 3, 4, 5, 7, 13}, tokenCounts[] = {1, 2, 3, 5}, ks[] = {1, 3, 4, 17, 64, 100};
    for (int a = 0; a < 6; a++) for (int b = 0; b < 4; b++) for (int c = 0; c < 6; c++) for (int acc = 0; acc < 2; acc++) {
        const int rows = rowCounts[a], tokens = tokenCounts[b], k = ks[c], ldy = rows + 3;
        float *w = malloc((size_t)rows * k * sizeof(float)), *x = malloc((size_t)tokens * k * sizeof(float));
        float *y = malloc((size_t)tokens * ldy * sizeof(float));
        double *want = malloc((size_t)tokens * rows * sizeof(double));
        fill(w, (size_t)rows * k); fill(x, (size_t)tokens * k);
        prepare_output(y, want, rows, tokens, ldy, acc);
        tier->panel(w, rows, x, tokens, k, y, ldy, acc);
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++) want[t * rows + r] += ref_dot(w + (size_t)r * k, x + (size_t)t * k, (size_t)k);
        char what[80];
        snprintf(what, sizeof what, "rows %d tokens %d k %d accumulate %d", rows, tokens, k, acc);
        check_output(st, what, y, want, rows, tokens, ldy);
        free(w); free(x); free(y); free(want);
    }
    return 0;
}

// Exact: the same roundings on every tier, so q, d and s must be bit-identical to the reference. The
// NMSE of d·q against the reference's d·q is reported (0 when identical); the control flips one q.
static int test_quantize(const Tier *tier, Stat *st) {
    static const int shapes[][2] = {{1, 32}, {3, 96}, {5, 160}, {2, 544}};
    for (int c = 0; c < 4; c++) {
        const int tokens = shapes[c][0], k = shapes[c][1], n = tokens * k, blocks = n / 32;
        float *x = malloc(n * sizeof(float));
        fill(x, (size_t)n);
        for (int i = 0; i < 32 && c == 1; i++) x[i] = 0;  // an all-zero block: d = 0, q = 0
        if (c == 2) {  // ties: max|x| = 127 makes the scale 1, so x.5 must round to even
            static const float ties[] = {127, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f, 126.5f, -126.5f};
            for (int i = 0; i < 8; i++) x[32 + i] = ties[i];
            for (int i = 8; i < 32; i++) x[32 + i] = (float)(i % 7) - 3.0f;
        }
        int8_t *q = malloc(n), *rq = malloc(n);
        float *d = malloc(blocks * sizeof(float)), *s = malloc(blocks * sizeof(float));
        float *rd = malloc(blocks * sizeof(float)), *rs = malloc(blocks * sizeof(float));
        tier->quantize(x, tokens, k, q, d, s);
        ref_quantize(x, tokens, k, rq, rd, rs);
        int mismatches = memcmp(q, rq, n) != 0 || memcmp(d, rd, blocks * 4) != 0 || memcmp(s, rs, blocks * 4) != 0;
        float *deq = malloc(n * sizeof(float));
        double *want = malloc(n * sizeof(double));
        for (int i = 0; i < n; i++) { deq[i] = d[i / 32] * q[i]; want[i] = rd[i / 32] * rq[i]; }  // both in float
        char what[48];
        snprintf(what, sizeof what, "tokens %d k %d", tokens, k);
        check(st, what, deq, want, (size_t)n);
        if (mismatches) {
            st->failures++;
            fprintf(stderr, "FAIL %s %s: q, d or s differ from the reference bits\n", st->name, what);
            failed();
        }
        q[n / 2] ^= 1;  // positive control of the exact comparison
        if (memcmp(q, rq, n) == 0) { st->controlsMissed++; fprintf(stderr, "CONTROL MISSED %s %s\n", st->name, what); }
        free(x); free(q); free(rq); free(d); free(s); free(rd); free(rs); free(deq); free(want);
    }
    return 0;
}

static void gemm_case(const Tier *tier, Stat *st, int format, int rows, int tokens, int k, int acc) {
    const size_t rb = row_bytes(format, k);
    const int blocks = k / 32, ldy = rows + 2;
    uint8_t *w = malloc(rb * rows);
    for (int r = 0; r < rows; r++) random_row(format, w + r * rb, k);
    float *x = malloc((size_t)tokens * k * sizeof(float));
    fill(x, (size_t)tokens * k);
    int8_t *q = malloc((size_t)tokens * k);
    float *d = malloc((size_t)tokens * blocks * sizeof(float)), *s = malloc((size_t)tokens * blocks * sizeof(float));
    ref_quantize(x, tokens, k, q, d, s);  // the product is tested apart from the quantization kernel
    float *y = malloc((size_t)tokens * ldy * sizeof(float));
    double *want = malloc((size_t)tokens * rows * sizeof(double));
    prepare_output(y, want, rows, tokens, ldy, acc);
    tier->gemm(format, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++)
            want[t * rows + r] += ref_int8_row_token(format, w + r * rb, q + (size_t)t * k, d + t * blocks, s + t * blocks, k);
    char what[96];
    snprintf(what, sizeof what, "format %d rows %d tokens %d k %d accumulate %d", format, rows, tokens, k, acc);
    check_output(st, what, y, want, rows, tokens, ldy);
    free(w); free(x); free(q); free(d); free(s); free(y); free(want);
}

static int test_gemm(const Tier *tier, Stat *st) {
    static const int formats[] = {8, 2, 3}, rowCounts[] = {1, 3, 4, 5, 7, 13, 17}, tokenCounts[] = {1, 2, 3, 4, 5, 7, 9},
                     ks[] = {32, 96, 160, 544};
    for (int f = 0; f < 3; f++) for (int a = 0; a < 7; a++) for (int b = 0; b < 7; b++) for (int c = 0; c < 4; c++)
        gemm_case(tier, st, formats[f], rowCounts[a], tokenCounts[b], ks[c], (a + b + c) % 2);
    return 0;
}

// ---- Q5_0, Q5_1 and the K-quants ------------------------------------------------------------------
// ggml type numbers 6, 7, 10-14; blocks of 32 (Q5_*) or 256 values. The reference decodes one element at a
// time from QuantBlocks.swift's table (whose Swift twin is checked against gguf-py's quants.py).
static const int kqFormats[] = {6, 7, 10, 11, 12, 13, 14};
static int kq_size(int format) { return format == 6 || format == 7 ? 32 : 256; }
static int kq_bytes(int format) {
    switch (format) {
    case 6: return 22;
    case 7: return 24;
    case 10: return 84;
    case 11: return 110;
    case 12: return 144;
    case 13: return 176;
    default: return 210;
    }
}
static size_t kq_row_bytes(int format, int k) { return (size_t)(k / kq_size(format)) * (size_t)kq_bytes(format); }

// Random payload bytes (so every bit pattern of q, scales and high bits occurs), then the f16 factors set to
// finite halves 2^-10..2^-3: d of either sign where ggml can make it negative, dmin and Q2/Q4/Q5_K's d positive.
static void random_kq_row(int format, uint8_t *row, int k) {
    for (size_t i = 0; i < kq_row_bytes(format, k); i++) row[i] = (uint8_t)next_u32();
    for (int b = 0; b < k / kq_size(format); b++) {
        uint8_t *block = row + (size_t)b * kq_bytes(format);
        switch (format) {
        case 6: put16(block, random_half(5, 12, 1)); break;
        case 7: put16(block, random_half(5, 12, 0)); put16(block + 2, random_half(5, 14, 1)); break;
        case 10: put16(block + 80, random_half(5, 12, 0)); put16(block + 82, random_half(5, 12, 0)); break;
        case 11: put16(block + 108, random_half(5, 12, 1)); break;
        case 12: case 13: put16(block, random_half(5, 12, 0)); put16(block + 2, random_half(5, 12, 0)); break;
        default: put16(block + 208, random_half(5, 12, 1)); break;
        }
    }
}

// Element e of a block as (integer q, scale, offset): value = scale·q + offset, scale and offset per 16.
static void ref_kq_element(int format, const uint8_t *b, int e, int *q, float *scale, float *offset) {
    const int g = e / 16;
    *offset = 0;
    switch (format) {
    case 6: case 7: {  // d, (m,) qh u32, qs[16]: nibble (low half for e < 16) | bit e of qh << 4; Q5_0 − 16
        const int isQ5_0 = format == 6;
        uint32_t qh;
        memcpy(&qh, b + (isQ5_0 ? 2 : 4), 4);
        const uint8_t byte = b[(isQ5_0 ? 6 : 8) + e % 16];
        const int v = (e < 16 ? byte & 15 : byte >> 4) | (int)((qh >> e) & 1) << 4;
        *q = isQ5_0 ? v - 16 : v;
        *scale = ref_half(get16(b));
        if (!isQ5_0) *offset = ref_half(get16(b + 2));
        return;
    }
    case 10: case 11: {  // Q2_K: scales[16], qs[64], d, dmin. Q3_K: hmask[32], qs[64], scales[12], d
        const int h = e / 128, s = (e / 32) % 4, l = e % 32;
        const int low = (b[(format == 10 ? 16 : 32) + 32 * h + l] >> (2 * s)) & 3;
        if (format == 10) {
            *q = low;
            *scale = ref_half(get16(b + 80)) * (float)(b[g] & 15);
            *offset = -(ref_half(get16(b + 82)) * (float)(b[g] >> 4));
            return;
        }
        *q = (b[l] >> (e / 32)) & 1 ? low : low - 4;
        const int low4 = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4, high2 = (b[104 + g % 4] >> (2 * (g / 4))) & 3;
        *scale = ref_half(get16(b + 108)) * (float)((low4 | high2 << 4) - 32);
        return;
    }
    case 12: case 13: {  // d, dmin, scales[12], (qh[32],) qs[128]; 6-bit scale and min of sub-block j = e/32
        const int c = e / 64, s = (e / 32) % 2, l = e % 32, j = e / 32;
        const uint8_t *p = b + 4;
        int v = (b[(format == 13 ? 48 : 16) + 32 * c + l] >> (4 * s)) & 15;
        if (format == 13) v |= ((b[16 + l] >> j) & 1) << 4;
        *q = v;
        const int sc = j < 4 ? p[j] & 63 : (p[j + 4] & 15) | (p[j - 4] >> 6) << 4;
        const int m = j < 4 ? p[j + 4] & 63 : (p[j + 4] >> 4) | (p[j] >> 6) << 4;
        *scale = ref_half(get16(b)) * (float)sc;
        *offset = -(ref_half(get16(b + 2)) * (float)m);
        return;
    }
    default: {  // Q6_K: ql[128], qh[64], scales[16] (int8), d
        const int h = e / 128, in = e % 128;
        const int low = (b[64 * h + in % 64] >> (4 * (in / 64))) & 15;
        const int up = (b[128 + 32 * h + in % 32] >> (2 * (in / 32))) & 3;
        *q = (low | up << 4) - 32;
        *scale = ref_half(get16(b + 208)) * (float)(int8_t)b[192 + g];
        return;
    }
    }
}

static void ref_kq_row_element(int format, const uint8_t *row, int i, int *q, float *scale, float *offset) {
    ref_kq_element(format, row + (size_t)(i / kq_size(format)) * kq_bytes(format), i % kq_size(format), q, scale, offset);
}

// Per token and per 16 activations, d·Σq (float, as QuantBlocks.groupSums): the factor of the offsets.
static void ref_sums16(const int8_t *q, const float *d, int tokens, int k, float *sums16) {
    for (int t = 0; t < tokens; t++)
        for (int g = 0; g < k / 16; g++) {
            int total = 0;
            for (int i = 0; i < 16; i++) total += q[(size_t)t * k + 16 * g + i];
            sums16[t * (k / 16) + g] = d[t * (k / 32) + g / 2] * (float)total;
        }
}

// Σ over groups of 16 of scale·dx·Σ qw·qx + offset·sums16, in double.
static double ref_kq_row_token(int format, const uint8_t *row, const int8_t *q, const float *d, const float *sums16, int k) {
    double total = 0;
    for (int g = 0; g < k / 16; g++) {
        long dot = 0;
        float scale = 0, offset = 0;
        for (int i = 16 * g; i < 16 * g + 16; i++) {
            int qw;
            ref_kq_row_element(format, row, i, &qw, &scale, &offset);
            dot += (long)qw * q[i];
        }
        total += (double)scale * d[g / 2] * (double)dot + (double)offset * sums16[g];
    }
    return total;
}

static const int kqRowCounts[] = {1, 3, 4, 5, 7, 13, 17}, kqTokenCounts[] = {1, 2, 3, 4, 5, 7, 9};
static const int kqSuperKs[] = {256, 512, 768}, kqBlockKs[] = {32, 96, 160, 544};

// Exact: scale·q + offset in float is what every tier computes, so the NMSE is 0 unless a value is wrong.
static int test_dequantize_kq(const Tier *tier, Stat *st) {
    for (int f = 0; f < 7; f++) {
        const int format = kqFormats[f], super = kq_size(format) == 256;
        for (int c = 0; c < (super ? 3 : 4); c++) {
            const int k = super ? kqSuperKs[c] : kqBlockKs[c];
            uint8_t *row = malloc(kq_row_bytes(format, k));
            random_kq_row(format, row, k);
            float *got = malloc((k + 1) * sizeof(float));
            double *want = malloc(k * sizeof(double));
            got[k] = sentinel;
            tier->dequantizeKq(format, row, got, (size_t)k);
            for (int i = 0; i < k; i++) {
                int q; float scale, offset;
                ref_kq_row_element(format, row, i, &q, &scale, &offset);
                want[i] = (double)((float)(scale * (float)q) + offset);
            }
            char what[64];
            snprintf(what, sizeof what, "format %d k %d", format, k);
            check(st, what, got, want, (size_t)k);
            check_sentinels(st, what, got + k, 1);
            free(row); free(got); free(want);
        }
    }
    return 0;
}

// `extreme` (Q5_0 only): every weight at its largest stored value (nibbles and fifth bits all set: 31) and
// every activation at +1 or, for odd tokens, −1 (q = ±127): the int16 sums of 16-bit kernels at their
// limit, where random values almost never go.
static void gemm_kq_case_values(const Tier *tier, Stat *st, int format, int rows, int tokens, int k, int acc,
                                int extreme) {
    const size_t rb = kq_row_bytes(format, k);
    const int blocks = k / 32, groups = k / 16, ldy = rows + 2;
    uint8_t *w = malloc(rb * rows);
    for (int r = 0; r < rows; r++) random_kq_row(format, w + r * rb, k);
    float *x = malloc((size_t)tokens * k * sizeof(float));
    fill(x, (size_t)tokens * k);
    if (extreme) {
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocks; b++) memset(w + r * rb + (size_t)b * 22 + 2, 0xFF, 20);
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < k; i++) x[(size_t)t * k + i] = t % 2 ? -1.0f : 1.0f;
    }
    int8_t *q = malloc((size_t)tokens * k);
    float *d = malloc((size_t)tokens * blocks * sizeof(float)), *s = malloc((size_t)tokens * blocks * sizeof(float));
    float *sums16 = malloc((size_t)tokens * groups * sizeof(float));
    ref_quantize(x, tokens, k, q, d, s);
    ref_sums16(q, d, tokens, k, sums16);
    float *y = malloc((size_t)tokens * ldy * sizeof(float));
    double *want = malloc((size_t)tokens * rows * sizeof(double));
    prepare_output(y, want, rows, tokens, ldy, acc);
    tier->gemmKq(format, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++)
            want[t * rows + r] += ref_kq_row_token(format, w + r * rb, q + (size_t)t * k, d + t * blocks,
                                                   sums16 + t * groups, k);
    char what[96];
    snprintf(what, sizeof what, "format %d rows %d tokens %d k %d accumulate %d%s", format, rows, tokens, k, acc,
             extreme ? " extreme" : "");
    check_output(st, what, y, want, rows, tokens, ldy);
    free(w); free(x); free(q); free(d); free(s); free(sums16); free(y); free(want);
}

static void gemm_kq_case(const Tier *tier, Stat *st, int format, int rows, int tokens, int k, int acc) {
    gemm_kq_case_values(tier, st, format, rows, tokens, k, acc, 0);
}

static int test_gemm_kq(const Tier *tier, Stat *st) {
    for (int f = 0; f < 7; f++) {
        const int format = kqFormats[f], super = kq_size(format) == 256;
        if (tier->kqQ5_0Only && format != 6) continue;
        for (int a = 0; a < 7; a++) for (int b = 0; b < 7; b++) for (int c = 0; c < (super ? 3 : 4); c++)
            gemm_kq_case(tier, st, format, kqRowCounts[a], kqTokenCounts[b], super ? kqSuperKs[c] : kqBlockKs[c],
                         (a + b + c) % 2);
    }
    for (int c = 0; c < 4; c++) gemm_kq_case_values(tier, st, 6, 17, 3, kqBlockKs[c], c % 2, 1);
    return 0;
}

typedef int (*TestFunction)(const Tier *, Stat *);

// Runs every kernel a tier has; prints one line per kernel: cases, worst NMSE, threshold, controls.
static int run_tier(const Tier *tier) {
    struct { const char *name; const void *present; TestFunction test; double threshold; } kernels[] = {
        {"dequantize_row", (const void *)tier->dequantize, test_dequantize, 1e-12},
        {"dot", (const void *)tier->dot, test_dot, 1e-9},
        {"dot_rows", (const void *)tier->dotRows, test_dot_rows, 1e-9},
        {"panel_gemm_f32", (const void *)tier->panel, test_panel, 1e-9},
        {"quantize_q8", (const void *)tier->quantize, test_quantize, 0},
        {"gemm_q8 (Q8_0,Q4_0,Q4_1)", (const void *)tier->gemm, test_gemm, 1e-9},
        {"dequantize_row (Q5_*,Q*_K)", (const void *)tier->dequantizeKq, test_dequantize_kq, 1e-12},
        {"gemm_kq (Q5_0,Q5_1,Q2_K-Q6_K)", (const void *)tier->gemmKq, test_gemm_kq, 1e-9},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        if (!kernels[i].present) continue;
        char label[96];
        snprintf(label, sizeof label, "%s/%s", tier->name, kernels[i].name);
        Stat st = {label, kernels[i].threshold, 0, 0, 0, 0};
        kernels[i].test(tier, &st);
        printf("%-14s %-30s cases %4d  worst NMSE %-10.3g threshold %-6.0e controls caught %d/%d  %s\n", tier->name,
               kernels[i].name, st.cases, st.worst, st.threshold, st.cases - st.controlsMissed, st.cases,
               st.failures || st.controlsMissed ? "FAIL" : "ok");
        bad += st.failures + st.controlsMissed;
    }
    return bad;
}

// ---- the tiers of this architecture -----------------------------------------------------------------
#if defined(__aarch64__)
static void gemm_neon_plain(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                            int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_q8_neon(0, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_neon_sdot(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                           int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_q8_neon(1, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_kq_neon_plain(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                               const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_kq_neon(0, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}
static void gemm_kq_neon_sdot(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                              const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_kq_neon(1, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}

// In a child: one sdot product. Returns the signal that ended it (SIGILL expected without dotprod).
static int sdot_child_signal(void) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        uint8_t w[34] = {0};
        int8_t q[32] = {0};
        float d = 1, s = 0, y = 0;
        ck_gemm_q8_neon(1, 8, w, 34, 1, q, &d, &s, 1, 32, &y, 1, 0);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static int run_architecture(int expectDotprod) {
    const int dotprod = ck_has_neon_dotprod();
    printf("aarch64: ck_has_neon %d, ck_has_neon_dotprod %d; the int8 products run %s\n", ck_has_neon(), dotprod,
           dotprod ? "neon-dotprod (sdot)" : "neon (vmull_s8 + vpadalq_s16, no sdot)");
    int bad = 0;
    if (expectDotprod >= 0 && expectDotprod != dotprod) {
        fprintf(stderr, "FAIL: expected dotprod %d, the CPU reports %d\n", expectDotprod, dotprod);
        bad++;
    }
    // The float kernels through ckernels.h's per-architecture entry points, as Swift calls them.
    const Tier neon = {"neon", ck_dequantize_row, ck_panel_gemm, ck_dot_rows, ck_dot, ck_quantize_q8, gemm_neon_plain,
                       ck_dequantize_row, gemm_kq_neon_plain, 0};
    bad += run_tier(&neon);
    if (dotprod) {
        const Tier sdot = {"neon-dotprod", NULL, NULL, NULL, NULL, NULL, gemm_neon_sdot, NULL, gemm_kq_neon_sdot, 0};
        bad += run_tier(&sdot);
    } else {
        const int sig = sdot_child_signal();
        printf("control: an sdot product on this CPU ended with signal %d (%s; qemu says so above)\n", sig,
               sig == SIGILL ? "SIGILL, as it must" : "NOT SIGILL");
        if (sig != SIGILL) bad++;
    }
    return bad;
}

#elif defined(__x86_64__)
static void gemm_avx2_tiles(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                            int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_q8_avx2(f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_vnni_tiles(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                            int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_q8_avx2(-f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_kq_avx2(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                         const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_kq_avx2(0, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}
static void gemm_kq_vnni(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                         const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    ck_gemm_kq_avx2(1, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}
static void panel(int vnni, int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                  int tokens, int k, float *y, int ldy, int acc) {
    void *x = malloc(ck_interleaved_bytes(tokens, k));
    ck_interleave_q8(q, d, s, tokens, k, x);
    ck_gemm_q8_panel(vnni, f, w, rb, rows, x, tokens, k, y, ldy, acc);
    free(x);
}
static void gemm_avx2_panel(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                            int tokens, int k, float *y, int ldy, int acc) {
    panel(0, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_vnni_panel(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                            int tokens, int k, float *y, int ldy, int acc) {
    panel(1, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void rowgroups(int vnni, int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                      const float *s, int tokens, int k, float *y, int ldy, int acc) {
    void *packed = malloc(ck_rg_bytes(f, rows, k));
    ck_rg_pack(f, w, rb, rows, k, packed);
    (vnni ? ck_rg_gemm : ck_rg_gemm_avx2)(f, packed, rows, k, 0, (rows + 15) / 16, q, d, s, tokens, y, ldy, acc);
    free(packed);
}
static void gemm_rowgroups(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d, const float *s,
                           int tokens, int k, float *y, int ldy, int acc) {
    rowgroups(1, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
static void gemm_avx2_rowgroups(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                                const float *s, int tokens, int k, float *y, int ldy, int acc) {
    rowgroups(0, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
}
// Q5_0 through the row groups, from the K-quant test's sums per 16 (the kernels take d·Σq per 32).
static void rowgroups_q5_0(int vnni, int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                           const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    float *s = malloc((size_t)tokens * (k / 32) * sizeof(float));
    for (int i = 0; i < tokens * (k / 32); i++) s[i] = sums16[2 * i] + sums16[2 * i + 1];
    rowgroups(vnni, f, w, rb, rows, q, d, s, tokens, k, y, ldy, acc);
    free(s);
}
static void gemm_kq_rowgroups(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                              const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    rowgroups_q5_0(1, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}
static void gemm_kq_avx2_rowgroups(int f, const void *w, size_t rb, int rows, const int8_t *q, const float *d,
                                   const float *sums16, int tokens, int k, float *y, int ldy, int acc) {
    rowgroups_q5_0(0, f, w, rb, rows, q, d, sums16, tokens, k, y, ldy, acc);
}

static int run_architecture(int expectDotprod) {
    (void)expectDotprod;
    printf("x86-64: ck_has_avx2 %d, ck_has_avx512_vnni %d\n", ck_has_avx2(), ck_has_avx512_vnni());
    if (!ck_has_avx2()) { printf("no AVX2: no C kernel runs on this CPU (the Swift generic path does)\n"); return 0; }
    // The x86 tiers dequantize Q5_0, Q5_1 and the K-quants in Swift (no C row dequantizer for them).
    const Tier avx2 = {"avx2", ck_dequantize_row, ck_panel_gemm, ck_dot_rows, ck_dot, ck_quantize_q8, gemm_avx2_tiles,
                       NULL, gemm_kq_avx2, 0};
    const Tier avx2Panel = {"avx2-panel", NULL, NULL, NULL, NULL, NULL, gemm_avx2_panel, NULL, NULL, 0};
    const Tier avx2Groups = {"avx2-rowgroups", NULL, NULL, NULL, NULL, NULL, gemm_avx2_rowgroups, NULL,
                             gemm_kq_avx2_rowgroups, 1};
    int bad = run_tier(&avx2) + run_tier(&avx2Panel) + run_tier(&avx2Groups);
    if (ck_has_avx512_vnni()) {
        const Tier tiles = {"vnni-tiles", NULL, NULL, NULL, NULL, NULL, gemm_vnni_tiles, NULL, gemm_kq_vnni, 0};
        const Tier panels = {"vnni-panel", NULL, NULL, NULL, NULL, NULL, gemm_vnni_panel, NULL, NULL, 0};
        const Tier groups = {"vnni-rowgroups", NULL, NULL, NULL, NULL, NULL, gemm_rowgroups, NULL, gemm_kq_rowgroups, 1};
        bad += run_tier(&tiles) + run_tier(&panels) + run_tier(&groups);
    } else {
        printf("no AVX-512 VNNI: its kernels are not tested here\n");
    }
    return bad;
}
#else
static int run_architecture(int expectDotprod) {
    (void)expectDotprod;
    printf("neither aarch64 nor x86-64: no C kernel tier to test\n");
    return 0;
}
#endif

int main(int argc, char **argv) {
    int expectDotprod = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verbose")) verbose = 1;
        else if (!strcmp(argv[i], "--first-failure")) stopAtFirstFailure = 1;
        else if (!strcmp(argv[i], "--expect-dotprod") && i + 1 < argc) expectDotprod = !strcmp(argv[++i], "yes");
        else { fprintf(stderr, "usage: %s [--verbose] [--first-failure] [--expect-dotprod yes|no]\n", argv[0]); return 2; }
    }
    const int bad = run_architecture(expectDotprod);
    if (bad) printf("FAILED: %d problem(s)\n", bad);
    else printf("every kernel matches the reference\n");
    return bad ? 1 : 0;
}
