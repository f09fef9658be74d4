/// Which accountant turns a sequence of mechanisms into (ε, δ).
public enum AccountantKind: String, Codable, Sendable, CaseIterable {
    /// Rényi DP over dp_accounting's orders extended to 4096 (Mironov, Talwar, Zhang 2019), converted
    /// with Balle et al. 2020, Theorem 21. Simple and fast, a few percent loose.
    case rdp
    /// Privacy loss distribution with pessimistic connect-the-dots discretisation, composed by FFT with
    /// its rounding bounded and added to δ: an upper bound within about 0.1% of the true ε at the
    /// default discretisation; RDP answers where it is the smaller bound or the steps use discrete noise.
    case pld
}

/// The noise a mechanism adds, which decides how it is accounted.
public enum MechanismNoise: String, Codable, Sendable, CaseIterable {
    /// Continuous Gaussian N(0, σ²C²) per coordinate: RDP (Mironov, Talwar, Zhang 2019) or PLD.
    case gaussian
    /// Multivariate discrete Gaussian N_Z(0, s²)^d added to an integer vector whose add/remove
    /// sensitivity v is an integer vector with ‖v‖₂ ≤ Δ, with noiseMultiplier = s/Δ. Accounted by RDP
    /// only, at integer orders (see `RDPAccountant.discreteGaussianRDP`).
    case discreteGaussian = "discrete_gaussian"
    /// No noise: a non-private run. ε = +∞ for any step count ≥ 1 with q > 0, in every accountant.
    case none
}

/// `steps` applications of the Poisson-subsampled Gaussian mechanism: each record is included with
/// probability `samplingRate`, and noise of standard deviation `noiseMultiplier` × clip norm (of the
/// kind `noise`) is added to the clipped sum. Adjacency is add/remove one record.
public struct MechanismSteps: Codable, Sendable, Hashable {
    /// Poisson sampling rate q in [0, 1].
    public var samplingRate: Double
    /// Noise multiplier σ > 0 (noise standard deviation divided by the clip norm); ignored for `.none`.
    public var noiseMultiplier: Double
    /// Number of compositions, at least 0.
    public var steps: Int
    /// The kind of noise; `.gaussian` when a stored file predates the field.
    public var noise: MechanismNoise

    /// The largest step count an accountant takes (10¹²): far beyond any training run, small enough
    /// that every product in the accountants stays exact in a Double.
    public static let maximumSteps = 1_000_000_000_000

    /// Records the parameters; `validate()` checks them.
    public init(samplingRate: Double, noiseMultiplier: Double, steps: Int, noise: MechanismNoise = .gaussian) {
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.steps = steps
        self.noise = noise
    }

    /// A run without differential privacy: `steps` steps on Poisson samples at `samplingRate`, no noise.
    public static func nonPrivate(samplingRate: Double, steps: Int) -> MechanismSteps {
        MechanismSteps(samplingRate: samplingRate, noiseMultiplier: 0, steps: steps, noise: .none)
    }

    private enum CodingKeys: String, CodingKey { case samplingRate, noiseMultiplier, steps, noise }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        samplingRate = try container.decode(Double.self, forKey: .samplingRate)
        noiseMultiplier = try container.decode(Double.self, forKey: .noiseMultiplier)
        steps = try container.decode(Int.self, forKey: .steps)
        noise = try container.decodeIfPresent(MechanismNoise.self, forKey: .noise) ?? .gaussian
    }

    /// Throws `PrivacyParameterError` naming the first parameter out of range, with the range.
    public func validate() throws {
        guard samplingRate.isFinite, samplingRate >= 0, samplingRate <= 1 else {
            throw PrivacyParameterError(name: "sampling rate", value: samplingRate, expected: "in [0, 1]")
        }
        if noise == .none {
            guard noiseMultiplier.isFinite, noiseMultiplier >= 0 else {
                throw PrivacyParameterError(name: "noise multiplier", value: noiseMultiplier,
                                            expected: "finite and >= 0 (it is ignored for a mechanism without noise)")
            }
        } else {
            guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
                throw PrivacyParameterError(name: "noise multiplier", value: noiseMultiplier, expected: "finite and > 0")
            }
        }
        guard steps >= 0, steps <= Self.maximumSteps else {
            throw PrivacyParameterError(name: "steps", value: Double(steps), expected: "in 0...\(Self.maximumSteps)")
        }
    }

    /// True when the mechanism releases nothing about any record (no steps, or q = 0).
    var isTrivial: Bool { steps == 0 || samplingRate == 0 }

    /// True when the mechanism releases something with no noise at all: ε = +∞.
    public var isUnbounded: Bool { noise == .none && !isTrivial }
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
