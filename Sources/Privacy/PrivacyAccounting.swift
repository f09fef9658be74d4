import Foundation

/// One entry point over both accountants: ε of a sequence of mechanisms, and the inverse problems
/// (the noise multiplier or the step count that fits a budget).
public enum PrivacyAccounting {
    /// ε at `delta` of all `steps` composed, with the chosen accountant. Throws
    /// `PrivacyParameterError` for parameters out of range and `PLDGridTooLargeError` when the PLD
    /// grid would exceed its limit.
    /// A run without noise (`MechanismNoise.none`, q > 0, steps ≥ 1) makes the composition +∞.
    public static func epsilon(steps: [MechanismSteps], delta: Double, accountant: AccountantKind) throws -> Double {
        for mechanism in steps where mechanism.noise == .none { try mechanism.validate() }
        if steps.contains(where: \.isUnbounded) {
            try validateDelta(delta)
            return .infinity
        }
        let steps = steps.filter { $0.noise != .none }  // those left release nothing (no steps, or q = 0)
        switch accountant {
        case .rdp:
            var rdp = RDPAccountant()
            for mechanism in steps {
                try rdp.add(samplingRate: mechanism.samplingRate, noiseMultiplier: mechanism.noiseMultiplier, steps: mechanism.steps)
            }
            return try rdp.epsilon(delta: delta).epsilon
        case .pld:
            var pld = PLDAccountant()
            for mechanism in steps {
                try pld.add(samplingRate: mechanism.samplingRate, noiseMultiplier: mechanism.noiseMultiplier, steps: mechanism.steps)
            }
            return try pld.epsilon(delta: delta)
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
    public static func noiseMultiplier(targetEpsilon: Double, samplingRate: Double, steps: Int, delta: Double,
                                       accountant: AccountantKind, alreadySpent: [MechanismSteps] = []) throws -> Double {
        guard targetEpsilon.isFinite, targetEpsilon > 0 else {
            throw PrivacyParameterError(name: "target epsilon", value: targetEpsilon, expected: "finite and > 0")
        }
        try validateDelta(delta)
        // Grid points per unit σ; dividing by it (rather than multiplying by 0.001) gives the nearest
        // double to each decimal, e.g. 1.001 rather than 1.0010000000000001.
        let perUnit = (1 / noiseMultiplierResolution).rounded()
        func fits(_ gridIndex: Int) throws -> Bool {
            let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: Double(gridIndex) / perUnit, steps: steps)
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
                                    accountant: AccountantKind, alreadySpent: [MechanismSteps] = [], upTo limit: Int) throws -> Int {
        func fits(_ steps: Int) throws -> Bool {
            let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps)
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
