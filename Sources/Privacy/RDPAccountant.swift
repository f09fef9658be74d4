import Foundation

/// Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
///
/// Each mechanism's RDP at every order comes from Mironov, Talwar and Zhang 2019, "Rényi Differential
/// Privacy of the Sampled Gaussian Mechanism": the binomial sum (their Section 3.2) for integer orders
/// and the two-sided series of Section 3.3 for fractional ones, both summed in log space. RDP composes
/// by addition; `epsilon(delta:)` converts with Balle et al. 2020, "Hypothesis Testing
/// Interpretations and Renyi Differential Privacy", Theorem 21, and minimises over the orders.
public struct RDPAccountant: Sendable {
    /// Opacus' default orders: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
    public static let defaultOrders: [Double] = (1...99).map { 1 + Double($0) / 10 } + (12...63).map(Double.init)

    /// The orders α (> 1) at which RDP is tracked.
    public let orders: [Double]
    /// The composed RDP ε(α) at each order so far.
    public private(set) var rdp: [Double]
    /// The mechanisms added so far, in order.
    public private(set) var mechanisms: [MechanismSteps] = []

    /// An empty accountant over `orders` (each must be finite and > 1).
    public init(orders: [Double] = RDPAccountant.defaultOrders) {
        precondition(!orders.isEmpty && orders.allSatisfy { $0 > 1 && $0.isFinite }, "RDP orders must be finite and > 1")
        self.orders = orders
        self.rdp = [Double](repeating: 0, count: orders.count)
    }

    /// Composes `steps` more applications of the sampled Gaussian with rate `samplingRate` and
    /// noise multiplier `noiseMultiplier`. Throws `PrivacyParameterError` for values out of range.
    public mutating func add(samplingRate: Double, noiseMultiplier: Double, steps: Int) throws {
        let mechanism = MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps)
        try mechanism.validate()
        mechanisms.append(mechanism)
        if mechanism.isTrivial { return }
        for (index, order) in orders.enumerated() {
            rdp[index] += Double(steps) * Self.rdp(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, order: order)
        }
    }

    /// The smallest ε over the orders such that the composition is (ε, δ)-DP, and the order achieving
    /// it (the first one on ties). Throws when δ is not in (0, 1).
    public func epsilon(delta: Double) throws -> (epsilon: Double, order: Double) {
        try validateDelta(delta)
        var best = (epsilon: Double.infinity, order: orders[0])
        for (order, divergence) in zip(orders, rdp) {
            let candidate = Self.epsilon(rdp: divergence, order: order, delta: delta)
            if candidate < best.epsilon { best = (candidate, order) }
        }
        return (max(0, best.epsilon), best.order)
    }

    /// ε at δ after the composition so far is repeated `repetitions` times: with one step added, the ε after
    /// that many steps, cheaply (no new RDP terms), as a progress line needs it every step.
    public func epsilon(delta: Double, repetitions: Int) throws -> (epsilon: Double, order: Double) {
        precondition(repetitions >= 0, "repetitions must not be negative")
        var scaled = self
        scaled.rdp = rdp.map { $0 * Double(repetitions) }
        return try scaled.epsilon(delta: delta)
    }

    /// Converts one order's RDP value to ε at δ.
    static func epsilon(rdp: Double, order: Double, delta: Double) -> Double {
        if rdp.isInfinite { return .infinity }
        // When δ exceeds sqrt(1 − exp(−KL)) ≥ total variation the pair is already (0, δ)-close; the
        // Rényi divergence of any order above 1 bounds KL.
        if delta * delta + expm1(-rdp) > 0 { return 0 }
        // Balle et al. 2020 Thm 21: ε = rdp + log((α−1)/α) − (log δ + log α)/(α − 1). Below α = 1.01
        // the bound is numerically fragile and never useful.
        guard order > 1.01 else { return .infinity }
        return rdp + log1p(-1 / order) - (log(delta) + log(order)) / (order - 1)
    }

    /// RDP of one application of the sampled Gaussian at `order`: log(A_α)/(α − 1).
    public static func rdp(samplingRate q: Double, noiseMultiplier sigma: Double, order alpha: Double) -> Double {
        if q == 0 { return 0 }
        if q == 1 { return alpha / (2 * sigma * sigma) }
        let logA = alpha == alpha.rounded() && alpha < 1e6
            ? logAIntegerOrder(q: q, sigma: sigma, alpha: Int(alpha))
            : logAFractionalOrder(q: q, sigma: sigma, alpha: alpha)
        return max(0, logA) / (alpha - 1)
    }

    /// log A_α for integer α (MTZ 2019 Section 3.2):
    /// A_α = Σ_k C(α, k) (1 − q)^(α−k) q^k exp((k² − k) / (2σ²)).
    static func logAIntegerOrder(q: Double, sigma: Double, alpha: Int) -> Double {
        let logQ = log(q), logOneMinusQ = log1p(-q), twoSigmaSquared = 2 * sigma * sigma
        let logAlphaFactorial = SpecialFunctions.logGamma(Double(alpha) + 1)
        var total = -Double.infinity
        for k in 0...alpha {
            let kd = Double(k)
            let logBinomial = logAlphaFactorial - SpecialFunctions.logGamma(kd + 1) - SpecialFunctions.logGamma(Double(alpha - k) + 1)
            let term = logBinomial + kd * logQ + Double(alpha - k) * logOneMinusQ + (kd * kd - kd) / twoSigmaSquared
            total = SpecialFunctions.logAdd(total, term)
        }
        return total
    }

    /// log A_α for fractional α (MTZ 2019 Section 3.3). The integral of ((1 − q) + q·L(z))^α against
    /// N(0, σ²), with L the likelihood ratio of N(1, σ²) to N(0, σ²), splits at
    /// z₀ = σ² log(1/q − 1) + 1/2, where q·L = 1 − q; on each side the binomial series converges and
    /// each term is a Gaussian tail in closed form. Terms carry the sign of C(α, i) and are summed as
    /// separate positive and negative log-sums.
    static func logAFractionalOrder(q: Double, sigma: Double, alpha: Double) -> Double {
        let logQ = log(q), logOneMinusQ = log1p(-q), twoSigmaSquared = 2 * sigma * sigma
        let z0 = sigma * sigma * (log(1 / q - 1)) + 0.5
        let erfcScale = 1 / (2.0.squareRoot() * sigma)
        let logHalf = log(0.5)
        var positive = -Double.infinity, negative = -Double.infinity
        var logAbsBinomial = 0.0  // log |C(α, 0)|
        var binomialSign = 1.0
        var i = 0
        // The terms decay like i^−(α+2) beyond α; stop when they fall e^−36 below the running sum.
        while i < 2_000_000 {
            let id = Double(i), j = alpha - id
            let logT0 = logAbsBinomial + id * logQ + j * logOneMinusQ
            let logT1 = logAbsBinomial + j * logQ + id * logOneMinusQ
            let logE0 = logHalf + SpecialFunctions.logErfc((id - z0) * erfcScale)
            let logE1 = logHalf + SpecialFunctions.logErfc((z0 - j) * erfcScale)
            let logS0 = logT0 + (id * id - id) / twoSigmaSquared + logE0
            let logS1 = logT1 + (j * j - j) / twoSigmaSquared + logE1
            let termPair = SpecialFunctions.logAdd(logS0, logS1)
            if binomialSign > 0 {
                positive = SpecialFunctions.logAdd(positive, termPair)
            } else {
                negative = SpecialFunctions.logAdd(negative, termPair)
            }
            if id > alpha && termPair < positive - 36 { break }
            // C(α, i+1) = C(α, i) · (α − i) / (i + 1).
            let ratio = (alpha - id) / (id + 1)
            if ratio == 0 { break }
            if ratio < 0 { binomialSign = -binomialSign }
            logAbsBinomial += log(abs(ratio))
            i += 1
        }
        return negative > positive ? 0 : SpecialFunctions.logSub(positive, negative)
    }
}
