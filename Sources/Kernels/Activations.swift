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

    /// The rotation angles' inverse frequencies θ^(−2i/d) for i in 0..<d/2.
    public static func inverseFrequencies(headDimension: Int, theta: Double) -> [Float] {
        (0..<(headDimension / 2)).map { Float(1.0 / pow(theta, Double(2 * $0) / Double(headDimension))) }
    }

    /// Rotates every head of x in place. x: (tokens, heads·headDimension); position of row t is positions[t].
    public static func apply(_ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDimension: Int,
                             positions: UnsafePointer<Int>, inverseFrequencies: UnsafePointer<Float>,
                             layout: Layout, inverse: Bool = false) {
        let half = headDimension / 2
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
    /// In-place numerically stable softmax of x[0..<n].
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var maximum = -Float.infinity
        for i in 0..<n { maximum = max(maximum, x[i]) }
        var sum: Float = 0
        for i in 0..<n {
            let e = exp(x[i] - maximum)
            x[i] = e
            sum += e
        }
        let inverse = 1 / sum
        for i in 0..<n { x[i] *= inverse }
    }

    /// SiLU(x) = x·σ(x).
    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + exp(-x)) }

    /// gate[i] = SiLU(gate[i]) · up[i] (Shazeer 2020, GLU variants), in place over n elements.
    public static func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { gate[i] = silu(gate[i]) * up[i] }
    }

    /// log Σ exp(x[i]) and, optionally, the index of the largest value.
    public static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> (value: Double, argmax: Int) {
        var maximum = -Float.infinity, best = 0
        for i in 0..<n where x[i] > maximum {
            maximum = x[i]
            best = i
        }
        var sum = 0.0
        for i in 0..<n { sum += Double(exp(x[i] - maximum)) }
        return (Double(maximum) + log(sum), best)
    }
}
