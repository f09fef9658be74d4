import CKernels
import Foundation

/// Root-mean-square layer normalisation (Zhang & Sennrich 2019), as in Llama.
public enum RMSNorm {
    /// out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · weight. x, out: (tokens, width); may alias.
    public static func forward(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, tokens: Int, width: Int,
                               eps: Float, out: UnsafeMutablePointer<Float>) {
        for t in 0..<tokens {
            let row = x + t * width
            let meanSquare = Vector.dot(row, row, width) / Float(width)
            let scale = 1 / (meanSquare + eps).squareRoot()
            let o = out + t * width
            for i in 0..<width { o[i] = row[i] * scale * weight[i] }
        }
    }
}

/// Rotary position embeddings (Su et al. 2021, RoFormer).
public enum RoPE {
    /// Which elements of a head rotate together.
    public enum Layout: Sendable {
        /// Pairs (2i, 2i+1): llama.cpp's layout, for GGUF files whose Q/K rows were permuted at conversion.
        case adjacentPairs
        /// Pairs (i, i + d/2): HF transformers' `rotate_half` layout.
        case halfSplit
    }

    /// The rotation angles' inverse frequencies θ^(−2i/d) for i in 0..<d/2, each divided by `divisors[i]` when
    /// given (a rope scaling's per-pair factors), in Double and rounded once.
    public static func inverseFrequencies(headDimension: Int, theta: Double, divisors: [Double]? = nil) -> [Float] {
        precondition(divisors == nil || divisors!.count == headDimension / 2, "one divisor per rotary pair")
        return (0..<(headDimension / 2)).map {
            Float(1.0 / pow(theta, Double(2 * $0) / Double(headDimension)) / (divisors?[$0] ?? 1))
        }
    }

    /// Rotates every head of x in place. x: (tokens, heads·headDimension); position of row t is positions[t].
    /// With `rotaryDimension` (partial rotary, Phi-4-mini's), only each head's first that many values rotate,
    /// paired within them, with `rotaryDimension / 2` inverse frequencies; the rest pass through.
    public static func apply(_ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDimension: Int,
                             positions: UnsafePointer<Int>, inverseFrequencies: UnsafePointer<Float>,
                             layout: Layout, inverse: Bool = false, rotaryDimension: Int? = nil) {
        let half = (rotaryDimension ?? headDimension) / 2
        for t in 0..<tokens {
            let position = Double(positions[t])
            for i in 0..<half {
                // Angles in Double then rounded, as HF computes freqs in float32 then cos/sin: the
                // difference is below 1e-6 for the positions we use.
                let angle = Float(position) * inverseFrequencies[i]
                let c = cos(angle), s = inverse ? -sin(angle) : sin(angle)
                for h in 0..<heads {
                    let base = x + t * heads * headDimension + h * headDimension
                    let (a, b) = layout == .adjacentPairs ? (2 * i, 2 * i + 1) : (i, i + half)
                    let x0 = base[a], x1 = base[b]
                    base[a] = x0 * c - x1 * s
                    base[b] = x0 * s + x1 * c
                }
            }
        }
    }
}

/// Softmax and the SwiGLU activation.
public enum Activation {
    /// In-place numerically stable softmax of x[0..<n] (exponentials from `Exponential`).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        guard n > 0 else { return }
        let maximum = Exponential.largest(x, n)
        let sum = Exponential.exponentiate(x, n, shift: maximum)
        Vector.scale(x, Float(1 / sum), n)
    }

    /// SiLU(x) = x·σ(x).
    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + Exponential.exp(-x)) }

    /// SiLU(x)·u lane by lane.
    @inline(__always)
    static func swiglu(_ g: SIMD16<Float>, _ u: SIMD16<Float>) -> SIMD16<Float> {
        g / (1 + Exponential.exp(-g)) * u
    }

    /// gate[i] = SiLU(gate[i]) · up[i] (Shazeer 2020, GLU variants), in place over n elements.
    public static func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        swiglu(gate: gate, up: up, out: gate, n)
    }

    /// out[i] = SiLU(gate[i]) · up[i] over n elements; out may alias gate or up. On the avx512vnni and avx2 tiers
    /// `ck_swiglu_avx512` and `ck_swiglu_avx2`, each lane bit for bit `genericSwiglu`'s on one zmm or two ymm
    /// instead of four SSE registers (the baseline this module is compiled for).
    public static func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                              _ n: Int) {
        if KernelBackend.selected == .avx512vnni { return ck_swiglu_avx512(gate, up, out, n) }
        if KernelBackend.selected == .avx2 { return ck_swiglu_avx2(gate, up, out, n) }
        genericSwiglu(gate: gate, up: up, out: out, n)
    }

    /// `swiglu` in portable Swift SIMD: the reference.
    static func genericSwiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                              _ n: Int) {
        let g = UnsafeRawPointer(gate), u = UnsafeRawPointer(up), o = UnsafeMutableRawPointer(out)
        var i = 0
        while i + 16 <= n {
            let value = swiglu(g.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self),
                               u.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            o.storeBytes(of: value, toByteOffset: 4 * i, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            out[i] = silu(gate[i]) * up[i]
            i += 1
        }
    }

    /// log Σ exp(x[i]) (summed in Double) and the index of the first largest value.
    public static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> (value: Double, argmax: Int) {
        let (maximum, best) = Exponential.maximum(x, n)
        guard maximum.isFinite else { return (Double(maximum), best) }
        let total = Exponential.sumOfExponentials(x, n, shift: maximum)
        return (Double(maximum) + log(total), best)
    }

    /// Softmax cross-entropy of one row of logits against `label`, and its gradient in place.
    ///
    /// Returns −log softmax(x)[label] in Double; leaves x[i] = scale·(softmax(x)[i] − [i = label]),
    /// the gradient of scale × that loss. One exponential per entry.
    public static func crossEntropyGradient(_ x: UnsafeMutablePointer<Float>, _ n: Int, label: Int,
                                            scale: Float) -> Double {
        require(label >= 0 && label < n, "label \(label) outside 0..<\(n)")
        let target = x[label]
        let maximum = Exponential.largest(x, n)
        let sum = Exponential.exponentiate(x, n, shift: maximum)
        Vector.scale(x, Float(Double(scale) / sum), n)
        x[label] -= scale
        return Double(maximum) + log(sum) - Double(target)
    }
}
