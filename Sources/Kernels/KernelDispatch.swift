import CKernels
import Foundation

/// Which implementation the hot kernels use; picked once, from the CPU's features, in one place.
///
/// `CONCLAVE_KERNELS=generic` (or `avx2` on x86-64, `neon` on aarch64) forces a lower tier, so tests and
/// benchmarks can compare them.
///
/// The table, per operation and tier (formats Q8_0, Q4_0, Q4_1 unless noted):
///
/// | operation                              | avx512vnni                    | avx2                          | neondot / neon (aarch64)          | generic              |
/// |----------------------------------------|-------------------------------|-------------------------------|-----------------------------------|----------------------|
/// | float32 product, any format            | dequantized panel, FMA        | dequantized panel, FMA        | dequantized panel, FMLA           | Swift SIMD, 4 rows   |
/// | int8 product, model inference/training (Q4_0, Q4_1, Q5_0, Q8_0) | 16-row groups, zmm vpdpbusd (Q5_0's fifth bits: one masked move per vector) | 16-row groups, 2 × 8 rows, ymm vpmaddubsw + vpmaddwd (Q5_0's fifth bits expanded from a mask, its int16 pairs widened every four vectors; training's transposed Q8_0 copies: 7-bit activations, no sign trick) | (the row below) | Swift SIMD, 4 rows |
/// | int8 product, 1-3 tokens, file layout  | row tiles, vpdpbusd (ymm)     | row tiles, vpmaddubsw         | 4×4 tiles: sdot / vmull+vpadal    | (SSE2 pmaddwd)       |
/// | int8 product, ≥ 4 tokens, file layout  | interleaved panel, vpdpbusd   | interleaved panel, vpmaddubsw | 4×4 tiles: sdot / vmull+vpadal    | (GenericInt8)        |
/// | attention, one query row (decoding)    | 4 keys per pass, AVX2 FMA; P·V 64 columns per pass | the same | 4 keys per pass, FMLA; P·V Swift SIMD16 | Swift SIMD8 dot, SIMD16 |
/// | attention, blocks of 4 rows (tileProduct: scores, P·V; training's dP, dQ, dK, dV) | 4 rows × 64 columns, zmm FMA | 4 rows × 16 columns, ymm FMA | Swift SIMD16, a row at a time | Swift SIMD16, a row at a time |
/// | exponentials of softmax and cross-entropy (Exponential.exponentiate) | zmm, lanes bit-equal to the Swift ones | Swift SIMD16 | Swift SIMD16 | Swift SIMD16 (SSE2 on x86-64) |
/// | SwiGLU and its backward, softmax's maximum (Activation.swiglu, swigluBackward, Exponential.largest) | zmm, lanes bit-equal to the Swift ones | ymm, the same | Swift SIMD16 | Swift SIMD16 (SSE2 on x86-64) |
/// | activation quantization                | AVX2                          | AVX2                          | NEON (vcvtnq)                     | Swift                |
/// | dequantize row (f16, q8_0, q4_0, q4_1) | AVX2 + F16C                   | AVX2 + F16C                   | NEON (fcvtl)                      | Swift SIMD (q*)      |
/// | int8 product, Q5_0 (file layout) Q5_1 Q2_K-Q6_K | row decoded once, vpdpbusd | row decoded once, vpmaddubsw | row decoded once, 4 tokens: sdot / vmull+vpadal | Swift SIMD dots |
/// | dequantize row, Q5_0 Q5_1 Q2_K-Q6_K    | (generic)                     | (generic)                     | NEON, block decoded then scaled   | Swift, per element   |
///
/// The NEON kernels are tested against a C reference under qemu-aarch64 (`make test-arm`), not on ARM hardware.
/// The generic column is portable Swift SIMD (SSE2 on any x86-64; other targets through the same LLVM vector
/// IR, not compiled here); its scalar references (`Linear.scalarInt8Forward`, `Dequantize.scalarRow`) stay
/// for the tests.
public enum KernelBackend: String, Sendable {
    /// AVX2 kernels, plus AVX-512 VNNI (vpdpbusd) for int8 products: 16-row groups on 512-bit vectors.
    case avx512vnni
    /// AVX2 + FMA + F16C kernels in the CKernels target.
    case avx2
    /// aarch64 NEON kernels, with sdot (FEAT_DotProd) for the int8 products.
    case neondot
    /// aarch64 NEON kernels, int8 products by vmull_s8 + vpadalq_s16 (CPUs without the dot-product extension).
    case neon
    /// Portable Swift SIMD, compiled for the baseline CPU; always available and the reference.
    case generic

    public static let selected: KernelBackend = {
        let forced = ProcessInfo.processInfo.environment["CONCLAVE_KERNELS"]
        guard forced != "generic" else { return .generic }
        if ck_has_neon() != 0 { return forced != "neon" && ck_has_neon_dotprod() != 0 ? .neondot : .neon }
        guard ck_has_avx2() != 0 else { return .generic }
        return forced != "avx2" && ck_has_avx512_vnni() != 0 ? .avx512vnni : .avx2
    }()

    /// Whether the AVX2 kernels may run (true on both x86 tiers).
    public var hasAVX2: Bool { self == .avx2 || self == .avx512vnni }

    /// Whether this architecture's C float kernels (`ck_dot`, `ck_panel_gemm`, ...) may run: AVX2 or NEON.
    public var hasCKernels: Bool { self != .generic }
}

extension KernelBackend {
    /// The type number `ck_dequantize_row` takes for `format` on this tier, or nil where the tier has no C row
    /// dequantizer for it: f32, f16, Q8_0, Q4_0 and Q4_1 on every C tier; on NEON also Q5_0, Q5_1 and Q2_K-Q6_K.
    func cDequantizeType(_ format: WeightFormat) -> Int32? {
        guard hasCKernels else { return nil }
        if let type = format.ggmlTypeNumber { return type }
        return self == .neon || self == .neondot ? format.blockTypeNumber : nil
    }
}

extension WeightFormat {
    /// ggml's type number, as the C kernels expect it (bf16 has no C path).
    var ggmlTypeNumber: Int32? {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 8
        case .bf16: return nil
        // Their kernels are in QuantBlocks (Swift) and kernels_kquants.c, called by their own entry points.
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return nil
        }
    }
}
