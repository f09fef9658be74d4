import Foundation

/// A threshold policy that tolerates a stated dropout rate with a stated probability of failure, in
/// the manner of SecAgg+ (Bell et al., CCS 2020, §3–4), which choose the degree k and threshold t so
/// that, over random dropouts, every client keeps at least t live members in its neighbourhood
/// except with a small stated probability (their correctness parameter), while fewer than t members
/// of any neighbourhood are corrupt (their security parameter).
///
/// Model: each client drops out of the round, at whatever stage, independently with probability
/// δ = `dropoutRate`. A client's secrets are recovered when at least t members of its closed
/// neighbourhood of m survive, so it fails with probability P(Bin(m, 1 − δ) < t); over the N distinct
/// neighbourhoods (1 for the complete graph, n for a Harary graph) the union bound gives
/// N · P(Bin(m, 1 − δ) < t), which must not exceed ε = `failureProbability`. (A fixed number of
/// dropouts drawn without replacement is more concentrated than the binomial, so the bound holds
/// for it too.) A failed round aborts and reveals nothing; ε is a liveness figure, not a privacy one.
///
/// Among the thresholds that meet the bound the policy takes the largest, because 2t − m − 1 is the
/// number of colluders per neighbourhood the protocol withstands against a coordinator that lies
/// about dropouts (`CollusionResistance`): each member of slack given to dropouts costs two of
/// collusion resistance. It never goes below `CollusionResistance.minimumThreshold` of the largest
/// neighbourhood (a strict majority plus a twentieth), so δ must be below 1/2, and a high δ needs a
/// large neighbourhood (the tail falls like exp(−m · KL(t/m ‖ 1 − δ))).
public struct DropoutTolerance: Sendable, Equatable, CustomStringConvertible {
    /// δ: the fraction of a cohort expected to drop out, each client independently.
    public let dropoutRate: Double
    /// ε: the largest acceptable probability that a round aborts for lack of survivors.
    public let failureProbability: Double

    /// ε when none is stated: one round in a million aborts for lack of survivors.
    public static let defaultFailureProbability = 1e-6

    /// A policy.
    /// - Throws: `SecureAggregationError.invalidParameters` unless 0 ≤ δ < 1/2 and 0 < ε < 1.
    public init(dropoutRate: Double, failureProbability: Double = DropoutTolerance.defaultFailureProbability) throws {
        guard dropoutRate.isFinite, dropoutRate >= 0, dropoutRate < 0.5 else {
            throw SecureAggregationError.invalidParameters(
                "dropout tolerance \(dropoutRate) outside [0, 0.5): the threshold stays a strict majority of each neighbourhood")
        }
        guard failureProbability.isFinite, failureProbability > 0, failureProbability < 1 else {
            throw SecureAggregationError.invalidParameters("dropout failure probability \(failureProbability) outside (0, 1)")
        }
        self.dropoutRate = dropoutRate
        self.failureProbability = failureProbability
    }

    public var description: String {
        "tolerates \(dropoutRate * 100)% dropout, failing with probability at most \(failureProbability)"
    }

    /// N · P(Bin(m, 1 − δ) < t) for the smallest closed neighbourhood of `graph` over n clients: the
    /// union bound on the probability that some client's secrets cannot be recovered.
    public func failureBound(cohortSize n: Int, graph: NeighbourGraph, threshold t: Int) -> Double {
        let (smallest, _, distinct) = Self.neighbourhoods(cohortSize: n, graph: graph)
        return min(1, Double(distinct) * Self.binomialLowerTail(trials: smallest, success: 1 - dropoutRate, below: t))
    }

    /// The largest threshold for `graph` over n clients whose failure bound is at most ε.
    /// - Throws: `SecureAggregationError.collusionResistanceTooLow` when even the least threshold with
    ///   enough collusion resistance fails too often; the message names the bound it reaches.
    public func threshold(cohortSize n: Int, graph: NeighbourGraph) throws -> Int {
        let (smallest, largest, _) = Self.neighbourhoods(cohortSize: n, graph: graph)
        let floor = CollusionResistance.minimumThreshold(neighbourhoodSize: largest)
        guard floor <= smallest else {
            throw SecureAggregationError.collusionResistanceTooLow(
                withstood: CollusionResistance.withstood(cohortSize: n, graph: graph, threshold: smallest),
                minimum: CollusionResistance.minimum(neighbourhoodSize: largest),
                detail: "neighbourhoods of \(smallest) to \(largest) members admit no threshold of at least \(floor)")
        }
        // The bound grows with t: walk down from the smallest neighbourhood to the majority floor.
        for t in stride(from: smallest, through: floor, by: -1)
        where failureBound(cohortSize: n, graph: graph, threshold: t) <= failureProbability {
            return t
        }
        // What meeting ε would leave: the largest threshold below the floor whose bound is met, if any.
        let meeting = stride(from: floor - 1, through: 1, by: -1).first {
            failureBound(cohortSize: n, graph: graph, threshold: $0) <= failureProbability
        }
        throw SecureAggregationError.collusionResistanceTooLow(
            withstood: meeting.map { CollusionResistance.withstood(cohortSize: n, graph: graph, threshold: $0) } ?? 0,
            minimum: CollusionResistance.minimum(neighbourhoodSize: largest),
            detail: "a \(graph) over \(n) clients cannot tolerate \(dropoutRate * 100)% dropout with failure probability \(failureProbability): "
                + "the least threshold with enough collusion resistance, \(floor), fails with probability up to "
                + "\(failureBound(cohortSize: n, graph: graph, threshold: floor)); use a larger degree, a lower tolerance or a looser failure probability")
    }

    /// The sparsest graph that meets the policy and its threshold: the smallest even degree from
    /// `minimumDegree` (default `NeighbourGraph.defaultDegree`) up, else the complete graph.
    /// - Throws: `SecureAggregationError.invalidParameters` if no graph over n clients meets it.
    public func graphAndThreshold(cohortSize n: Int, minimumDegree: Int? = nil) throws -> (graph: NeighbourGraph, threshold: Int) {
        var k = max(2, minimumDegree ?? NeighbourGraph.defaultDegree(cohortSize: n))
        if k % 2 == 1 { k += 1 }
        while k < n - 1, k + 1 <= SecureAggregationSession.maximumNeighbourhoodSize {
            if let t = try? threshold(cohortSize: n, graph: .harary(degree: k)) { return (.harary(degree: k), t) }
            k += 2
        }
        guard n <= SecureAggregationSession.maximumNeighbourhoodSize else {
            throw SecureAggregationError.invalidParameters(
                "no Harary graph of degree up to \(SecureAggregationSession.maximumNeighbourhoodSize - 1) over \(n) clients meets: \(self)")
        }
        return (.complete, try threshold(cohortSize: n, graph: .complete))
    }

    /// P(some neighbourhood holds at least t colluders) when each client colludes independently with
    /// probability γ: N · P(Bin(m, γ) ≥ t) over the largest neighbourhood, for reporting the collusion
    /// resistance a threshold leaves.
    public static func collusionBound(cohortSize n: Int, graph: NeighbourGraph, threshold t: Int, collusionRate γ: Double) -> Double {
        let (_, largest, distinct) = neighbourhoods(cohortSize: n, graph: graph)
        // P(Bin(m, γ) ≥ t) = P(Bin(m, 1 − γ) < m − t + 1).
        return min(1, Double(distinct) * binomialLowerTail(trials: largest, success: 1 - γ, below: largest - t + 1))
    }

    /// Smallest and largest closed neighbourhood and the number of distinct neighbourhoods.
    static func neighbourhoods(cohortSize n: Int, graph: NeighbourGraph) -> (smallest: Int, largest: Int, distinct: Int) {
        switch graph {
        case .complete: return (n, n, 1)
        case let .harary(k) where k >= n - 1: return (n, n, 1)
        case let .harary(k):
            // Even k: a ring with k/2 on each side. Odd k adds a diameter, one more for some nodes when n is odd.
            return (k + 1, k % 2 == 0 ? k + 1 : k + 2, n)
        }
    }

    /// P(X < t) for X ~ Bin(m, p), its terms formed in log space so that none underflows before the sum.
    static func binomialLowerTail(trials m: Int, success p: Double, below t: Int) -> Double {
        guard t > 0 else { return 0 }
        guard t <= m else { return 1 }
        if p <= 0 { return 1 }
        if p >= 1 { return 0 }
        let logP = log(p), logQ = log1p(-p)
        var terms = [Double]()
        terms.reserveCapacity(t)
        var logChoose = 0.0  // log C(m, i), by C(m, i + 1) = C(m, i) · (m − i) / (i + 1)
        for i in 0..<t {
            terms.append(logChoose + Double(i) * logP + Double(m - i) * logQ)
            logChoose += log(Double(m - i)) - log(Double(i + 1))
        }
        let top = terms.max() ?? -.infinity
        return min(1, exp(top) * terms.reduce(0) { $0 + exp($1 - top) })
    }
}
