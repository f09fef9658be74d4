import Kernels

/// The LoRA branch y += s·B(A x) of one adapted projection over a sequence, and its backward pass, as
/// vector operations split over tokens (or over the rank) on the model's thread pool.
///
/// Shapes: A (rank, in), B (out, rank), x (tokens, in), hidden u = A x (tokens, rank), y (tokens, out).
enum LoRAKernels {
    /// Floats of scratch that `backward` needs for `tokens` rows and projections at most `widest` wide.
    static func backwardScratch(rank: Int, tokens: Int, widest: Int) -> Int { 2 * rank * widest + tokens * rank }

    /// scratch[k·out + o] = scaling·B[o, k]: B transposed so each rank row is a contiguous vector.
    private static func scaledTranspose(_ b: UnsafePointer<Float>, rank: Int, outFeatures: Int, scaling: Float,
                                        into scratch: UnsafeMutablePointer<Float>) {
        for o in 0..<outFeatures {
            for k in 0..<rank { scratch[k * outFeatures + o] = scaling * b[o * rank + k] }
        }
    }

    /// hidden = x Aᵀ (written), output += s·hidden Bᵀ. scratch: rank·outFeatures floats.
    static func forward(a: UnsafePointer<Float>, b: UnsafePointer<Float>, rank: Int, inFeatures: Int, outFeatures: Int,
                        scaling: Float, input: UnsafePointer<Float>, tokens: Int, hidden: UnsafeMutablePointer<Float>,
                        output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        scaledTranspose(b, rank: rank, outFeatures: outFeatures, scaling: scaling, into: scratch)
        nonisolated(unsafe) let a = a, input = input, hidden = hidden, output = output, bt = scratch
        pool.parallelFor(tokens, minimumChunk: 8) { range in
            for t in range {
                let x = input + t * inFeatures, u = hidden + t * rank, y = output + t * outFeatures
                for k in 0..<rank { u[k] = Vector.dot(a + k * inFeatures, x, inFeatures) }
                Vector.weightedRowSum(into: y, rows: bt, rowStride: outFeatures, coefficients: u, coefficientStride: 1,
                                      count: rank, width: outFeatures, accumulate: true)
            }
        }
    }

    /// Given dy = ∂L/∂y: gradB += weight·s·dyᵀ hidden, gradA += weight·(s·dy B)ᵀ x, gradInput += (s·dy B) A.
    /// scratch: `backwardScratch(rank:tokens:widest:)` floats with widest ≥ outFeatures.
    static func backward(a: UnsafePointer<Float>, b: UnsafePointer<Float>, rank: Int, inFeatures: Int, outFeatures: Int,
                         scaling: Float, weight: Float, input: UnsafePointer<Float>, hidden: UnsafePointer<Float>,
                         gradOutput: UnsafePointer<Float>, tokens: Int, gradA: UnsafeMutablePointer<Float>,
                         gradB: UnsafeMutablePointer<Float>, gradInput: UnsafeMutablePointer<Float>,
                         scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let bt = scratch, gradBt = scratch + rank * outFeatures, gradHidden = gradBt + rank * outFeatures
        scaledTranspose(b, rank: rank, outFeatures: outFeatures, scaling: scaling, into: bt)
        nonisolated(unsafe) let a = a, input = input, hidden = hidden, gradOutput = gradOutput
        nonisolated(unsafe) let gradA = gradA, gradInput = gradInput, bt2 = bt, gradBt2 = gradBt, gradHidden2 = gradHidden

        // Per token: ∂L/∂u = s·dy B, and ∂L/∂x += (∂L/∂u) A. Each thread writes its own rows.
        pool.parallelFor(tokens, minimumChunk: 8) { range in
            for t in range {
                let dy = gradOutput + t * outFeatures, gu = gradHidden2 + t * rank, dx = gradInput + t * inFeatures
                for k in 0..<rank { gu[k] = Vector.dot(dy, bt2 + k * outFeatures, outFeatures) }
                Vector.weightedRowSum(into: dx, rows: a, rowStride: inFeatures, coefficients: gu, coefficientStride: 1,
                                      count: rank, width: inFeatures, accumulate: true)
                if weight != 1 { Vector.scale(gu, weight, rank) }  // ∂L/∂u now only feeds gradA, weighted
            }
        }
        // Per rank row: (∂L/∂B)ᵀ[k] = weight·s·Σ_t u[t, k]·dy[t], ∂L/∂A[k] += weight·Σ_t (∂L/∂u)[t, k]·x[t], each a
        // weighted sum of rows kept in registers (not one pass over the output row per token).
        let scaledWeight = weight * scaling
        pool.parallelFor(rank) { range in
            for k in range {
                let gbt = gradBt2 + k * outFeatures, ga = gradA + k * inFeatures
                Vector.weightedRowSum(into: gbt, rows: gradOutput, rowStride: outFeatures, coefficients: hidden + k,
                                      coefficientStride: rank, count: tokens, width: outFeatures, accumulate: false)
                Vector.scale(gbt, scaledWeight, outFeatures)
                Vector.weightedRowSum(into: ga, rows: input, rowStride: inFeatures, coefficients: gradHidden2 + k,
                                      coefficientStride: rank, count: tokens, width: inFeatures, accumulate: true)
            }
        }
        for o in 0..<outFeatures {
            for k in 0..<rank { gradB[o * rank + k] += gradBt[k * outFeatures + o] }
        }
    }
}
