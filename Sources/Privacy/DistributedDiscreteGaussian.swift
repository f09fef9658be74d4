import Foundation

/// The L2 and L1 bounds on one privacy unit's contribution (a record's, a user's or a client's clipped
/// vector) after scaling onto the integer grid and randomized rounding: the sensitivity of the integer
/// sum that secure aggregation adds up. All figures are in grid units (the clip norm times the scale 2^f).
public struct RoundedSensitivity: Codable, Sendable, Hashable {
    /// Δ₂: the L2 norm bound of the rounded integer vector.
    public let l2: Double
    /// Δ₁: the L1 norm bound of the rounded integer vector.
    public let l1: Double

    /// The bounds for a unit whose vector, clipped to L2 norm c and scaled to c/γ = `scaledClip` grid units,
    /// is rounded on its own by *conditional* randomized rounding (Kairouz, Liu, Steinke 2021, "The
    /// Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML,
    /// arXiv:2102.06387, Theorem 1 eq. (2)): each coordinate is rounded up or down without bias and the
    /// rounding is drawn again until the rounded norm is at most
    ///     Δ₂ = min{ √(c̃² + d/4 + √(2 log(1/β))·(c̃ + √d/2)),  c̃ + √d },   c̃ = c/γ,
    /// which holds deterministically after the conditioning; β ∈ [0, 1) bounds the chance that one draw
    /// is rejected (β = 0: no conditioning, only the second, worst-case bound). The L1 bound is
    /// Δ₁ = Δ₂·min(√d, Δ₂) (‖x‖₁ ≤ √d‖x‖₂ always, and ‖x‖₁ ≤ ‖x‖₂² for an integer vector).
    /// These are the formulas of the authors' own code (google-research/federated,
    /// distributed_dp/accounting_utils.py: `rounded_l2_norm_bound`, `rounded_l1_norm_bound`), against which
    /// Tests/PrivacyTests/DistributedDiscreteGaussianTests checks them.
    /// - Throws: `PrivacyParameterError` for c̃ not finite and positive, d < 1, or β outside [0, 1).
    public static func conditionalRounding(scaledClip: Double, dimension: Int, beta: Double) throws -> RoundedSensitivity {
        try validate(scaledClip: scaledClip, dimension: dimension)
        guard beta.isFinite, beta >= 0, beta < 1 else {
            throw PrivacyParameterError(name: "rounding beta", value: beta, expected: "in [0, 1)")
        }
        let rootD = Double(dimension).squareRoot()
        var l2 = scaledClip + rootD
        if beta > 0 {
            let squared = scaledClip * scaledClip + Double(dimension) / 4
                + (2 * log(1 / beta)).squareRoot() * (scaledClip + rootD / 2)
            l2 = min(l2, squared.squareRoot())
        }
        return RoundedSensitivity(uncheckedL2: l2, l1: l2 * min(rootD, l2))
    }

    /// The bounds when a *sum* of units' vectors is rounded once (no per-unit conditioning): adding or
    /// removing one unit moves the real sum by at most c̃ in L2; with the rounding's uniforms coupled
    /// between the two neighbours, each coordinate of the rounded difference is the real difference rounded
    /// up or down, so it moves by less than |difference| + 1 and Δ₂ = c̃ + √d (the mixture over the
    /// coupling is bounded by its worst case, joint convexity of Rényi divergence). Δ₁ as above.
    /// - Throws: `PrivacyParameterError` for c̃ not finite and positive or d < 1.
    public static func roundedSum(scaledClip: Double, dimension: Int) throws -> RoundedSensitivity {
        try conditionalRounding(scaledClip: scaledClip, dimension: dimension, beta: 0)
    }

    /// Exact bounds for an integer vector already known: Δ₂ = `l2`, Δ₁ = `l1` (e.g. a count, Δ₂ = Δ₁ = 1).
    /// - Throws: `PrivacyParameterError` unless both are finite, l2 > 0 and l1 ≥ l2 (true of any vector).
    public init(l2: Double, l1: Double) throws {
        guard l2.isFinite, l2 > 0, l1.isFinite, l1 >= l2 * (1 - 1e-12) else {
            throw PrivacyParameterError(name: "sensitivity", value: l2, expected: "finite L2 > 0 and L1 >= L2 (got L1 \(l1))")
        }
        self.l2 = l2
        self.l1 = l1
    }

    private init(uncheckedL2 l2: Double, l1: Double) { self.l2 = l2; self.l1 = l1 }

    private static func validate(scaledClip: Double, dimension: Int) throws {
        guard scaledClip.isFinite, scaledClip > 0 else {
            throw PrivacyParameterError(name: "scaled clip norm", value: scaledClip, expected: "finite and > 0 (clip × 2^f)")
        }
        guard dimension >= 1 else {
            throw PrivacyParameterError(name: "dimension", value: Double(dimension), expected: ">= 1")
        }
    }
}

/// The privacy of the sum of `shares` independent discrete Gaussians N_Z(0, σ²)^d — the noise of the
/// distributed discrete Gaussian mechanism, which is *not* itself a discrete Gaussian — added to an
/// integer vector of sensitivity `sensitivity`, optionally Poisson-subsampled at rate q and repeated.
///
/// Base mechanism, one application, both adjacency directions: Kairouz, Liu, Steinke 2021 (arXiv:2102.06387),
/// Proposition 14 / eq. (17), with l₂ = Δ₂/(√n·σ), l₁ = Δ₁/(√n·σ) and
///     τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1))                       (their Theorem 1, eq. (3)):
///     D_α ≤ min{ (α/2)·l₂² + τd,  (α/2)·(l₂² + 2l₁τ + τ²d),  (α/2)·(l₂ + τ√d)² }   for every α ≥ 1;
/// and their Theorem 1, eq. (4): the sum is ½ε²-concentrated DP (ρ-zCDP, ρ = ε²/2) with
///     ε = min{ √(l₂² + 2τd),  l₂ + τ√d },
/// which is never below the first and third terms at any α ≥ 1 (τd ≤ α·τd), so the zCDP form is the
/// looser of the two and sound wherever the first is. Both read as the authors' code has them
/// (google-research/federated, distributed_dp/accounting_utils.py, `compute_rdp_dgaussian`, `ddgauss_epsilon`).
/// One share (n = 1) has τ = 0 and is exactly the discrete Gaussian of Canonne, Kamath, Steinke 2020.
/// The sum is symmetric, so the bound holds for Δ and −Δ alike: both directions of add/remove.
/// Shares below σ = 1/2 are refused when two or more are summed: a precaution (the paper's statement could
/// not be read here and the authors' code does not check it; τ is already large there, about 10·(n−1)·e^(−π²/4)).
/// Subsampling costs more here than in the authors' code: `SubsampledRDP` also takes autodp's form (see there).
///
/// Units: for record- (or user-) level distributed DP every client Poisson-samples its own records at the plan's
/// rate q, independently, so each record of the union is included with probability q: one Poisson sample of
/// the union at rate q, the unit being the record. The sensitivity is then one record's rounded vector:
/// `conditionalRounding` when each record's clipped gradient is rounded on its own, `roundedSum` when a
/// client rounds its sum once. Client-level DP-FedAvg is the same with q the client sampling rate and the
/// client's whole clipped update as the unit (see `ClientLevelDP`).
///
/// Subsampling and composition: `SubsampledRDP.poissonIntegerOrder` (integer orders only, an upper bound);
/// RDP adds over steps and converts to (ε, δ) with Balle et al. 2020, Theorem 21, as `RDPAccountant` does.
/// Every step is an upper bound on the true RDP, so the ε reported errs high, never low.
public struct DistributedDiscreteGaussianSteps: Codable, Sendable, Hashable {
    /// Poisson sampling rate q of the privacy unit, in [0, 1].
    public var samplingRate: Double
    /// n: how many independent noise shares the accounted sum holds (those one can rely on, see `NoiseTrust`).
    public var shares: Int
    /// σ: each share's discrete Gaussian parameter, in grid units.
    public var shareSigma: Double
    /// d: the vector's dimension.
    public var dimension: Int
    /// Δ₂ and Δ₁ in grid units.
    public var sensitivity: RoundedSensitivity
    /// Number of compositions.
    public var steps: Int

    /// Records the parameters; `validate()` checks them.
    public init(samplingRate: Double, shares: Int, shareSigma: Double, dimension: Int, sensitivity: RoundedSensitivity, steps: Int) {
        self.samplingRate = samplingRate
        self.shares = shares
        self.shareSigma = shareSigma
        self.dimension = dimension
        self.sensitivity = sensitivity
        self.steps = steps
    }

    /// Throws `PrivacyParameterError` naming the first parameter out of range.
    public func validate() throws {
        try MechanismSteps(samplingRate: samplingRate, noiseMultiplier: 1, steps: steps).validate()
        guard shares >= 1 else {
            throw PrivacyParameterError(name: "noise shares", value: Double(shares), expected: ">= 1")
        }
        guard shareSigma.isFinite, shareSigma > 0, shares == 1 || shareSigma >= 0.5 else {
            throw PrivacyParameterError(name: "share sigma", value: shareSigma,
                                        expected: "finite and > 0, and >= 1/2 when two or more shares are summed "
                                            + "(Kairouz, Liu, Steinke 2021, Theorem 1)")
        }
        guard dimension >= 1 else {
            throw PrivacyParameterError(name: "dimension", value: Double(dimension), expected: ">= 1")
        }
        // A decoded sensitivity has not been through RoundedSensitivity's checks.
        guard sensitivity.l2.isFinite, sensitivity.l2 > 0, sensitivity.l1.isFinite, sensitivity.l1 >= 0 else {
            throw PrivacyParameterError(name: "sensitivity", value: sensitivity.l2, expected: "finite L2 > 0 and finite L1 >= 0")
        }
    }

    /// τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)) (KLS 2021, Theorem 1 eq. (3)); 0 for one share.
    public var tau: Double {
        guard shares >= 2 else { return 0 }
        let base = -2 * Double.pi * Double.pi * shareSigma * shareSigma
        var sum = 0.0
        for k in 1..<shares { sum += exp(base * Double(k) / Double(k + 1)) }
        return 10 * sum
    }

    /// The base mechanism's RDP at order α ≥ 1, one application (KLS 2021, Proposition 14).
    public func baseRDP(order alpha: Double) -> Double {
        let total = Double(shares).squareRoot() * shareSigma
        let l2 = sensitivity.l2 / total, l1 = sensitivity.l1 / total
        let t = tau, d = Double(dimension)
        let first = alpha / 2 * l2 * l2 + t * d
        let second = alpha / 2 * (l2 * l2 + 2 * l1 * t + t * t * d)
        let third = alpha / 2 * (l2 + d.squareRoot() * t) * (l2 + d.squareRoot() * t)
        return min(first, second, third)
    }

    /// ρ of the base mechanism's ρ-zCDP (KLS 2021, Theorem 1 eq. (4)): ε²/2 with ε = min{√(l₂² + 2τd), l₂ + τ√d}.
    public var zCDP: Double {
        let l2 = sensitivity.l2 / (Double(shares).squareRoot() * shareSigma)
        let t = tau, d = Double(dimension)
        let epsilon = min((l2 * l2 + 2 * t * d).squareRoot(), l2 + t * d.squareRoot())
        return epsilon * epsilon / 2
    }

    /// RDP of one step at integer order α ≥ 2, subsampled at q (an upper bound; see `SubsampledRDP`).
    public func stepRDP(order alpha: Int) -> Double {
        SubsampledRDP.poissonIntegerOrder(samplingRate: samplingRate, order: alpha) { baseRDP(order: Double($0)) }
    }

    /// The same steps as a `MechanismSteps` of discrete-Gaussian kind that the ledger and `PrivacyAccounting`
    /// compose: noise multiplier 1/√(2ρ), whose per-order RDP α/(2σ²) = αρ is the zCDP bound above, never
    /// below Proposition 14's, so the ledger's ε is at least `DistributedDiscreteGaussianAccountant`'s.
    public var ledgerMechanism: MechanismSteps {
        MechanismSteps(samplingRate: samplingRate, noiseMultiplier: 1 / (2 * zCDP).squareRoot(), steps: steps,
                       noise: .discreteGaussian)
    }
}

/// ε of a composition of distributed-discrete-Gaussian steps, over the integer RDP orders of
/// `RDPAccountant.defaultOrders` (2…63, then 64…4096).
public enum DistributedDiscreteGaussianAccountant {
    /// The integer orders used.
    public static let orders: [Int] = RDPAccountant.defaultOrders.filter { $0 == $0.rounded() && $0 >= 2 }.map { Int($0) }

    /// The composed RDP at every order of `orders` (integers ≥ 2).
    public static func rdp(_ steps: [DistributedDiscreteGaussianSteps], orders: [Int] = orders) throws -> [Double] {
        guard orders.allSatisfy({ $0 >= 2 }), !orders.isEmpty else {
            throw PrivacyParameterError(name: "RDP orders", value: Double(orders.min() ?? 0), expected: "integers >= 2, at least one")
        }
        var total = [Double](repeating: 0, count: orders.count)
        for mechanism in steps {
            try mechanism.validate()
            if mechanism.steps == 0 || mechanism.samplingRate == 0 { continue }
            for (index, order) in orders.enumerated() {
                total[index] += Double(mechanism.steps) * mechanism.stepRDP(order: order)
            }
        }
        return total
    }

    /// The smallest ε over the orders at which the composition is (ε, δ)-DP, and that order (Balle et al.
    /// 2020, Theorem 21, as `RDPAccountant.epsilon(delta:)`). Throws for δ outside (0, 1) or bad steps.
    public static func epsilon(_ steps: [DistributedDiscreteGaussianSteps], delta: Double,
                               orders: [Int] = orders) throws -> (epsilon: Double, order: Int) {
        try validateDelta(delta)
        let composed = try rdp(steps, orders: orders)
        var best = (epsilon: Double.infinity, order: orders[0])
        for (order, divergence) in zip(orders, composed) {
            let candidate = RDPAccountant.epsilon(rdp: divergence, order: Double(order), delta: delta)
            if candidate < best.epsilon { best = (candidate, order) }
        }
        return (max(0, best.epsilon), best.order)
    }
}

/// RDP of a Poisson-subsampled mechanism from the RDP ε(·) of the mechanism itself (valid in both
/// adjacency directions), at integer orders: an upper bound.
public enum SubsampledRDP {
    /// At integer α ≥ 2, the largest of three published upper bounds, capped by ε(α) itself:
    /// - the binomial expansion (Mironov, Talwar, Zhang 2019, Section 3.2), exact for a fixed pair and
    ///   extended to mixtures by joint convexity: (1−q)^(α−1)(1 + (α−1)q) + Σ_{ℓ≥2} C(α,ℓ)(1−q)^(α−ℓ)q^ℓ e^((ℓ−1)ε(ℓ));
    /// - Zhu and Wang 2019 (ICML), the general Poisson-subsampling bound, with factor 3 on the ℓ ≥ 3 terms
    ///   (the form of KLS 2021's code, `_compute_rdp_subsampled(upper_bound=True)`);
    /// - autodp 0.2.3.1's assumption-free form, with e^(ℓ·ε(ℓ+1)) for ℓ ≥ 3;
    /// and min with ε(α): subsampling never costs more than the mechanism (joint convexity).
    /// The same three forms as `RDPAccountant.discreteGaussianRDP`, for any ε(·): the hedge keeps the result
    /// sound if either published general form is. It errs high, and by much: autodp's form dominates at middle
    /// orders, so ε is up to 3.8× dp_accounting's Gaussian in the large-σ limit (q = 0.1, z = 6.3, T = 100) and
    /// 28–43% above the authors' code (Zhu–Wang alone) in DistributedDiscreteGaussianTests' subsampled cases.
    public static func poissonIntegerOrder(samplingRate q: Double, order alpha: Int, base: (Int) -> Double) -> Double {
        precondition(alpha >= 2, "integer orders from 2")
        if q == 0 { return 0 }
        if q == 1 { return base(alpha) }
        let logQ = log(q), logOneMinusQ = log1p(-q)
        let head = Double(alpha - 1) * logOneMinusQ + log1p(Double(alpha - 1) * q)
        let second = RDPAccountant.logBinomial(alpha, 2) + 2 * logQ + Double(alpha - 2) * logOneMinusQ + base(2)
        var expansion = SpecialFunctions.logAdd(head, second)
        var zhuWang = expansion, autodpForm = expansion
        if alpha >= 3 {
            for l in 3...alpha {
                let common = RDPAccountant.logBinomial(alpha, l) + Double(l) * logQ + Double(alpha - l) * logOneMinusQ
                let exact = common + Double(l - 1) * base(l)
                expansion = SpecialFunctions.logAdd(expansion, exact)
                zhuWang = SpecialFunctions.logAdd(zhuWang, log(3.0) + exact)
                autodpForm = SpecialFunctions.logAdd(autodpForm, common + Double(l) * base(l + 1))
            }
        }
        let subsampled = max(0, max(expansion, zhuWang, autodpForm)) / Double(alpha - 1)
        return min(subsampled, base(alpha))
    }
}
