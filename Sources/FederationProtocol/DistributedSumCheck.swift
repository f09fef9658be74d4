import Foundation
import Privacy
import SecureAggregation
import Wire

extension SecureUpdate {
    /// The chance that the range check refuses the sum of clients who all followed the plan (and contributed
    /// at most `max_contributions` clipped vectors): 10⁻⁹ a round.
    public static let sumCheckFailureProbability = 1e-9

    /// The range check on a distributed round's unmasked sum: its L2 norm (words read as signed 32-bit
    /// integers, the participation word left out) against `DistributedRound.sumNormBound` for the survivors.
    /// - Returns: the norm and the bound, in grid units, for the log.
    /// - Throws: `FederationError.round` naming both when the norm is above the bound: a client sent values
    ///   outside its clip or the sum wrapped; the round is aborted rather than stepped with it.
    @discardableResult
    public static func checkDistributedSum(_ sum: [UInt32], survivors: Int, setup: SecureRoundSetup,
                                           plan: TrainingPlan) throws -> (norm: Double, bound: Double) {
        let parameters = try distributedParameters(plan: plan, setup: setup, assumeHonest: 1)
        guard let contributions = plan.maxContributions else {
            throw FederationError.round(setup.round, "a distributed plan without max_contributions")
        }
        let bound = try parameters.sumNormBound(survivors: survivors, contributions: contributions, clipNorm: plan.clipNorm,
                                                failureProbability: sumCheckFailureProbability)
        let norm = valueNorm(sum)
        guard norm <= bound else {
            throw FederationError.round(setup.round, String(
                format: "range check: the noised sum's L2 norm %.6g (grid units) is above %.6g, the most %d survivors "
                    + "following the plan reach (at most %d clipped contributions of C %g on 2^-%d, plus the noise) except "
                    + "with probability %g: a client sent values outside its clip, or the sum wrapped; not applied",
                norm, bound, survivors, contributions, plan.clipNorm, parameters.fractionalBits, sumCheckFailureProbability))
        }
        return (norm, bound)
    }
}

extension SecureUpdate {
    /// The L2 norm of an unmasked sum's values read as signed 32-bit integers (the participation word left out):
    /// what both range checks (distributed and client-level) compare with their bound.
    static func valueNorm(_ sum: [UInt32]) -> Double {
        var squares = 0.0
        for word in sum.dropLast() {
            let value = Double(Int32(bitPattern: word))
            squares += value * value
        }
        return squares.squareRoot()
    }
}
