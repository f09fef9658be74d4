import Foundation

/// Privacy-loss-distribution accountant for the Poisson-subsampled Gaussian under add/remove
/// adjacency: an upper bound on ε(δ), tight to about the discretisation interval.
///
/// Method. For each adjacency direction — "remove" compares P = (1 − q)N(0, σ²) + qN(1, σ²) with
/// Q = N(0, σ²), "add" compares P = N(0, σ²) with Q = that mixture — the privacy loss
/// L = log(P/Q)(z) is monotone in z, so the P- and Q-mass of L in each grid interval
/// ((i − 1)h, ih] is a difference of Gaussian CDFs. Each interval's mass is split between its two
/// end points so that both its P-mass and its Q-mass are kept (the "connect the dots" discretisation
/// of Doroshenko, Ghazi, Kamath, Kumar and Manurangsi 2022, which dp_accounting uses by default):
/// the hockey-stick curve of the result is the chord of the true, convex one, hence pessimistic at
/// every ε, without the drift of T·h/2 that rounding every loss up would add over T steps. Mass
/// below the grid is moved up to its first point, and mass above it goes partly to the last point
/// and partly to +∞, keeping Q-mass; all three moves can only increase δ(ε).
///
/// Composition convolves the distributions (Koskela, Jälkö and Honkela 2020): every mechanism's
/// distribution is folded onto one circular grid, transformed by FFT, raised to its step count
/// pointwise, multiplied, and transformed back. The grid covers the composed loss except for at
/// most 10⁻¹⁶ of mass at either end (Chernoff bounds from the discretised distributions' moment
/// generating functions); that mass is added to δ, as is all mass at +∞, so the result stays an
/// upper bound. ε(δ) is then solved exactly on the discrete distribution; the answer is the larger
/// of the two directions'.
public struct PLDAccountant: Sendable {
    /// Grid interval h of the privacy loss.
    public let discretization: Double
    /// The mechanisms added so far, in order.
    public private(set) var mechanisms: [MechanismSteps] = []

    /// Mass allowed outside the composition window at each end (added to δ).
    static let windowTailMass = 1e-16
    /// Tail of N(0, 1) beyond which a single step's loss is not resolved on the grid (about 1e-21).
    static let gaussianTailStandardDeviations = 9.5
    /// The largest grid, in points, for one step or for the composition (memory: 4 doubles a point).
    public static let maximumGridPoints = 1 << 22

    /// An empty accountant with loss grid interval `discretization` (dp_accounting's default 1e-4).
    public init(discretization: Double = 1e-4) {
        precondition(discretization > 0 && discretization.isFinite, "PLD discretization must be positive")
        self.discretization = discretization
    }

    /// Composes `steps` more applications of the sampled Gaussian. Throws `PrivacyParameterError`
    /// for values out of range.
    public mutating func add(samplingRate: Double, noiseMultiplier: Double, steps: Int) throws {
        let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps)
        try mechanism.validate()
        mechanisms.append(mechanism)
    }

    /// The smallest ε ≥ 0 such that the composition is (ε, δ)-DP, up to the discretisation (always
    /// an upper bound); infinity when no ε reaches δ. Throws for δ outside (0, 1) or a grid larger
    /// than `maximumGridPoints`.
    public func epsilon(delta: Double) throws -> Double {
        try validateDelta(delta)
        var worst = 0.0
        for direction in directions {
            guard let composed = try compose(direction) else { continue }
            worst = max(worst, composed.epsilon(delta: delta))
        }
        return worst
    }

    /// Both directions, or only one when every mechanism has q = 1: for the plain Gaussian the two
    /// loss distributions coincide (both N(1/(2σ²), 1/σ²)), and so do their grids here.
    private var directions: [AdjacencyDirection] {
        mechanisms.allSatisfy { $0.samplingRate == 1 || $0.isTrivial } ? [.remove] : AdjacencyDirection.allCases
    }

    /// The smallest δ such that the composition is (ε, δ)-DP (an upper bound).
    public func delta(epsilon: Double) throws -> Double {
        guard epsilon.isFinite, epsilon >= 0 else {
            throw PrivacyParameterError(name: "epsilon", value: epsilon, expected: "finite and >= 0")
        }
        var worst = 0.0
        for direction in directions {
            guard let composed = try compose(direction) else { continue }
            worst = max(worst, composed.delta(epsilon: epsilon))
        }
        return min(1, worst)
    }

    /// Mechanisms with the same q and σ merged, trivial ones dropped.
    private var mergedMechanisms: [MechanismSteps] {
        var merged: [MechanismSteps] = []
        for mechanism in mechanisms where !mechanism.isTrivial {
            if let index = merged.firstIndex(where: {
                $0.samplingRate == mechanism.samplingRate && $0.noiseMultiplier == mechanism.noiseMultiplier
            }) {
                merged[index].steps += mechanism.steps
            } else {
                merged.append(mechanism)
            }
        }
        return merged
    }

    /// The composed loss distribution in one direction, or nil when nothing was released.
    func compose(_ direction: AdjacencyDirection) throws -> ComposedPrivacyLoss? {
        let mechanisms = mergedMechanisms
        if mechanisms.isEmpty { return nil }
        let h = discretization
        let steps = try mechanisms.map {
            try DiscretePrivacyLoss(samplingRate: $0.samplingRate, noiseMultiplier: $0.noiseMultiplier,
                                    direction: direction, interval: h)
        }

        // Window [lowest, highest] in grid indices from Chernoff bounds:
        // P(S ≥ b) ≤ Π_j M_j(λ)^T_j e^(−λb) for λ > 0, and symmetrically below with −λ.
        let lambdas = (-3...10).map { pow(2.0, Double($0)) }
        let logTail = log(Self.windowTailMass)
        var supportLow = 0.0, supportHigh = 0.0
        for (mechanism, step) in zip(mechanisms, steps) {
            supportLow += Double(mechanism.steps) * Double(step.lowIndex) * h
            supportHigh += Double(mechanism.steps) * Double(step.lowIndex + step.masses.count - 1) * h
        }
        var upperLogMoments = [Double](repeating: 0, count: lambdas.count)
        var lowerLogMoments = [Double](repeating: 0, count: lambdas.count)
        for (mechanism, step) in zip(mechanisms, steps) {
            let moments = step.logMoments(lambdas + lambdas.map { -$0 }, interval: h)
            for k in lambdas.indices {
                upperLogMoments[k] += Double(mechanism.steps) * moments[k]
                lowerLogMoments[k] += Double(mechanism.steps) * moments[lambdas.count + k]
            }
        }
        var high = supportHigh, low = supportLow
        for (k, lambda) in lambdas.enumerated() {
            high = min(high, (upperLogMoments[k] - logTail) / lambda)
            low = max(low, -(lowerLogMoments[k] - logTail) / lambda)
        }
        let outsideMass = (high < supportHigh ? Self.windowTailMass : 0) + (low > supportLow ? Self.windowTailMass : 0)
        let lowestIndex = Int((low / h).rounded(.down))
        let highestIndex = Int((high / h).rounded(.up))
        let width = highestIndex - lowestIndex + 1
        guard width <= Self.maximumGridPoints else {
            throw PLDGridTooLargeError(points: width, limit: Self.maximumGridPoints, discretization: h)
        }
        var size = 1
        while size < width { size <<= 1 }

        // Fold every step distribution onto the circle of `size` bins, transform, raise, multiply.
        let fft = RadixTwoFFT(count: size)
        var accumulatedReal = [Double](), accumulatedImaginary = [Double]()
        var logFinite = 0.0
        for (mechanism, step) in zip(mechanisms, steps) {
            logFinite += Double(mechanism.steps) * log1p(-step.infinityMass)
            var real = [Double](repeating: 0, count: size), imaginary = [Double](repeating: 0, count: size)
            for (offset, mass) in step.masses.enumerated() {
                real[Self.modulo(step.lowIndex + offset, size)] += mass
            }
            fft.transform(real: &real, imaginary: &imaginary, inverse: false)
            Self.raise(real: &real, imaginary: &imaginary, toPower: mechanism.steps)
            if accumulatedReal.isEmpty {
                accumulatedReal = real; accumulatedImaginary = imaginary
            } else {
                for k in 0..<size {
                    let r = accumulatedReal[k] * real[k] - accumulatedImaginary[k] * imaginary[k]
                    accumulatedImaginary[k] = accumulatedReal[k] * imaginary[k] + accumulatedImaginary[k] * real[k]
                    accumulatedReal[k] = r
                }
            }
        }
        fft.transform(real: &accumulatedReal, imaginary: &accumulatedImaginary, inverse: true)
        var masses = [Double](repeating: 0, count: size)
        for k in 0..<size { masses[k] = accumulatedReal[Self.modulo(lowestIndex + k, size)] }
        return ComposedPrivacyLoss(lowIndex: lowestIndex, masses: masses, interval: h,
                                   extraDelta: -expm1(logFinite) + outsideMass)
    }

    private static func modulo(_ value: Int, _ size: Int) -> Int {
        let r = value % size
        return r < 0 ? r + size : r
    }

    /// z^n pointwise by binary exponentiation (no transcendental functions, error O(log n) ulps).
    private static func raise(real: inout [Double], imaginary: inout [Double], toPower power: Int) {
        if power == 1 { return }
        for k in 0..<real.count {
            var baseR = real[k], baseI = imaginary[k]
            var resultR = 1.0, resultI = 0.0
            var n = power
            while n > 0 {
                if n & 1 == 1 {
                    let r = resultR * baseR - resultI * baseI
                    resultI = resultR * baseI + resultI * baseR
                    resultR = r
                }
                n >>= 1
                if n > 0 {
                    let r = baseR * baseR - baseI * baseI
                    baseI = 2 * baseR * baseI
                    baseR = r
                }
            }
            real[k] = resultR; imaginary[k] = resultI
        }
    }
}

/// The composition needs a loss grid larger than the accountant allows (tiny σ or huge step counts).
public struct PLDGridTooLargeError: Error, CustomStringConvertible, Sendable {
    /// Points the grid would need.
    public let points: Int
    /// `PLDAccountant.maximumGridPoints`.
    public let limit: Int
    /// The loss grid interval in use.
    public let discretization: Double

    public var description: String {
        "PLD accounting needs \(points) loss grid points at discretization \(discretization), more than the limit of "
            + "\(limit); use a coarser discretization or the RDP accountant"
    }
}

/// Which neighbouring dataset plays P in the privacy loss log(P/Q).
enum AdjacencyDirection: CaseIterable {
    /// P = (1 − q)N(0, σ²) + qN(1, σ²) (the record is present), Q = N(0, σ²).
    case remove
    /// P = N(0, σ²), Q = (1 − q)N(0, σ²) + qN(1, σ²).
    case add
}

/// One step's privacy loss on the grid ih, i ∈ lowIndex..<lowIndex + masses.count, plus mass at +∞.
struct DiscretePrivacyLoss {
    let lowIndex: Int
    let masses: [Double]
    let infinityMass: Double

    /// The connect-the-dots discretisation described on `PLDAccountant`.
    init(samplingRate q: Double, noiseMultiplier sigma: Double, direction: AdjacencyDirection, interval h: Double) throws {
        let logOneMinusQ = log1p(-q), logQ = log(q)
        let twoSigmaSquared = 2 * sigma * sigma
        // Remove-direction loss at z, increasing: log(1 − q + q·e^((2z − 1)/(2σ²))).
        func removeLoss(_ z: Double) -> Double {
            SpecialFunctions.logAdd(logOneMinusQ, logQ + (2 * z - 1) / twoSigmaSquared)
        }
        // Its inverse: the z where the remove-direction loss equals ℓ (−∞ below its range).
        func removeInverse(_ loss: Double) -> Double {
            if q == 1 { return sigma * sigma * loss + 0.5 }
            if loss == .infinity { return .infinity }
            let excess = loss < -1 ? exp(loss) - (1 - q) : expm1(loss) + q  // e^ℓ − (1 − q)
            if excess <= 0 { return -.infinity }
            return sigma * sigma * (log(excess) - logQ) + 0.5
        }
        let tail = PLDAccountant.gaussianTailStandardDeviations
        let lowLoss: Double, highLoss: Double
        switch direction {
        case .remove:
            lowLoss = q < 1 ? logOneMinusQ : removeLoss(1 - tail * sigma)
            highLoss = removeLoss(1 + tail * sigma)
        case .add:
            lowLoss = -removeLoss(tail * sigma)
            highLoss = q < 1 ? -logOneMinusQ : -removeLoss(-tail * sigma)
        }
        let low = Int((lowLoss / h).rounded(.down)), high = Int((highLoss / h).rounded(.up))
        guard high - low + 1 <= PLDAccountant.maximumGridPoints else {
            throw PLDGridTooLargeError(points: high - low + 1, limit: PLDAccountant.maximumGridPoints, discretization: h)
        }

        // P-mass, and P-mass minus x times Q-mass, of the loss interval (a, b].
        func masses(lossFrom a: Double, to b: Double, x: Double) -> (p: Double, residual: Double) {
            let zLow: Double, zHigh: Double
            switch direction {
            case .remove: zLow = removeInverse(a); zHigh = removeInverse(b)
            case .add: zLow = removeInverse(-b); zHigh = removeInverse(-a)
            }
            let g0 = SpecialFunctions.normalMass(from: zLow / sigma, to: zHigh / sigma)
            let g1 = SpecialFunctions.normalMass(from: (zLow - 1) / sigma, to: (zHigh - 1) / sigma)
            switch direction {
            case .remove: return ((1 - q) * g0 + q * g1, q * g1 + (1 - q - x) * g0)
            case .add: return (g0, (1 - x * (1 - q)) * g0 - x * q * g1)
            }
        }

        var grid = [Double](repeating: 0, count: high - low + 1)
        // Below the grid: all P-mass moves up to the first point.
        grid[0] += masses(lossFrom: -.infinity, to: Double(low) * h, x: 0).p
        // Each interval ((i−1)h, ih]: mass e^h·(π − x_{i−1}κ)/(e^h − 1) to ih, the rest to (i−1)h,
        // which keeps both the P-mass π and the Q-mass κ.
        let upperShare = exp(h) / expm1(h)
        for i in (low + 1)...max(low + 1, high) where high > low {
            let lower = Double(i - 1) * h
            let (p, residual) = masses(lossFrom: lower, to: Double(i) * h, x: exp(lower))
            let toUpper = min(p, max(0, upperShare * residual))
            grid[i - low] += toUpper
            grid[i - 1 - low] += p - toUpper
        }
        // Above the grid: e^(ε_high)·κ at the last point keeps Q-mass; the remainder is at +∞.
        let top = Double(high) * h
        let (p, residual) = masses(lossFrom: top, to: .infinity, x: exp(top))
        let toInfinity = min(p, max(0, residual))
        grid[grid.count - 1] += p - toInfinity
        lowIndex = low
        self.masses = grid
        infinityMass = toInfinity
    }

    /// log Σ_i p_i e^(λ·ih) over the finite masses, for each λ (log moment generating function).
    func logMoments(_ lambdas: [Double], interval h: Double) -> [Double] {
        var losses: [Double] = [], logMasses: [Double] = []
        losses.reserveCapacity(masses.count); logMasses.reserveCapacity(masses.count)
        for (offset, mass) in masses.enumerated() where mass > 0 {
            losses.append(Double(lowIndex + offset) * h)
            logMasses.append(log(mass))
        }
        return lambdas.map { lambda in
            var largest = -Double.infinity
            for k in 0..<losses.count { largest = max(largest, logMasses[k] + lambda * losses[k]) }
            if largest == -.infinity { return -.infinity }
            var sum = 0.0
            for k in 0..<losses.count { sum += exp(logMasses[k] + lambda * losses[k] - largest) }
            return largest + log(sum)
        }
    }
}

/// A composed loss distribution on the grid ih, plus `extraDelta`: mass at +∞ and outside the window.
struct ComposedPrivacyLoss {
    let lowIndex: Int
    let masses: [Double]
    let interval: Double
    let extraDelta: Double

    /// δ(ε) = extra + Σ_{ℓ > ε} p_ℓ (1 − e^(ε − ℓ)).
    func delta(epsilon: Double) -> Double {
        var total = extraDelta
        for (offset, mass) in masses.enumerated() {
            let loss = Double(lowIndex + offset) * interval
            if loss > epsilon { total += mass * -expm1(epsilon - loss) }
        }
        return max(0, total)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta`, solved exactly between grid points: scanning down from
    /// the top, S = Σ_{j>k} p_j and W = Σ_{j>k} p_j e^(ℓ_k − ℓ_j) give δ(ℓ_k) = extra + S − W, and on
    /// (ℓ_{k−1}, ℓ_k] δ(ε) = extra + S + p_k − e^(ε − ℓ_k)(W + p_k).
    func epsilon(delta target: Double) -> Double {
        if extraDelta >= target { return .infinity }
        let h = interval
        let decay = exp(-h)
        var sum = 0.0, weighted = 0.0
        var k = masses.count - 1
        while k >= 0 {
            let mass = masses[k]
            let nextSum = sum + mass, nextWeighted = (weighted + mass) * decay
            let loss = Double(lowIndex + k) * h
            if extraDelta + nextSum - nextWeighted > target || k == 0 {
                // δ(ℓ_{k−1}) exceeds the target (or the grid ends): the answer lies at or below ℓ_k.
                let excess = extraDelta + nextSum - target
                if excess <= 0 { return 0 }
                return max(0, loss + log(excess / (weighted + mass)))
            }
            sum = nextSum; weighted = nextWeighted
            k -= 1
        }
        return 0
    }
}
