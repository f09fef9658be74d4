import CKernels
import Foundation

/// Backward passes of the normalisation and activation kernels (llm.c style: add into gradients).
extension RMSNorm {
    /// Given y = x · r · w with r = 1/√(mean(x²) + eps), adds ∂L/∂x into gradInput.
    ///
    /// ∂L/∂x_i = r·w_i·g_i − (r³/n)·x_i·Σ_j w_j·g_j·x_j.  x, gradOutput, gradInput: (tokens, width).
    public static func backward(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                                tokens: Int, width: Int, eps: Float, gradInput: UnsafeMutablePointer<Float>) {
        for t in 0..<tokens {
            let row = x + t * width, g = gradOutput + t * width, out = gradInput + t * width
            let meanSquare = Vector.dot(row, row, width) / Float(width)
            let r = 1 / (meanSquare + eps).squareRoot()
            var projection: Float = 0
            for i in 0..<width { projection += weight[i] * g[i] * row[i] }
            let coefficient = r * r * r * projection / Float(width)
            for i in 0..<width { out[i] += r * weight[i] * g[i] - coefficient * row[i] }
        }
    }
}

extension Activation {
    /// SwiGLU backward: with a = SiLU(g)·u, writes ∂L/∂g into gradGate and ∂L/∂u into gradUp.
    ///
    /// SiLU'(g) = σ(g)·(1 + g·(1 − σ(g))).
    /// On the avx512vnni and avx2 tiers `ck_swiglu_backward_avx512` and `_avx2`, each lane bit for bit
    /// `genericSwigluBackward`'s.
    public static func swigluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                      gradOutput: UnsafePointer<Float>, gradGate: UnsafeMutablePointer<Float>,
                                      gradUp: UnsafeMutablePointer<Float>, _ n: Int) {
        if KernelBackend.selected == .avx512vnni {
            return ck_swiglu_backward_avx512(gate, up, gradOutput, gradGate, gradUp, n)
        }
        if KernelBackend.selected == .avx2 { return ck_swiglu_backward_avx2(gate, up, gradOutput, gradGate, gradUp, n) }
        genericSwigluBackward(gate: gate, up: up, gradOutput: gradOutput, gradGate: gradGate, gradUp: gradUp, n)
    }

    /// `swigluBackward` in portable Swift SIMD: the reference.
    static func genericSwigluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                      gradOutput: UnsafePointer<Float>, gradGate: UnsafeMutablePointer<Float>,
                                      gradUp: UnsafeMutablePointer<Float>, _ n: Int) {
        let g = UnsafeRawPointer(gate), u = UnsafeRawPointer(up), dy = UnsafeRawPointer(gradOutput)
        let dg = UnsafeMutableRawPointer(gradGate), du = UnsafeMutableRawPointer(gradUp)
        var i = 0
        while i + 16 <= n {
            let x = g.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
            let d = dy.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
            let sigmoid = 1 / (1 + Exponential.exp(-x))
            du.storeBytes(of: d * x * sigmoid, toByteOffset: 4 * i, as: SIMD16<Float>.self)
            let derivative = sigmoid * (1 + x * (1 - sigmoid))
            dg.storeBytes(of: d * u.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) * derivative,
                          toByteOffset: 4 * i, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            let x = gate[i]
            let sigmoid = 1 / (1 + Exponential.exp(-x))
            gradUp[i] = gradOutput[i] * x * sigmoid
            gradGate[i] = gradOutput[i] * up[i] * sigmoid * (1 + x * (1 - sigmoid))
            i += 1
        }
    }
}
