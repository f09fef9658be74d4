import Foundation

/// AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, over one flat parameter vector.
public struct AdamW: Sendable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float
    private var m: [Float]
    private var v: [Float]
    public private(set) var step = 0

    public init(parameterCount: Int, weightDecay: Float = 0) {
        self.weightDecay = weightDecay
        m = [Float](repeating: 0, count: parameterCount)
        v = [Float](repeating: 0, count: parameterCount)
    }

    /// θ ← θ − lr·(m̂/(√v̂ + ε) + λθ), with bias-corrected moments m̂, v̂.
    public mutating func update(_ parameters: inout [Float], gradient: [Float], learningRate: Float) {
        precondition(parameters.count == gradient.count && gradient.count == m.count)
        step += 1
        let correction1 = 1 - pow(beta1, Float(step)), correction2 = 1 - pow(beta2, Float(step))
        for i in parameters.indices {
            let g = gradient[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            let mHat = m[i] / correction1, vHat = v[i] / correction2
            parameters[i] -= learningRate * (mHat / (vHat.squareRoot() + epsilon) + weightDecay * parameters[i])
        }
    }
}

/// Learning rate over steps: linear warm-up, then constant, linear or cosine decay to zero.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Decay: String, Sendable, CaseIterable { case constant, linear, cosine }

    public var peak: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    public var decay: Decay

    public init(peak: Double, warmupSteps: Int, totalSteps: Int, decay: Decay) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decay = decay
    }

    /// The rate for 0-based `step`.
    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = max(1, totalSteps - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        switch decay {
        case .constant: return peak
        case .linear: return peak * (1 - progress)
        case .cosine: return peak * 0.5 * (1 + cos(Double.pi * progress))
        }
    }
}
