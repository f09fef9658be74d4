/// Which accountant turns a sequence of mechanisms into (ε, δ).
public enum AccountantKind: String, Codable, Sendable, CaseIterable {
    /// Rényi DP over Opacus' default orders (Mironov, Talwar, Zhang 2019), converted with
    /// Balle et al. 2020, Theorem 21. Simple and fast, a few percent loose.
    case rdp
    /// Privacy loss distribution with pessimistic connect-the-dots discretisation, composed by FFT:
    /// an upper bound within about 0.1% of the true ε at the default discretisation.
    case pld
}

/// `steps` applications of the Poisson-subsampled Gaussian mechanism: each record is included with
/// probability `samplingRate`, and Gaussian noise of standard deviation `noiseMultiplier` × clip norm
/// is added to the clipped sum. Adjacency is add/remove one record.
public struct MechanismSteps: Codable, Sendable, Hashable {
    /// Poisson sampling rate q in [0, 1].
    public var samplingRate: Double
    /// Noise multiplier σ > 0 (noise standard deviation divided by the clip norm).
    public var noiseMultiplier: Double
    /// Number of compositions, at least 0.
    public var steps: Int

    /// Records the parameters; `validate()` checks them.
    public init(samplingRate: Double, noiseMultiplier: Double, steps: Int) {
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.steps = steps
    }

    /// Throws `PrivacyParameterError` naming the first parameter out of range.
    public func validate() throws {
        guard samplingRate.isFinite, samplingRate >= 0, samplingRate <= 1 else {
            throw PrivacyParameterError(name: "sampling rate", value: samplingRate, expected: "in [0, 1]")
        }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            throw PrivacyParameterError(name: "noise multiplier", value: noiseMultiplier, expected: "finite and > 0")
        }
        guard steps >= 0 else {
            throw PrivacyParameterError(name: "steps", value: Double(steps), expected: ">= 0")
        }
    }

    /// True when the mechanism releases nothing about any record (no steps, or q = 0).
    var isTrivial: Bool { steps == 0 || samplingRate == 0 }
}

/// A privacy parameter outside its domain, e.g. a sampling rate of 1.5 or δ = 0.
public struct PrivacyParameterError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Which parameter, e.g. "noise multiplier".
    public let name: String
    /// The value given.
    public let value: Double
    /// The allowed range, in words.
    public let expected: String

    public var description: String { "\(name) \(value) is invalid: expected \(expected)" }
}

/// Checks δ ∈ (0, 1).
func validateDelta(_ delta: Double) throws {
    guard delta.isFinite, delta > 0, delta < 1 else {
        throw PrivacyParameterError(name: "delta", value: delta, expected: "in (0, 1)")
    }
}
