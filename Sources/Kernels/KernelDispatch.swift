import CKernels
import Foundation

/// Which implementation the hot kernels use; picked once, from the CPU's features, in one place.
///
/// `CONCLAVE_KERNELS=generic` forces the portable Swift path (used by tests to compare the two).
public enum KernelBackend: String, Sendable {
    /// AVX2 + FMA + F16C kernels in the CKernels target.
    case avx2
    /// Portable Swift SIMD, compiled for the baseline CPU; always available and the reference.
    case generic

    public static let selected: KernelBackend = {
        if ProcessInfo.processInfo.environment["CONCLAVE_KERNELS"] == "generic" { return .generic }
        return ck_has_avx2() != 0 ? .avx2 : .generic
    }()
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
        }
    }
}
