import Foundation
import Kernels
import ModelFormats

/// The rotary frequencies a configuration asks for: θ^(−2i/d) divided, pair by pair, by its rope scaling's
/// divisors. `LlamaModel.inverseFrequencies` keeps the one table that inference and training both read.
enum RopeFrequencies {
    /// The inverse frequencies of `c`'s rotary dimension (the head's, or its rotated part's with partial rotary),
    /// theta and rope scaling.
    static func inverse(_ c: LlamaConfiguration) -> [Float] {
        RoPE.inverseFrequencies(headDimension: c.rotaryDim, theta: c.ropeTheta, divisors: divisors(c))
    }

    /// What cos and sin are multiplied by: LongRoPE's attention factor (transformers' `attention_scaling`), else 1.
    static func magnitude(_ c: LlamaConfiguration) -> Float {
        if case .longrope(_, _, let attention, _) = c.ropeScaling { return Float(attention) }
        return 1
    }

    /// The divisor of each of the d/2 frequencies, or nil when the scaling is none.
    ///
    /// `linear` divides every frequency by its factor (transformers' `_compute_linear_scaling_rope_parameters`).
    /// `llama3` (transformers' `_compute_llama3_parameters`; Meta's `apply_scaling` in Llama 3.1) keeps frequencies
    /// whose wavelength 2π/f is below `original / high_freq_factor`, divides those above `original /
    /// low_freq_factor` by `factor`, and between them takes f·((1 − s)/factor + s) with s = (original/wavelength −
    /// low) / (high − low); the divisor 1/((1 − s)/factor + s) is the one convert_hf_to_gguf.py writes to
    /// `rope_freqs.weight` and ggml's rope divides by (`theta / ff`), so a GGUF's factors are used as they are.
    /// `dynamic` scales nothing within max_position_embeddings, past which no position is computed. `longrope`
    /// divides by its short factors, within the original context past which no position is computed.
    static func divisors(_ c: LlamaConfiguration) -> [Double]? {
        let half = c.headDim / 2
        switch c.ropeScaling {
        case .none, .dynamic:
            return nil
        case .linear(let factor):
            return [Double](repeating: factor, count: half)
        case .frequencyFactors(let factors):
            return factors.map(Double.init)
        case .longrope(let short, _, _, _):
            return short
        case let .llama3(factor, low, high, original):
            let lowFrequencyWavelength = Double(original) / low, highFrequencyWavelength = Double(original) / high
            return (0..<half).map { i in
                let wavelength = 2 * Double.pi * pow(c.ropeTheta, Double(2 * i) / Double(c.headDim))
                if wavelength < highFrequencyWavelength { return 1 }
                if wavelength > lowFrequencyWavelength { return factor }
                let smooth = (Double(original) / wavelength - low) / (high - low)
                return 1 / ((1 - smooth) / factor + smooth)
            }
        }
    }
}
