/// How many colluding clients per neighbourhood secure aggregation withstands against a coordinator
/// that lies about who dropped out, and the least this project accepts when it plans a round.
///
/// The coordinator learns an honest client u's input once it holds, for u, both t shares of the
/// self-mask seed b_u and, for every neighbour u masked with, t shares of u's or that neighbour's
/// masking key. Each honest holder reveals one kind of share per member, so a coordinator telling
/// different holders different stories needs t holders to believe each. With the consistency check
/// (Bonawitz et al., CCS 2017, Figure 4, round 3) every holder reveals only against t signatures,
/// from the owner's closed neighbourhood, on the one survivor set it signed, and honest clients sign
/// once; two stories then need two sets of t signers in one neighbourhood of m that share only
/// colluders: t + t − c ≤ m, so c ≥ 2t − m. The same count bounds the lie that makes u mask with
/// few neighbours and claims they dropped: u refuses to sign a set listing neighbours it holds no
/// shares of, so at most m − t honest members besides u can sign it with the colluders, and it needs
/// t of them (counted, not run: the tests run the split view, and this lie without colluders).
/// Hence 2t − m − 1 colluders are withstood, never more than t − 1. Without the check neither count holds: a coordinator alone (no colluder) unmasks an
/// input of a complete graph of 100 at t = 52 (`MaliciousCoordinatorTests`).
///
/// Bonawitz et al. state the active-security condition as t > 2n/3 with fewer than n/3 corrupt
/// clients on the complete graph; 2t − n − 1 ≥ ⌈n/3⌉ − 1 at t = ⌊2n/3⌋ + 1 is that condition in this
/// form (`CollusionResistanceTests`).
public enum CollusionResistance {
    /// Colluders per closed neighbourhood withstood: 2t − m − 1 over the largest neighbourhood m
    /// (0 or less: none).
    public static func withstood(cohortSize n: Int, graph: NeighbourGraph, threshold t: Int) -> Int {
        let (_, largest, _) = DropoutTolerance.neighbourhoods(cohortSize: n, graph: graph)
        return max(0, 2 * t - largest - 1)
    }

    /// The least this project plans a round with: a twentieth of the largest neighbourhood, rounded up,
    /// and at least 1. The default threshold ⌊2m/3⌋ + 1 withstands about m/3 and always passes; a
    /// threshold lowered for dropouts must keep 2t ≥ m + 1 + ⌈m/10⌉.
    public static func minimum(neighbourhoodSize m: Int) -> Int { max(1, (m + 19) / 20) }

    /// The smallest threshold that meets the minimum for a largest neighbourhood of m.
    public static func minimumThreshold(neighbourhoodSize m: Int) -> Int {
        (m + 1 + minimum(neighbourhoodSize: m) + 1) / 2
    }

    /// Refuses a graph and threshold that withstand fewer colluders than the minimum.
    /// - Throws: `SecureAggregationError.collusionResistanceTooLow`, naming the graph, t and the fix.
    public static func require(cohortSize n: Int, graph: NeighbourGraph, threshold t: Int) throws {
        let (_, largest, _) = DropoutTolerance.neighbourhoods(cohortSize: n, graph: graph)
        let have = withstood(cohortSize: n, graph: graph, threshold: t), need = minimum(neighbourhoodSize: largest)
        guard have >= need else {
            throw SecureAggregationError.collusionResistanceTooLow(
                withstood: have, minimum: need,
                detail: "a \(graph) over \(n) clients with threshold \(t) of neighbourhoods up to \(largest); "
                    + "raise the threshold to at least \(minimumThreshold(neighbourhoodSize: largest)) (a lower dropout_tolerance), "
                    + "or a larger neighbour_degree")
        }
    }
}
