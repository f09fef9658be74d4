import Foundation
import Kernels
import ModelFormats

/// The rotary frequencies a configuration asks for: θ^(−2i/d) divided, pair by pair, by its rope scaling's
/// divisors. `LlamaModel.inverseFrequencies` keeps the one table that inference and training both read (and
/// `longInverseFrequencies` LongRoPE's second one, for the sessions `longFactors(context:)` says).
enum RopeFrequencies {
    /// The inverse frequencies of `c`'s rotary dimension (the head's, or its rotated part's with partial rotary),
    /// theta and rope scaling.
    static func inverse(_ c: LlamaConfiguration) -> [Float] {
        RoPE.inverseFrequencies(headDimension: c.rotaryDim, theta: c.ropeTheta, divisors: divisors(c))
    }

    /// LongRoPE's frequencies with its long factors; nil for every other scaling.
    static func longInverse(_ c: LlamaConfiguration) -> [Float]? {
        guard case .longrope(_, let long, _, _) = c.ropeScaling else { return nil }
        return RoPE.inverseFrequencies(headDimension: c.rotaryDim, theta: c.ropeTheta, divisors: long)
    }

    /// Whether a session opened for `context` positions rotates by LongRoPE's long factors: when `context` exceeds
    /// the original context, for every position of the session, its first ones included.
    ///
    /// The rule is llama.cpp's (`llama_model::get_rope_factors`: long when the context size n_ctx exceeds
    /// `rope.scaling.original_context_length`), chosen once per session because a KV cache keeps keys rotated by
    /// one set: transformers instead switches per forward call by the longest position so far
    /// (`longrope_frequency_update`), which over a cache mixes keys rotated by both sets. For a whole sequence of n
    /// tokens (scoring, training) the context is n, and the two agree: long exactly when n exceeds the original
    /// context. A session within the original context is refused past it (`longest(context:)`).
    static func longFactors(_ c: LlamaConfiguration, context: Int) -> Bool {
        guard case .longrope(_, _, _, let original) = c.ropeScaling else { return false }
        return context > original
    }

    /// The most positions a session opened for `context` positions computes: the model's context length, or
    /// LongRoPE's original context when the session rotates by its short factors.
    static func longest(_ c: LlamaConfiguration, context: Int) -> Int {
        guard case .longrope(_, _, _, let original) = c.ropeScaling, !longFactors(c, context: context) else {
            return c.contextLength
        }
        return min(c.contextLength, original)
    }

    /// What cos and sin are multiplied by: LongRoPE's or YaRN's attention factor (transformers' `attention_scaling`,
    /// ggml's `mscale`), else 1.
    static func magnitude(_ c: LlamaConfiguration) -> Float {
        switch c.ropeScaling {
        case .longrope(_, _, let attention, _), .yarn(_, _, _, _, _, let attention): return Float(attention)
        case .none, .linear, .llama3, .frequencyFactors, .dynamic: return 1
        }
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
    /// divides by its short factors (the long ones: `longInverse`). `yarn`: see
    /// `yarnDivisors`.
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
        case let .yarn(factor, original, betaFast, betaSlow, truncate, _):
            return yarnDivisors(c, factor: factor, original: original, betaFast: betaFast, betaSlow: betaSlow,
                                truncate: truncate)
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

    /// YaRN's divisors (transformers' `_compute_yarn_parameters`; ggml's `rope_yarn` with ext_factor 1). Pair i of
    /// the d rotary dimensions turns original·θ^(−2i/d) / 2π times within the original context, so the pair that
    /// turns r times is d·ln(original / 2πr) / (2 ln θ) (`find_correction_dim`); between the pairs for betaFast
    /// (low) and betaSlow (high) rotations, floored and ceiled when `truncate` and clamped to [0, d − 1], the ramp
    /// r_i = clamp((i − low) / (high − low), 0, 1) blends the kept frequency f into the interpolated f / factor:
    /// f·(1 − r_i) + (f / factor)·r_i, the divisor 1 / (1 − r_i + r_i / factor). A zero-width ramp is widened by
    /// 0.001, as both references do.
    static func yarnDivisors(_ c: LlamaConfiguration, factor: Double, original: Int, betaFast: Double, betaSlow: Double,
                             truncate: Bool) -> [Double] {
        let d = Double(c.rotaryDim)
        func correction(_ rotations: Double) -> Double {
            d * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(c.ropeTheta))
        }
        var low = correction(betaFast), high = correction(betaSlow)
        if truncate { (low, high) = (low.rounded(.down), high.rounded(.up)) }
        (low, high) = (max(low, 0), min(high, d - 1))
        if low == high { high += 0.001 }
        return (0..<(c.rotaryDim / 2)).map { i in
            let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
            return 1 / (1 - ramp + ramp / factor)
        }
    }
}
