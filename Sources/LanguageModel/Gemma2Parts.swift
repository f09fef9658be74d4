import Foundation

/// Gemma 2's element-wise parts of the pass: the GeGLU activation and soft-capping, each with its derivative
/// (scalar loops; the tiny and the small Gemma models spend their time in the matrices).
enum GemmaActivation {
    /// √(2/π) and the cubic coefficient of transformers' `gelu_pytorch_tanh` (PyTorch's gelu(approximate="tanh")).
    static let root2OverPi: Float = 0.7978845608028654, cubic: Float = 0.044715

    /// out[i] = GELU_tanh(gate[i]) · up[i], GELU_tanh(x) = x/2 · (1 + tanh(√(2/π)(x + 0.044715x³))); out may alias gate.
    static func geglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            let x = gate[i]
            out[i] = 0.5 * x * (1 + tanh(root2OverPi * (x + cubic * x * x * x))) * up[i]
        }
    }

    /// gradGate = gradOutput · up · GELU_tanh′(gate), gradUp = gradOutput · GELU_tanh(gate) (both overwritten).
    static func gegluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                              gradGate: UnsafeMutablePointer<Float>, gradUp: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            let x = gate[i], t = tanh(root2OverPi * (x + cubic * x * x * x))
            let derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * root2OverPi * (1 + 3 * cubic * x * x)
            gradUp[i] = gradOutput[i] * 0.5 * x * (1 + t)
            gradGate[i] = gradOutput[i] * up[i] * derivative
        }
    }
}

/// Soft-capping c·tanh(x / c) (Gemma 2's attention scores and final logits).
enum Softcap {
    /// x[i] = c·tanh(x[i] / c) in place.
    static func apply(_ x: UnsafeMutablePointer<Float>, _ n: Int, cap c: Float) {
        for i in 0..<n { x[i] = c * tanh(x[i] / c) }
    }

    /// gradient[i] *= 1 − (capped[i] / c)², the derivative of the cap at the value it gave (`capped`).
    static func backward(_ gradient: UnsafeMutablePointer<Float>, capped: UnsafePointer<Float>, _ n: Int, cap c: Float) {
        for i in 0..<n {
            let t = capped[i] / c
            gradient[i] *= 1 - t * t
        }
    }
}
