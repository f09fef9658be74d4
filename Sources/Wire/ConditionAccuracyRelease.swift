import Foundation

/// A client's held-out condition accuracy of one round, released with the discrete Gaussian mechanism (Canonne,
/// Kamath, Steinke 2020), in whole records.
///
/// The client scores at most the plan's `accuracy_records` privacy units of its held-out split that have a labelled
/// record (`condition`, FineTuning's `ConditionAccuracy`: the first such units in file order, each by its first
/// labelled record): the model writes the record's assessment greedily, with the global adapter (before) and with the
/// adapter it trained (after; the global one again in a distributed round, which trains nothing locally), and the
/// assessment's first line names the condition or not. Each scored unit contributes the vector
/// (named before ? 1 : 0, named after ? 1 : 0, 1); the client sums them and adds independent N_Z(0, σ²) to each
/// coordinate, σ = z·√3, z = `noiseMultiplier`. Adding or removing one unit changes the scored set by that unit and at
/// most one other (the one at the bound leaves or enters), so each coordinate moves by at most 1 and the sum by at
/// most √3 in L2: the release is (1/(2z²))-zCDP (CKS 2020, Theorems 4 and 14), charged to the ledger as
/// `MechanismSteps(samplingRate: 1, noiseMultiplier: z, steps: 1)` in the same write as the round's training and
/// the held-out loss release. A client whose held-out records carry no condition releases nothing (nil).
public struct ConditionAccuracyRelease: Codable, Sendable, Equatable {
    /// The noised sums: units whose assessment named the condition before and after, and units scored.
    public var correctBefore: Int64
    public var correctAfter: Int64
    public var count: Int64
    /// z of the release (the plan's `accuracy_noise_multiplier`).
    public var noiseMultiplier: Double

    /// Most records a plan may score per round (`accuracy_records`), and the noise's reach in σ beyond which a
    /// released value cannot come from a client (probability below e^-2000).
    public static let maximumRecords = 1000
    static let impossibleSigmas = 64.0

    public init(correctBefore: Int64, correctAfter: Int64, count: Int64, noiseMultiplier: Double) {
        self.correctBefore = correctBefore
        self.correctAfter = correctAfter
        self.count = count
        self.noiseMultiplier = noiseMultiplier
    }

    /// σ of each coordinate's noise, in records: z·√3.
    public var sigma: Double { Self.sigma(noiseMultiplier: noiseMultiplier) }

    public static func sigma(noiseMultiplier: Double) -> Double { noiseMultiplier * 3.0.squareRoot() }

    /// Why the figures cannot be a release (field and value), or nil when they can: z outside the plan's range, or a
    /// value no count of at most `maximumRecords` records plus the noise can reach.
    public var problem: String? {
        guard noiseMultiplier.isFinite, noiseMultiplier >= 0.1, noiseMultiplier <= 1000 else { return "noise_multiplier \(noiseMultiplier)" }
        let reach = (Self.impossibleSigmas * sigma).rounded(.up)
        let range = -reach...(Double(Self.maximumRecords) + reach)
        for (name, value) in [("correct_before", correctBefore), ("correct_after", correctAfter), ("count", count)]
            where !range.contains(Double(value)) {
            return "\(name) \(value) outside \(Int64(range.lowerBound))...\(Int64(range.upperBound)) (at most "
                + "\(Self.maximumRecords) records plus \(Int(Self.impossibleSigmas)) σ of noise)"
        }
        return nil
    }

    enum CodingKeys: String, CodingKey {
        case count
        case correctBefore = "correct_before"
        case correctAfter = "correct_after"
        case noiseMultiplier = "noise_multiplier"
    }
}

/// Post-processing of released condition accuracies, summed over any set of clients: the fraction of scored units
/// whose assessment named the condition, before and after, clamped to [0, 1], and its standard error from the noise
/// alone (delta method for a ratio of noised sums: σ_total·√(1 + a²)/C, a the larger fraction, C the released count).
/// Uses only released numbers and public parameters, so it costs no privacy.
public struct ReleasedAccuracy: Sendable, Equatable {
    public var before: Double?
    public var after: Double?
    /// Standard error of either fraction (nil when the released count is not positive).
    public var standardError: Double?
    /// The released count, summed.
    public var records: Double

    /// Nil when `releases` is empty (no participant scored conditions).
    public init?(_ releases: [ConditionAccuracyRelease]) {
        guard !releases.isEmpty else { return nil }
        let count = releases.reduce(0.0) { $0 + Double($1.count) }
        records = count
        guard count > 0 else {
            before = nil
            after = nil
            standardError = nil
            return
        }
        func fraction(_ sum: Double) -> Double { min(max(sum / count, 0), 1) }
        let b = fraction(releases.reduce(0.0) { $0 + Double($1.correctBefore) })
        let a = fraction(releases.reduce(0.0) { $0 + Double($1.correctAfter) })
        before = b
        after = a
        let variance = releases.reduce(0.0) { $0 + $1.sigma * $1.sigma }
        let m = max(a, b)
        standardError = variance.squareRoot() * (1 + m * m).squareRoot() / count
    }
}
