import Foundation

/// Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism, continuous or discrete.
///
/// Each mechanism's RDP at every order comes from Mironov, Talwar and Zhang 2019, "Rényi Differential
/// Privacy of the Sampled Gaussian Mechanism": the binomial sum (their Section 3.2) for integer orders
/// and the two-sided series of Section 3.3 for fractional ones, both summed in log space. RDP composes
/// by addition; `epsilon(delta:)` converts with Balle et al. 2020, "Hypothesis Testing
/// Interpretations and Renyi Differential Privacy", Theorem 21, and minimises over the orders. The
/// discrete Gaussian is accounted at integer orders only (`discreteGaussianRDP`).
public struct RDPAccountant: Sendable {
    /// dp_accounting 0.6.0's `DEFAULT_RDP_ORDERS` (1.1, 1.2, …, 10.9, then 11, 12, …, 63, then 128, 256,
    /// 512, 1024), made denser between 64 and 1024 and extended to 4096, so that small ε (large σ, where
    /// the best order is in the hundreds or thousands) is not needlessly loose: at q = 0.01, σ = 50,
    /// T = 1000, δ = 1e-5 Opacus' orders (up to 63) gave 0.104, these give a value within 0.5% of
    /// dp_accounting over the same orders (Tests/PrivacyTests/Reference).
    public static let defaultOrders: [Double] = {
        let fractional: [Double] = (1...99).map { 1 + Double($0) / 10 }
        let integers: [Double] = (11...63).map { Double($0) }
        let large: [Double] = [64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1536, 2048,
                               3072, 4096]
        return fractional + integers + large
    }()

    /// The orders α (> 1) at which RDP is tracked.
    public let orders: [Double]
    /// The composed RDP ε(α) at each order so far.
    public private(set) var rdp: [Double]
    /// The mechanisms added so far, in order.
    public private(set) var mechanisms: [MechanismSteps] = []

    /// An empty accountant over the default orders.
    public init() {
        self.orders = Self.defaultOrders
        self.rdp = [Double](repeating: 0, count: orders.count)
    }

    /// An empty accountant over `orders`. Throws `PrivacyParameterError` unless every order is finite
    /// and > 1 and there is at least one.
    public init(orders: [Double]) throws {
        guard !orders.isEmpty else {
            throw PrivacyParameterError(name: "RDP orders", value: 0, expected: "at least one order")
        }
        if let bad = orders.first(where: { !($0 > 1 && $0.isFinite) }) {
            throw PrivacyParameterError(name: "RDP order", value: bad, expected: "finite and > 1")
        }
        self.orders = orders
        self.rdp = [Double](repeating: 0, count: orders.count)
    }

    /// Composes `steps` more applications of the sampled Gaussian with rate `samplingRate` and
    /// noise multiplier `noiseMultiplier`. Throws `PrivacyParameterError` for values out of range.
    public mutating func add(samplingRate: Double, noiseMultiplier: Double, steps: Int) throws {
        try add(MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps))
    }

    /// Composes `mechanism` (any noise kind). Throws `PrivacyParameterError` for values out of range.
    public mutating func add(_ mechanism: MechanismSteps) throws {
        try mechanism.validate()
        mechanisms.append(mechanism)
        if mechanism.isTrivial { return }
        let steps = Double(mechanism.steps)
        for (index, order) in orders.enumerated() {
            let perStep = Self.rdp(mechanism, order: order)
            // 0 · ∞ would be NaN; a step count ≥ 1 here, so ∞ stays ∞.
            rdp[index] += perStep.isInfinite ? .infinity : steps * perStep
        }
    }

    /// RDP of one step of `mechanism` at `order`: +∞ without noise, the discrete bound for the
    /// discrete Gaussian (+∞ at fractional orders), MTZ for the continuous Gaussian.
    static func rdp(_ mechanism: MechanismSteps, order: Double) -> Double {
        let q = mechanism.samplingRate, sigma = mechanism.noiseMultiplier
        switch mechanism.noise {
        case .none: return q == 0 ? 0 : .infinity
        case .gaussian: return rdp(samplingRate: q, noiseMultiplier: sigma, order: order)
        case .discreteGaussian:
            guard order == order.rounded(), order >= 2, order <= 1e6 else { return .infinity }
            return discreteGaussianRDP(samplingRate: q, noiseMultiplier: sigma, order: Int(order))
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

    /// The smallest δ over the orders at which the composition is (ε, δ)-DP: Balle et al. 2020 Theorem 21
    /// solved for δ, log δ = (α − 1)(rdp + log(1 − 1/α) − ε) − log α, capped at 1.
    public func delta(epsilon: Double) -> Double {
        var best = 1.0
        for (order, divergence) in zip(orders, rdp) where divergence.isFinite && order > 1.01 {
            best = min(best, exp((order - 1) * (divergence + log1p(-1 / order) - epsilon) - log(order)))
        }
        return best
    }

    /// ε at δ after the composition so far is repeated `repetitions` times: with one step added, the ε after
    /// that many steps, cheaply (no new RDP terms), as a progress line needs it every step. Throws for a
    /// negative count or δ outside (0, 1).
    public func epsilon(delta: Double, repetitions: Int) throws -> (epsilon: Double, order: Double) {
        guard repetitions >= 0, repetitions <= MechanismSteps.maximumSteps else {
            throw PrivacyParameterError(name: "repetitions", value: Double(repetitions),
                                        expected: "in 0...\(MechanismSteps.maximumSteps)")
        }
        var scaled = self
        scaled.rdp = rdp.map { repetitions == 0 ? 0 : $0 * Double(repetitions) }
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
        if alpha == alpha.rounded() && alpha < 1e6 {
            return max(0, logAIntegerOrder(q: q, sigma: sigma, alpha: Int(alpha))) / (alpha - 1)
        }
        if let logA = logAFractionalOrder(q: q, sigma: sigma, alpha: alpha) {
            return max(0, logA) / (alpha - 1)
        }
        // The series did not settle (extreme σ): RDP is non-decreasing in the order (van Erven and
        // Harremoës 2014, Theorem 3), so the next integer order's exact value is an upper bound.
        guard alpha < 1e6 else { return .infinity }
        let ceiling = alpha.rounded(.up)
        return max(0, logAIntegerOrder(q: q, sigma: sigma, alpha: Int(ceiling))) / (ceiling - 1)
    }

    /// log A_α for integer α (MTZ 2019 Section 3.2):
    /// A_α = Σ_k C(α, k) (1 − q)^(α−k) q^k exp((k² − k) / (2σ²)).
    static func logAIntegerOrder(q: Double, sigma: Double, alpha: Int) -> Double {
        let logQ = log(q), logOneMinusQ = log1p(-q), twoSigmaSquared = 2 * sigma * sigma
        var total = -Double.infinity
        for k in 0...alpha {
            let kd = Double(k)
            let term = logBinomial(alpha, k) + kd * logQ + Double(alpha - k) * logOneMinusQ + (kd * kd - kd) / twoSigmaSquared
            total = SpecialFunctions.logAdd(total, term)
        }
        return total
    }

    /// Terms of the fractional-order series tried before falling back to the next integer order.
    static let maximumSeriesTerms = 20_000

    /// log A_α for fractional α (MTZ 2019 Section 3.3). The integral of ((1 − q) + q·L(z))^α against
    /// N(0, σ²), with L the likelihood ratio of N(1, σ²) to N(0, σ²), splits at
    /// z₀ = σ² log(1/q − 1) + 1/2, where q·L = 1 − q; on each side the binomial series converges and
    /// each term is a Gaussian tail in closed form. Terms carry the sign of C(α, i) and are summed as
    /// separate positive and negative log-sums.
    /// Nil when the terms have not fallen below the sum after `maximumSeriesTerms` terms, or when the
    /// signed sum cancels too far to be accurate. Unlike dp_accounting 0.6.0, which adds the terms'
    /// absolute values (an upper bound, e.g. 0.01437 instead of 0.00828 at q = 0.2, σ = 2, α = 1.5),
    /// the signs of C(α, i) are kept: the series' value, checked against quadrature in the tests.
    static func logAFractionalOrder(q: Double, sigma: Double, alpha: Double) -> Double? {
        let logQ = log(q), logOneMinusQ = log1p(-q), twoSigmaSquared = 2 * sigma * sigma
        let z0 = sigma * sigma * (log(1 / q - 1)) + 0.5
        let erfcScale = 1 / (2.0.squareRoot() * sigma)
        let logHalf = log(0.5)
        var positive = -Double.infinity, negative = -Double.infinity
        var logAbsBinomial = 0.0  // log |C(α, 0)|
        var binomialSign = 1.0
        var i = 0
        // The terms decay like i^−(α+2) beyond α; stop when they fall e^−36 below the running sum.
        var settled = false
        while i < maximumSeriesTerms {
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
            if id > alpha && termPair < positive - 36 { settled = true; break }
            // C(α, i+1) = C(α, i) · (α − i) / (i + 1).
            let ratio = (alpha - id) / (id + 1)
            if ratio == 0 { settled = true; break }
            if ratio < 0 { binomialSign = -binomialSign }
            logAbsBinomial += log(abs(ratio))
            i += 1
        }
        guard settled, positive.isFinite || positive == -.infinity else { return nil }
        // The signed sum loses relative accuracy as the negative part approaches the positive one
        // (about 1e-13 · r/(1 − r) with r their ratio); past r = 1 − 1e-4 the caller uses the next
        // integer order instead, an upper bound.
        guard negative - positive < log1p(-1e-4) else { return nil }
        return SpecialFunctions.logSub(positive, negative)
    }
    /// log C(n, k) from log-gamma.
    static func logBinomial(_ n: Int, _ k: Int) -> Double {
        SpecialFunctions.logGamma(Double(n) + 1) - SpecialFunctions.logGamma(Double(k) + 1)
            - SpecialFunctions.logGamma(Double(n - k) + 1)
    }

    /// RDP at integer order α ≥ 2 of one step of the Poisson-subsampled multivariate discrete Gaussian
    /// N_Z(0, s²)^d added to an integer vector with add/remove sensitivity v ∈ Z^d, ‖v‖₂ ≤ Δ, σ = s/Δ.
    ///
    /// Base mechanism: Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential Privacy"
    /// (NeurIPS), Proposition 5: D_α(N_Z(0, s²) ‖ N_Z(μ, s²)) ≤ αμ²/(2s²) for integer μ, the same as the
    /// continuous Gaussian; Rényi divergence of product distributions adds over coordinates, so the
    /// d-dimensional shift by v costs at most α‖v‖²/(2s²) ≤ α/(2σ²) =: ε(α), in either order (±v).
    ///
    /// Subsampling, "remove" direction D_α((1−q)μ₀ + qμ₁ ‖ μ₀): expanding ((1−q) + q·μ₁/μ₀)^α binomially
    /// is exact for any base pair at integer α (Mironov, Talwar, Zhang 2019, Section 3.2):
    /// A = Σ_k C(α,k)(1−q)^(α−k) q^k exp((k−1)·D_k(μ₁‖μ₀)), every term increasing in D_k, so
    /// D_k ≤ k/(2σ²) gives exactly the continuous Gaussian's A_α (`logAIntegerOrder`).
    /// "Add" direction D_α(μ₀ ‖ (1−q)μ₀ + qμ₁): the general Poisson-subsampling bound of Zhu and Wang
    /// 2019, "Poisson Subsampled Rényi Differential Privacy" (ICML), Theorem 6, valid for any mechanism
    /// with RDP ε(·) under add/remove adjacency (both directions):
    /// (α−1)ε' ≤ log[(1−q)^(α−1)(1 + (α−1)q) + C(α,2)q²(1−q)^(α−2)e^(ε(2))
    ///              + 3 Σ_{ℓ=3..α} C(α,ℓ)(1−q)^(α−ℓ) q^ℓ e^((ℓ−1)ε(ℓ))],
    /// and the form autodp 0.2.3.1 implements as its assumption-free bound
    /// (`anaRDPacct.compose_poisson_subsampled_mechanisms1`), whose ℓ ≥ 3 terms are
    /// C(α,ℓ)(1−q)^(α−ℓ) q^ℓ e^(ℓ·ε(ℓ+1)) without the factor 3. The result is the largest of the three,
    /// so it stands if either published form does. Checked against autodp in RDPAccountantTests.
    public static func discreteGaussianRDP(samplingRate q: Double, noiseMultiplier sigma: Double, order alpha: Int) -> Double {
        if q == 0 { return 0 }
        let twoSigmaSquared = 2 * sigma * sigma
        func baseRDP(_ order: Int) -> Double { Double(order) / twoSigmaSquared }
        if q == 1 { return baseRDP(alpha) }
        let logQ = log(q), logOneMinusQ = log1p(-q)
        let remove = logAIntegerOrder(q: q, sigma: sigma, alpha: alpha)
        let head = SpecialFunctions.logAdd(
            Double(alpha - 1) * logOneMinusQ + log1p(Double(alpha - 1) * q),
            logBinomial(alpha, 2) + 2 * logQ + Double(alpha - 2) * logOneMinusQ + baseRDP(2))
        var theorem6 = head, autodpForm = head
        if alpha >= 3 {
            for l in 3...alpha {
                let common = logBinomial(alpha, l) + Double(l) * logQ + Double(alpha - l) * logOneMinusQ
                theorem6 = SpecialFunctions.logAdd(theorem6, log(3.0) + common + Double(l - 1) * baseRDP(l))
                autodpForm = SpecialFunctions.logAdd(autodpForm, common + Double(l) * baseRDP(l + 1))
            }
        }
        return max(0, max(remove, theorem6, autodpForm)) / Double(alpha - 1)
    }
}
