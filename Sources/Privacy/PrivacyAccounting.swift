import Foundation

/// One entry point over both accountants: ε of a sequence of mechanisms, and the inverse problems
/// (the noise multiplier or the step count that fits a budget).
public enum PrivacyAccounting {
    /// ε at `delta` of all `steps` composed, with the chosen accountant (see `estimate`). Throws
    /// `PrivacyParameterError` for parameters out of range.
    public static func epsilon(steps: [MechanismSteps], delta: Double, accountant: AccountantKind) throws -> Double {
        try estimate(steps: steps, delta: delta, accountant: accountant).epsilon
    }

    /// ε at `delta` of all `steps` composed and how it was obtained: RDP for `.rdp`; for `.pld` the PLD
    /// bound, or RDP when it is the smaller bound or the steps include discrete-Gaussian noise (see
    /// `PLDAccountant.estimate`). Any step without noise gives ε = +∞.
    public static func estimate(steps: [MechanismSteps], delta: Double, accountant: AccountantKind) throws -> PrivacyEstimate {
        for mechanism in steps { try mechanism.validate() }
        let steps = grouped(steps)
        switch accountant {
        case .rdp:
            var rdp = RDPAccountant()
            for mechanism in steps { try rdp.add(mechanism) }
            let epsilon = try rdp.epsilon(delta: delta).epsilon
            return PrivacyEstimate(epsilon: epsilon, method: steps.contains(where: \.isUnbounded) ? .noNoise : .rdp)
        case .pld:
            var pld = PLDAccountant()
            for mechanism in steps { try pld.add(mechanism) }
            return try pld.estimate(delta: delta)
        }
    }

    /// `steps` with every mechanism of the same sampling rate, noise multiplier and noise kind merged into
    /// one entry whose step count is their sum (split at `MechanismSteps.maximumSteps`), in order of first
    /// appearance. Composition does not depend on order, and k entries of s steps each are k·s steps of
    /// the same mechanism, so ε is unchanged for RDP (the per-order sums are the same) and stays an upper
    /// bound for PLD (fewer, larger self-compositions). A ledger holds one entry per round, most of them
    /// alike; without this every charge recomputed every past round's cost, and joining a round took
    /// 1.5 s after 20 rounds and 10 s after 160 (the fault-injection harness, issue 14).
    static func grouped(_ steps: [MechanismSteps]) -> [MechanismSteps] {
        struct Key: Hashable { let samplingRate: Double, noiseMultiplier: Double, noise: MechanismNoise }
        var order: [Key] = []
        var totals: [Key: [Int]] = [:]
        for mechanism in steps {
            let key = Key(samplingRate: mechanism.samplingRate, noiseMultiplier: mechanism.noiseMultiplier,
                          noise: mechanism.noise)
            guard var chunks = totals[key] else {
                order.append(key)
                totals[key] = [mechanism.steps]
                continue
            }
            let last = chunks[chunks.count - 1]
            if last <= MechanismSteps.maximumSteps - mechanism.steps {
                chunks[chunks.count - 1] = last + mechanism.steps
            } else {
                chunks.append(mechanism.steps)
            }
            totals[key] = chunks
        }
        return order.flatMap { key in
            totals[key, default: []].map {
                MechanismSteps(samplingRate: key.samplingRate, noiseMultiplier: key.noiseMultiplier, steps: $0,
                               noise: key.noise)
            }
        }
    }

    /// Grid of the noise multiplier search.
    public static let noiseMultiplierResolution = 0.001
    /// The largest noise multiplier the search tries.
    public static let maximumNoiseMultiplier = 10_000.0

    /// The smallest σ on the 0.001 grid such that `steps` steps at `samplingRate`, composed after
    /// `alreadySpent`, have ε ≤ `targetEpsilon` at `delta`: bisection on the grid, then stepping down
    /// while the next smaller σ still fits (the PLD discretisation is monotone in σ only up to
    /// rounding). Throws `NoiseCalibrationError` when even σ = 10,000 does not fit (the earlier
    /// mechanisms alone exceed the target).
    /// Every σ returned has been checked: ε(σ) ≤ target by an accountant that is an upper bound.
    public static func noiseMultiplier(targetEpsilon: Double, samplingRate: Double, steps: Int, delta: Double,
                                       accountant: AccountantKind, alreadySpent: [MechanismSteps] = [],
                                       noise: MechanismNoise = .gaussian) throws -> Double {
        guard targetEpsilon.isFinite, targetEpsilon > 0 else {
            throw PrivacyParameterError(name: "target epsilon", value: targetEpsilon, expected: "finite and > 0")
        }
        guard noise != .none else {
            throw PrivacyParameterError(name: "noise", value: 0, expected: "gaussian or discrete_gaussian: no noise multiplier "
                                        + "makes a mechanism without noise private")
        }
        try validateDelta(delta)
        try MechanismSteps(samplingRate: samplingRate, noiseMultiplier: 1, steps: steps, noise: noise).validate()
        for spent in alreadySpent { try spent.validate() }
        // Grid points per unit σ; dividing by it (rather than multiplying by 0.001) gives the nearest
        // double to each decimal, e.g. 1.001 rather than 1.0010000000000001.
        let perUnit = (1 / noiseMultiplierResolution).rounded()
        func fits(_ gridIndex: Int) throws -> Bool {
            let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: Double(gridIndex) / perUnit, steps: steps,
                                           noise: noise)
            try mechanism.validate()
            return try epsilon(steps: alreadySpent + [mechanism], delta: delta, accountant: accountant) <= targetEpsilon
        }
        // Invariant: `low` does not fit (0 stands for σ = 0, which never does), `high` fits.
        var low = 0, high = Int(perUnit)
        let limit = Int((maximumNoiseMultiplier * perUnit).rounded())
        while try !fits(high) {
            low = high
            guard high < limit else {
                throw NoiseCalibrationError(targetEpsilon: targetEpsilon, delta: delta, largestTried: Double(high) / perUnit)
            }
            high = min(limit, high * 2)
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2
            if try fits(middle) { high = middle } else { low = middle }
        }
        while high > 1, try fits(high - 1) { high -= 1 }
        return Double(high) / perUnit
    }

    /// The largest number of steps (at most `upTo`) at `samplingRate` and `noiseMultiplier` that,
    /// composed after `alreadySpent`, keeps ε ≤ `targetEpsilon` at `delta`; 0 when none fits.
    public static func maximumSteps(targetEpsilon: Double, samplingRate: Double, noiseMultiplier: Double, delta: Double,
                                    accountant: AccountantKind, alreadySpent: [MechanismSteps] = [], upTo limit: Int,
                                    noise: MechanismNoise = .gaussian) throws -> Int {
        guard targetEpsilon.isFinite, targetEpsilon > 0 else {
            throw PrivacyParameterError(name: "target epsilon", value: targetEpsilon, expected: "finite and > 0")
        }
        try validateDelta(delta)
        try MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: 0, noise: noise).validate()
        guard limit <= MechanismSteps.maximumSteps else {
            throw PrivacyParameterError(name: "step limit", value: Double(limit), expected: "at most \(MechanismSteps.maximumSteps)")
        }
        func fits(_ steps: Int) throws -> Bool {
            let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps, noise: noise)
            return try epsilon(steps: alreadySpent + [mechanism], delta: delta, accountant: accountant) <= targetEpsilon
        }
        guard limit > 0, try fits(0) else { return 0 }
        if try fits(limit) { return limit }
        var low = 0, high = limit  // low fits, high does not
        while high - low > 1 {
            let middle = low + (high - low) / 2
            if try fits(middle) { low = middle } else { high = middle }
        }
        return low
    }
}

/// No noise multiplier up to the search limit meets the target ε.
public struct NoiseCalibrationError: Error, CustomStringConvertible, Sendable {
    public let targetEpsilon: Double
    public let delta: Double
    public let largestTried: Double

    public var description: String {
        "no noise multiplier up to \(largestTried) reaches epsilon \(targetEpsilon) at delta \(delta) "
            + "(the privacy already spent may exceed the target)"
    }
}
