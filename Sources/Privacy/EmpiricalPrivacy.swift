import Foundation

/// Tails of the binomial distribution, in log space so that thousands of trials neither underflow
/// nor lose the small tail probabilities that auditing and confidence intervals depend on.
public enum Binomial {
    /// log P[X = k] for X ~ Binomial(n, p); −∞ outside 0...n.
    public static func logProbability(_ k: Int, trials n: Int, probability p: Double) -> Double {
        precondition(n >= 0 && p >= 0 && p <= 1, "binomial needs n >= 0 and p in [0, 1] (n = \(n), p = \(p))")
        guard k >= 0 && k <= n else { return -.infinity }
        if p == 0 { return k == 0 ? 0 : -.infinity }
        if p == 1 { return k == n ? 0 : -.infinity }
        let choose = SpecialFunctions.logGamma(Double(n + 1)) - SpecialFunctions.logGamma(Double(k + 1))
            - SpecialFunctions.logGamma(Double(n - k + 1))
        return choose + Double(k) * log(p) + Double(n - k) * log1p(-p)
    }

    /// P[X ≥ k] for X ~ Binomial(n, p): 1 when k ≤ 0, 0 when k > n.
    public static func upperTail(atLeast k: Int, trials n: Int, probability p: Double) -> Double {
        guard k > 0 else { return 1 }
        guard k <= n else { return 0 }
        return min(1, exp(logSum(from: k, through: n, trials: n, probability: p)))
    }

    /// P[X ≤ k] for X ~ Binomial(n, p): 0 when k < 0, 1 when k ≥ n.
    public static func lowerTail(atMost k: Int, trials n: Int, probability p: Double) -> Double {
        guard k >= 0 else { return 0 }
        guard k < n else { return 1 }
        return min(1, exp(logSum(from: 0, through: k, trials: n, probability: p)))
    }

    /// log Σ_{j=a}^{b} P[X = j], summed with log-add so that no term underflows the sum.
    static func logSum(from a: Int, through b: Int, trials n: Int, probability p: Double) -> Double {
        var total = -Double.infinity
        for j in a...b { total = SpecialFunctions.logAdd(total, logProbability(j, trials: n, probability: p)) }
        return total
    }

    /// The exact (Clopper–Pearson) two-sided confidence interval for p after `successes` in `trials`:
    /// the p at which each one-sided tail equals (1 − confidence)/2, found by bisection on the tails.
    public static func clopperPearson(successes k: Int, trials n: Int, confidence: Double) -> ClosedRange<Double> {
        precondition(n >= 1 && k >= 0 && k <= n, "need 0 <= successes <= trials, trials >= 1 (k = \(k), n = \(n))")
        precondition(confidence > 0 && confidence < 1, "confidence must be in (0, 1), got \(confidence)")
        let tail = (1 - confidence) / 2
        // Lower end: P[X ≥ k | p] = tail, increasing in p. Upper end: P[X ≤ k | p] = tail, decreasing in p.
        let lower = k == 0 ? 0 : bisect { upperTail(atLeast: k, trials: n, probability: $0) >= tail }
        let upper = k == n ? 1 : bisect { lowerTail(atMost: k, trials: n, probability: $0) <= tail }
        return lower...upper
    }

    /// The boundary in [0, 1] where a predicate monotone in p turns from false to true.
    private static func bisect(_ holds: (Double) -> Bool) -> Double {
        var low = 0.0, high = 1.0
        for _ in 0..<100 where high - low > 1e-15 {
            let middle = (low + high) / 2
            if holds(middle) { high = middle } else { low = middle }
        }
        return (low + high) / 2
    }
}

/// What a one-run audit observed, the lower bound on ε it supports, and the largest bound it could
/// have supported (its power): a bound is only evidence about an ε below that power.
public struct OneRunAudit: Sendable, Equatable, Codable {
    /// m: canaries, each included in the training data independently with probability 1/2.
    public var canaries: Int
    /// r: guesses made (the auditor abstains on the other m − r canaries).
    public var guesses: Int
    /// v: guesses that were right.
    public var correct: Int
    /// δ of the (ε, δ)-DP hypothesis being tested; 0 tests pure ε-DP.
    public var delta: Double
    /// β: the probability with which the bound may be wrong (0.05 gives 95% confidence).
    public var significance: Double
    /// The largest ε that the observed guesses reject at level β: with probability at least 1 − β the
    /// training run is not (ε', δ)-DP for any ε' below this. 0 when the guesses show nothing.
    public var epsilonLowerBound: Double
    /// The bound this audit would print had all r guesses been right (`EmpiricalPrivacy.power`): no run,
    /// however leaky, can make it report more, so it cannot refute a claimed ε at or above this.
    public var power: Double

    /// What the audit says about a claimed ε (the accountant's, at the same δ).
    public func verdict(claimedEpsilon epsilon: Double) -> AuditVerdict {
        if epsilonLowerBound > epsilon { return .refuted }
        return power > epsilon ? .consistent : .noPower
    }
}

/// The audit's finding about a claimed ε.
public enum AuditVerdict: String, Sendable, Equatable, Codable {
    /// The lower bound exceeds the claim: with confidence 1 − β, the run is not (ε, δ)-DP.
    case refuted
    /// The bound is at most the claim, and the audit had the power to exceed it.
    case consistent
    /// The bound is at most the claim, but it could not have exceeded it whatever the run leaked.
    case noPower = "no_power"
}

/// Empirical lower bounds on ε from one training run: Steinke, Nasr and Jagielski, "Privacy Auditing
/// with One (1) Training Run", NeurIPS 2023.
///
/// The auditor plants m canaries, each included independently with probability 1/2 (from a secure
/// generator: the inclusion bits are the secret the audit tests), trains once, scores every canary
/// (lower meaning "more likely trained on": the canary's loss after training minus its loss on the
/// model before training), and guesses "in" for the r/2 lowest scores and "out" for the r/2 highest
/// (their black-box auditor with k₊ = k₋ = r/2). If the run is (ε, δ)-DP, the number W of right
/// guesses satisfies (their main theorem for (ε, δ)-DP, the p-value that public implementations of the
/// paper compute as `p_value_DP_audit`; with δ = 0 it is the binomial tail of their pure-DP theorem)
///
///     P[W ≥ v] ≤ f(v) + 2mδ · max_{i = 1…v} (f(v − i) − f(v)) / i,
///     f(u) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ u],
///
/// so any ε whose right-hand side is below β is rejected with confidence 1 − β. The bound is the
/// supremum of rejected ε. It holds for each record, so it is comparable to the accountant's ε only
/// when each canary is a single record; a canary repeated k times tests group privacy.
///
/// Checked against an independent SciPy computation of the same theorem
/// (Tests/PrivacyTests/Reference/generate_one_run_audit.py).
public enum EmpiricalPrivacy {
    /// The largest ε the search considers; beyond it e^ε/(1 + e^ε) is 1 to double precision.
    public static let maximumEpsilon = 40.0

    /// The right-hand side of the theorem: an upper bound on P[W ≥ v] for an (ε, δ)-DP run, at most 1.
    /// - Precondition: 0 ≤ v ≤ r ≤ m, ε ≥ 0, δ in [0, 1].
    public static func pValue(canaries m: Int, guesses r: Int, correct v: Int, epsilon: Double, delta: Double) -> Double {
        precondition(v >= 0 && v <= r && r <= m, "need 0 <= correct <= guesses <= canaries (v = \(v), r = \(r), m = \(m))")
        precondition(epsilon >= 0 && !epsilon.isNaN, "epsilon must be >= 0, got \(epsilon)")
        precondition(delta >= 0 && delta <= 1, "delta must be in [0, 1], got \(delta)")
        // Randomised response with parameter ε guesses right with probability e^ε/(1 + e^ε).
        let q = 1 / (1 + exp(-epsilon))
        let tail = Binomial.upperTail(atLeast: v, trials: r, probability: q)
        guard delta > 0, v > 0 else { return min(1, tail) }
        // max over i of P[v − i ≤ W' < v] / i, accumulating the probability mass one step down at a time;
        // for i > v the term is (1 − f(v))/i, below the i = v term, so i = 1…v covers i = 1…m.
        var below = 0.0, slope = 0.0
        for i in 1...v {
            below += exp(Binomial.logProbability(v - i, trials: r, probability: q))
            slope = max(slope, below / Double(i))
        }
        return min(1, tail + 2 * Double(m) * delta * slope)
    }

    /// The supremum of ε in [0, `maximumEpsilon`] with `pValue` ≤ β: the lower bound that v right
    /// guesses out of r (over m canaries) support at significance β. 0 when even ε = 0 is not rejected.
    ///
    /// Rejecting (ε', δ)-DP rejects every smaller ε too, so the answer is found by bisection (to 1e-10)
    /// that keeps a rejected ε as its lower end: the result is always a rejected ε, hence a sound bound.
    /// For δ = 0 the p-value is increasing in ε and the result is the supremum; for δ > 0 the p-value
    /// need not be monotone and, as with the paper's own bisection, the result may fall short of it.
    public static func epsilonLowerBound(canaries m: Int, guesses r: Int, correct v: Int, delta: Double = 0,
                                         significance beta: Double = 0.05) -> Double {
        precondition(beta > 0 && beta < 1, "significance must be in (0, 1), got \(beta)")
        func rejected(_ epsilon: Double) -> Bool {
            pValue(canaries: m, guesses: r, correct: v, epsilon: epsilon, delta: delta) <= beta
        }
        guard r > 0, rejected(0) else { return 0 }
        if rejected(maximumEpsilon) { return maximumEpsilon }
        var low = 0.0, high = maximumEpsilon  // low is rejected, high is not
        while high - low > 1e-10 {
            let middle = (low + high) / 2
            if rejected(middle) { low = middle } else { high = middle }
        }
        return low
    }

    /// The audit's power: the bound it prints when all r guesses are right, the most that m canaries
    /// and r guesses can ever show at (δ, β). A claimed ε at or above it cannot be refuted by this audit.
    public static func power(canaries m: Int, guesses r: Int, delta: Double = 0, significance beta: Double = 0.05) -> Double {
        epsilonLowerBound(canaries: m, guesses: r, correct: r, delta: delta, significance: beta)
    }

    /// The fewest guesses r (even, at most m) whose power exceeds `epsilon` at (δ, β), or nil when even
    /// r = m (rounded down to even) cannot: plan the audit with it before training.
    public static func guessesNeeded(toRefute epsilon: Double, canaries m: Int, delta: Double = 0,
                                     significance beta: Double = 0.05) -> Int? {
        stride(from: 2, through: m - m % 2, by: 2).first {
            power(canaries: m, guesses: $0, delta: delta, significance: beta) > epsilon
        }
    }

    /// Runs the auditor on the canaries' scores: guesses "in" for the `guesses`/2 lowest scores and
    /// "out" for the `guesses`/2 highest, counts the right guesses against `included`, and returns the
    /// bound with its power.
    ///
    /// - Parameters:
    ///   - scores: one score per canary, lower meaning "more likely trained on": the canary's loss after
    ///     training minus its loss before (`CanaryAudit.audit`), so that what the base model already
    ///     knew about a canary cancels out.
    ///   - included: whether each canary was in the training data (drawn with probability 1/2).
    ///   - guesses: r, even, at most m; nil guesses on every canary (r = m, rounded down to even). Fix it
    ///     before seeing the scores: choosing r after looking would void the confidence.
    /// - Throws: `PrivacyParameterError` for mismatched lengths, an odd or too large r, non-finite
    ///   scores, or β or δ out of range.
    public static func audit(scores: [Double], included: [Bool], guesses: Int? = nil, delta: Double = 0,
                             significance: Double = 0.05) throws -> OneRunAudit {
        let m = scores.count
        guard included.count == m, m >= 2 else {
            throw PrivacyParameterError(name: "canaries", value: Double(m),
                                        expected: "at least 2, with one inclusion bit each (got \(included.count) bits)")
        }
        let r = guesses ?? (m - m % 2)
        guard r >= 2, r <= m, r % 2 == 0 else {
            throw PrivacyParameterError(name: "guesses", value: Double(r), expected: "even, in 2...\(m)")
        }
        if let bad = scores.firstIndex(where: { !$0.isFinite }) {
            throw PrivacyParameterError(name: "score of canary \(bad)", value: scores[bad], expected: "finite")
        }
        guard delta >= 0, delta < 1 else { throw PrivacyParameterError(name: "delta", value: delta, expected: "in [0, 1)") }
        guard significance > 0, significance < 1 else {
            throw PrivacyParameterError(name: "significance", value: significance, expected: "in (0, 1)")
        }
        // Ties in score are broken by index, which is independent of the inclusion bits.
        let order = scores.indices.sorted { (scores[$0], $0) < (scores[$1], $1) }
        let half = r / 2
        let rightIn = order.prefix(half).filter { included[$0] }.count
        let rightOut = order.suffix(half).filter { !included[$0] }.count
        let v = rightIn + rightOut
        return OneRunAudit(canaries: m, guesses: r, correct: v, delta: delta, significance: significance,
                           epsilonLowerBound: epsilonLowerBound(canaries: m, guesses: r, correct: v, delta: delta,
                                                                significance: significance),
                           power: power(canaries: m, guesses: r, delta: delta, significance: significance))
    }
}
