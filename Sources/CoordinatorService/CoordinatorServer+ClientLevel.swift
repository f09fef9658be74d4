import Audit
import FederationProtocol
import Foundation
import SystemIO
import Wire

extension CoordinatorServer {
    /// The federation's accountant for a client-level configuration: the rounds its state file says were charged
    /// (none when there is no file), under the configuration's budget and δ; nil for other plans.
    /// - Throws: `SystemIOError` naming the file when it cannot be read or decoded, and the accountant's error
    ///   when the charged rounds already pass the budget.
    static func loadClientLevelState(paths: CoordinatorPaths, policy: RoundPolicy) throws -> ClientLevelAccountantState? {
        guard policy.plan.isClientLevel else { return nil }
        guard let (data, _) = try StateFile.read(paths.clientLevelAccountant, maximumBytes: 1 << 24) else { return nil }
        let state = try StateFile.decode(ClientLevelAccountantState.self, from: data, path: paths.clientLevelAccountant.path)
        do { _ = try state.accountant(policy: policy) } catch {
            throw SystemIOError(path: paths.clientLevelAccountant.path, "the \(state.rounds.count) client-level rounds charged: \(error)")
        }
        return state
    }

    /// Writes the accountant durably (`StateFile.write`: temporary, fsync, rename, fsync of the directory).
    /// - Returns: whether it was written; when not, the round's invitations must not leave.
    func persistClientLevelState(_ state: ClientLevelAccountantState, round: UInt64) -> Bool {
        do {
            try StateFile.write(state, to: paths.clientLevelAccountant)
            return true
        } catch {
            log.write("round \(round): cannot persist the client-level accountant: \(error); no invitation of the round is sent")
            return false
        }
    }

    /// The audit record's client-level part, from the engine's facts.
    /// With adaptive clipping, its parameters, and where a committed round's `step` moved S.
    static func clientLevelRecord(_ facts: ClientLevelRoundFacts, step: AdaptiveClipStep? = nil) -> ClientLevelRecord {
        var record = ClientLevelRecord(population: facts.population, sampled: facts.sampled, samplingRate: facts.samplingRate,
                                       noiseMultiplier: facts.noiseMultiplier, clipNorm: facts.clipNorm,
                                       expectedCohort: facts.expectedCohort, epsilon: facts.epsilon, delta: facts.delta,
                                       epsilonBudget: facts.epsilonBudget, roundsCharged: facts.roundsCharged)
        record.adaptiveClipping = facts.adaptiveClipping.map {
            AdaptiveClippingRecord(targetQuantile: $0.targetQuantile, learningRate: $0.learningRate,
                                   countNoiseMultiplier: $0.countNoiseMultiplier, unclippedFraction: step?.unclippedFraction,
                                   nextClipNorm: step?.nextClipNorm, updateNoiseMultiplier: step?.updateNoiseMultiplier,
                                   countNoise: step?.countNoise)
        }
        return record
    }
}
