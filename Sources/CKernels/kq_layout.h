// Block geometry of Q5_0, Q5_1 and the K-quants (ggml type numbers), shared by the x86 and NEON kernels.
// Internal to CKernels (not in include/): the Swift side has its own table (Kernels/QuantBlocks.swift).
#ifndef CKERNELS_KQ_LAYOUT_H
#define CKERNELS_KQ_LAYOUT_H
#include <stddef.h>

// Values per block: 32 for Q5_0 (6) and Q5_1 (7), 256 for the K-quants (10–14).
static inline int kq_block_size(int format) { return format == 6 || format == 7 ? 32 : 256; }

// Bytes per block: Q5_0 22, Q5_1 24, Q2_K 84, Q3_K 110, Q4_K 144, Q5_K 176, Q6_K 210.
static inline size_t kq_block_bytes(int format) {
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
#endif
