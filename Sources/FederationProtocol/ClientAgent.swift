import Foundation
import Privacy
import SecureAggregation
import SecureCrypto
import Wire

/// The client's side of the protocol as a state machine without I/O (swift-nio style): it takes
/// the coordinator's frames and the driver's results, makes every protocol decision (the policy's
/// objection, the secure session's acceptance, the charge before training, the budget refusal, the
/// upload or the masking stages), and returns actions. The driver only carries them out: it
/// prepares and trains on the model, charges the ledger, writes adapters and sends frames, then
/// feeds back what came of it (`prepared`, `ledgerAnswered`, `trainingFinished`, ...).
///
/// A round, as the agent sees it: invitation and global adapter arrive (`receivingInvite`) →
/// `.prepare` (`preparing`) → `.charge` (`charging`) → accept and `.train` (`training`) → `.upload`,
/// or for a secure round the key advertisement, then the masking stages (`awaitingResult`) → the
/// result, and with a commit the new global adapter (`receivingResult`) → `idle`. A decline at any
/// decision returns it to `idle`.
public struct ClientAgent: Sendable {
    public enum Action: Sendable {
        /// Send these frames to the coordinator, in order.
        case send([Frame])
        /// A line for the operator's log.
        case log(String)
        /// Decline `round`: send `Decline` with `code` alone, and write `detail` (the client's own words,
        /// which may quote its data) to its own log only. The round is over for this client.
        case decline(round: UInt64, code: DeclineCode, detail: String)
        /// Keep `global` as the latest global adapter, load the data and build the trainer for `plan`
        /// from it; answer with `prepared` or `preparationFailed`.
        case prepare(round: UInt64, plan: TrainingPlan, global: AdapterTensors)
        /// Charge the ledger before the first noisy gradient
        /// (`PrivacyLedger.chargeBeforeTraining`); answer with `ledgerAnswered`.
        case charge(round: UInt64, ChargeRequest)
        /// Train, evaluate before and after, keep the local adapter; answer with `trainingFinished`.
        case train(round: UInt64)
        /// Send the plain update (local − global) and its metrics.
        case upload(round: UInt64, update: AdapterTensors, metrics: ClientRoundMetrics)
        /// The round committed: keep `global` (of `plan`'s layout) as the latest global adapter.
        case keepCommitted(round: UInt64, plan: TrainingPlan, global: AdapterTensors)
        /// The round is over for this client without a new adapter (aborted, dropped, superseded).
        case roundOver(round: UInt64, reason: String)
    }

    /// An invitation whose global adapter is arriving.
    public struct Invitation: Sendable {
        public let invite: Invite
        public let layout: AdapterLayout
        /// A secure round's setup, which follows the invitation.
        public fileprivate(set) var setup: SecureRoundSetup?
        fileprivate var receiver: TensorSetReceiver
    }

    /// A round this client has decided to work on.
    public struct RoundWork: Sendable {
        public let invite: Invite
        public let layout: AdapterLayout
        /// A secure round's setup and this client's masking protocol (keys not advertised yet).
        fileprivate let masking: (setup: SecureRoundSetup, protocolState: SecureAggregationClient)?
        /// A distributed-DP round's parameters and this round's ε under the client's trust and trusting no one.
        fileprivate let distributed: DistributedWork?
        public var round: UInt64 { invite.round }
    }

    /// What a distributed-DP round's client computes from the plan, the setup and its policy before it charges.
    fileprivate struct DistributedWork: Sendable {
        let parameters: DistributedRound
        let trust: DistributedTrustFigures
    }

    /// A secure round between this client's key advertisement and the unmask stage.
    public struct SecureParticipation: Sendable {
        fileprivate var protocolState: SecureAggregationClient
        /// The encoded update, until it is masked.
        fileprivate var input: [UInt32]
        /// Sent in clear with the masked input.
        fileprivate let metrics: ClientRoundMetrics
    }

    /// A committed round whose new global adapter is arriving.
    public struct CommittedTransfer: Sendable {
        public let result: RoundResult
        public let plan: TrainingPlan
        fileprivate var receiver: TensorSetReceiver
    }

    public enum State: Sendable, CustomStringConvertible {
        /// Connected, waiting for an invitation.
        case idle
        /// Invited to a round; the global adapter is arriving.
        case receivingInvite(Invitation)
        /// The driver is loading the data and building the trainer.
        case preparing(RoundWork)
        /// The driver is charging the ledger for the prepared round (its records, whether it scores conditions).
        case charging(RoundWork, RoundPreparation)
        /// Accepted and charged; the driver is training.
        case training(RoundWork, RoundPreparation, receipt: PrivacyReceipt)
        /// Update sent (or keys advertised, with the secure stages still to answer); waiting for how
        /// the round ended.
        case awaitingResult(round: UInt64, participation: SecureParticipation?)
        /// The round committed; the new global adapter is arriving.
        case receivingResult(CommittedTransfer)

        public var description: String {
            switch self {
            case .idle: return "idle"
            case let .receivingInvite(invitation): return "receivingInvite(\(invitation.invite.round))"
            case let .preparing(work): return "preparing(\(work.round))"
            case let .charging(work, _): return "charging(\(work.round))"
            case let .training(work, _, _): return "training(\(work.round))"
            case let .awaitingResult(round, participation):
                return "awaitingResult(\(round)\(participation == nil ? "" : ", masking"))"
            case let .receivingResult(transfer): return "receivingResult(\(transfer.result.round))"
            }
        }
    }

    public private(set) var state: State = .idle
    /// Rounds that have ended for this client: declined, committed, or over otherwise.
    public private(set) var roundsEnded = 0
    /// The client's name in the federation (its certificate's).
    public let name: String
    public let policy: ClientPolicy
    /// Signs this client's per-round secure-aggregation keys.
    private let identity: SigningKeyPair
    private let layoutFor: @Sendable (TrainingPlan) throws -> AdapterLayout
    /// The latest invitation's plan and layout, which a committed adapter is read and kept with
    /// (it also reaches clients that dropped out of the round).
    private var latestPlan: (plan: TrainingPlan, layout: AdapterLayout)?

    /// - Parameters:
    ///   - identity: the key this client's secure-aggregation keys are signed with (`signing.key`).
    ///   - layoutFor: the adapter layout of a plan on this client's model.
    public init(name: String, policy: ClientPolicy, identity: SigningKeyPair,
                layoutFor: @escaping @Sendable (TrainingPlan) throws -> AdapterLayout) {
        self.name = name
        self.policy = policy
        self.identity = identity
        self.layoutFor = layoutFor
    }

    /// The round this client is working on or waiting to hear about (0 for none), for `Hello`.
    public var pendingRound: UInt64 {
        switch state {
        case .idle, .receivingInvite: return 0
        case let .preparing(work), let .charging(work, _), let .training(work, _, _): return work.round
        case let .awaitingResult(round, _): return round
        case let .receivingResult(transfer): return transfer.result.round
        }
    }

    // MARK: Events from the coordinator

    /// Handles one frame from the coordinator.
    public mutating func receive(_ frame: Frame) throws -> [Action] {
        switch frame.type {
        case .invite:
            return try invited(Invite(frame: frame))
        case .secureSetup:
            try setupArrived(SecureRoundSetup(frame: frame))
            return []
        case .secureAdvertisements:
            let message = try SecureAdvertisements(frame: frame)
            return try secureStage(message.round, .advertisements(message))
        case .secureShareBundle:
            let message = try SecureShareBundle(frame: frame)
            return try secureStage(message.round, .shares(message))
        case .secureConsistencyRequest:
            let message = try SecureConsistencyRequest(frame: frame)
            return try secureStage(message.round, .consistency(message))
        case .secureUnmaskRequest:
            let message = try SecureUnmaskRequest(frame: frame)
            return try secureStage(message.round, .unmask(message))
        case .tensorChunk:
            try addChunk(TensorChunk(frame: frame))
            return []
        case .tensorsDone:
            return try tensorsDone(TensorsDone(frame: frame))
        case .roundResult:
            return try roundResult(RoundResult(frame: frame))
        case .abort:
            let message = try Abort(frame: frame)
            if case .awaitingResult(message.round, _) = state { state = .idle }
            return roundOver(message.round, reason: message.reason)
        default:
            throw FederationError.peer("coordinator", "unexpected \(frame.type) message")
        }
    }

    /// The connection was lost: an invitation half received is forgotten; a round worked on stays
    /// pending so that the coordinator can say how it ended.
    public mutating func connectionLost() {
        switch state {
        case .receivingInvite:
            state = .idle
        case let .preparing(work), let .charging(work, _), let .training(work, _, _):
            state = .awaitingResult(round: work.round, participation: nil)
        case let .receivingResult(transfer):
            state = .awaitingResult(round: transfer.result.round, participation: nil)
        case .idle, .awaitingResult:
            break
        }
    }

    // MARK: Events from the driver

    /// The driver prepared the round: what its DP-SGD run spends, on how many records. A run without
    /// differential privacy (which only a policy with `require_privacy: false` lets this far) is charged
    /// too, as a run without noise: the ledger records it as ε = +∞ (issue 13: it recorded nothing).
    public mutating func prepared(round: UInt64, _ preparation: RoundPreparation) -> [Action] {
        guard case let .preparing(work) = state, work.round == round else {
            preconditionFailure("round \(round) prepared while \(state)")
        }
        state = .charging(work, preparation)
        let plan = work.invite.plan
        // The held-out loss release is charged in the rounds that ask for it; the condition accuracy release only by a
        // client that makes it (held-out records with a condition).
        let releases = (plan.asksHeldOutRelease ? [MetricsRelease.mechanism(plan: plan)] : [])
            + (preparation.scoresConditions ? [MetricsRelease.accuracyMechanism(plan: plan)] : [])
        if let distributed = work.distributed {
            // One DP-SGD step whose noise the cohort shares: charged for the ε under the client's own trust. A
            // client-level round is charged the same way at q = 1 (the client knows it was sampled), at the ledger's
            // unit: the guarantee on a whole client covers each of its records and users.
            let detail = String(format: "%@ DP per %@: assume_honest %d of a cohort of %d (threshold %d); this round ε %.4f "
                                + "under it, %.4f trusting no one, at δ %g", plan.isClientLevel ? "client-level" : "distributed",
                                plan.privacyUnit.rawValue, distributed.trust.assumeHonest,
                                distributed.parameters.trust.cohort, distributed.parameters.trust.threshold,
                                distributed.trust.roundEpsilon, distributed.trust.roundEpsilonTrustingNoOne, plan.delta)
            return [.charge(round: round, ChargeRequest(mechanism: distributed.parameters.ledgerMechanism, clipNorm: plan.clipNorm,
                                                        ceiling: policy.maxEpsilon,
                                                        unit: plan.isClientLevel ? policy.privacyUnit : plan.privacyUnit,
                                                        releases: releases, purposeDetail: detail,
                                                        trustingNoOne: distributed.parameters.ledgerMechanismTrustingNoOne))]
        }
        // A run without privacy is ε = ∞ at any unit: it is charged at the policy's, which is its ledger's.
        let request = preparation.mechanism.map {
            ChargeRequest(mechanism: $0, clipNorm: plan.clipNorm, ceiling: policy.maxEpsilon, unit: plan.privacyUnit,
                          releases: releases)
        } ?? ChargeRequest(mechanism: .nonPrivate(samplingRate: plan.samplingRate, steps: plan.steps), clipNorm: 0,
                           ceiling: policy.maxEpsilon, unit: policy.privacyUnit, releases: releases)
        return [.charge(round: round, request)]
    }

    /// The driver could not prepare the round (its data, or a plan the trainer refuses): decline.
    public mutating func preparationFailed(round: UInt64, _ failure: PreparationFailure) -> [Action] {
        guard case let .preparing(work) = state, work.round == round else {
            preconditionFailure("round \(round) failed to prepare while \(state)")
        }
        return decline(round, failure.code, failure.description)
    }

    /// The ledger's answer: accept and train, or decline for the budget.
    public mutating func ledgerAnswered(round: UInt64, _ charge: PrivacyCharge) throws -> [Action] {
        guard case let .charging(work, preparation) = state, work.round == round else {
            preconditionFailure("round \(round) charged while \(state)")
        }
        if case .refused = charge, let distributed = work.distributed {
            return decline(round, .distributedTrust, String(
                format: "privacy budget under distributed DP: trusting %d of the cohort of %d honest (assume_honest), this round "
                    + "costs ε %.3f (%.3f trusting no one) and would pass the budget: %@", distributed.trust.assumeHonest,
                distributed.parameters.trust.cohort, distributed.trust.roundEpsilon, distributed.trust.roundEpsilonTrustingNoOne,
                "\(charge)"))
        }
        switch charge {
        case let .refused(.overCeiling(projected, ceiling, spent)):
            return decline(round, .privacyBudget, String(format: "privacy budget: this round would bring ε to %.3f, over the "
                                                         + "policy's %.3f (%.3f spent)", projected, ceiling, spent))
        case let .refused(.overBudget(refusal)):
            return decline(round, .privacyBudget, "privacy budget: \(refusal)")
        case let .charged(receipt):
            state = .training(work, preparation, receipt: receipt)
            let examples = preparation.examples
            let plan = work.invite.plan
            if let distributed = work.distributed, plan.isClientLevel {
                let line = String(format: "round %llu: accepted a client-level round (%d local steps without noise on %d records, "
                                  + "the update clipped to S %.4g, share σ %.4g on 2^-%d); trusting %d of %d honest: this round ε "
                                  + "%.3f at q 1 (%.3f trusting no one), ε after %.3f at δ %g", round, plan.steps, examples,
                                  plan.clipNorm, distributed.parameters.shareSigma, distributed.parameters.fractionalBits,
                                  distributed.trust.assumeHonest, distributed.parameters.trust.cohort, distributed.trust.roundEpsilon,
                                  distributed.trust.roundEpsilonTrustingNoOne, receipt.epsilon, receipt.budget.delta)
                    + (plan.countNoiseMultiplier.map {
                        String(format: "; adaptive clipping: the bit ‖update‖ ≤ S goes in the noised sum too (σ_b %g, in the ε above)", $0)
                    } ?? "")
                return [.send([try Accept(round: round).frame()]), .log(line), .train(round: round)]
            }
            if let distributed = work.distributed {
                let line = String(format: "round %llu: accepted one distributed DP-SGD step (%d records, q %.4f, z %.3f, C %.2f, "
                                  + "share σ %.4g on 2^-%d); trusting %d of %d honest: this round ε %.3f (%.3f trusting no one), "
                                  + "ε after %.3f at δ %g", round, examples, plan.samplingRate, plan.noiseMultiplier, plan.clipNorm,
                                  distributed.parameters.shareSigma, distributed.parameters.fractionalBits,
                                  distributed.trust.assumeHonest, distributed.parameters.trust.cohort, distributed.trust.roundEpsilon,
                                  distributed.trust.roundEpsilonTrustingNoOne, receipt.epsilon, receipt.budget.delta)
                return [.send([try Accept(round: round).frame()]), .log(line), .train(round: round)]
            }
            let line = plan.isPrivate
                ? String(format: "round %llu: accepted; %d records, q %.4f, σ %.3f, C %.2f, %d steps; ε after %.3f at δ %g",
                         round, examples, plan.samplingRate, plan.noiseMultiplier, plan.clipNorm, plan.steps,
                         receipt.epsilon, receipt.budget.delta)
                : String(format: "round %llu: accepted WITHOUT differential privacy (the policy allows it); %d records, "
                         + "%d steps; recorded in the ledger as ε = ∞: every later private round will be refused",
                         round, examples, plan.steps)
            return [.send([try Accept(round: round).frame()]), .log(line), .train(round: round)]
        }
    }

    /// The driver trained: upload the update, or for a secure round encode it and advertise keys.
    public mutating func trainingFinished(round: UInt64, _ report: TrainingReport) throws -> [Action] {
        guard case let .training(work, preparation, receipt) = state, work.round == round else {
            preconditionFailure("round \(round) trained while \(state)")
        }
        // What was not charged is never sent.
        precondition(report.conditionAccuracy == nil || preparation.scoresConditions,
                     "round \(round): a condition accuracy release the ledger was not charged for")
        precondition((report.heldOut != nil) == work.invite.plan.asksHeldOutRelease,
                     "round \(round): a held-out release \(report.heldOut == nil ? "missing" : "the ledger was not charged for")")
        // Only the release and ledger figures go up; the exact losses, count and timing stay in this log.
        let metrics = ClientRoundMetrics(client: name, epsilon: receipt.epsilon, delta: receipt.budget.delta,
                                         epsilonBudget: min(receipt.budget.epsilon, policy.maxEpsilon),
                                         heldOut: report.heldOut, canaryExposure: report.canaryExposure,
                                         trust: work.distributed.map {
                                             var trust = $0.trust
                                             trust.epsilonTrustingNoOne = receipt.epsilonTrustingNoOne
                                             return trust
                                         }, conditionAccuracy: report.conditionAccuracy)
        guard let masking = work.masking else {
            state = .awaitingResult(round: round, participation: nil)
            return [.upload(round: round, update: report.update, metrics: metrics),
                    .log(String(format: "round %llu: update sent; %@train loss %.4f, %.0f s", round,
                                report.evalLoss.map { String(format: "held-out loss %.4f → %.4f, ", $0.before, $0.after) } ?? "",
                                report.trainLoss, report.seconds))]
        }
        var actions: [Action] = []
        let encoded: (words: [UInt32], clipped: Int)
        if let distributed = work.distributed, work.invite.plan.isClientLevel {
            // The whole update clipped to S, on the grid with this client's share of the noise (libsodium).
            let client = try SecureUpdate.encodeClientLevel(update: report.update, parameters: distributed.parameters,
                                                            plan: work.invite.plan, setup: masking.setup, layout: work.layout)
            encoded = (client.words, 0)
            actions.append(.log(String(format: "round %llu: the round update's L2 norm %.6g, clipped to S %.6g (this log only)",
                                       round, client.norm, work.invite.plan.clipNorm)))
        } else if let distributed = work.distributed {
            // The clipped sum, rounded onto the grid with this client's share of the noise (libsodium).
            encoded = (try SecureUpdate.encodeDistributed(clippedSum: report.update, parameters: distributed.parameters,
                                                          setup: masking.setup, layout: work.layout), 0)
        } else {
            encoded = try SecureUpdate.encode(delta: report.update, setup: masking.setup, layout: work.layout)
        }
        if encoded.clipped > 0 {
            actions.append(.log("round \(round): \(encoded.clipped) weighted update values exceeded ±\(masking.setup.updateClip) "
                                + "and were clipped"))
        }
        var protocolState = masking.protocolState
        let advertisement = try protocolState.advertiseKeys()
        state = .awaitingResult(round: round, participation: SecureParticipation(protocolState: protocolState,
                                                                                 input: encoded.words, metrics: metrics))
        return actions + [
            .send([try SecureAdvertise(round: round, advertisement: advertisement).frame()]),
            .log(String(format: "round %llu: trained (%@%.0f s); secure aggregation: keys advertised", round,
                        report.evalLoss.map { String(format: "held-out loss %.4f → %.4f, ", $0.before, $0.after) } ?? "",
                        report.seconds)),
        ]
    }

    // MARK: Internals

    private mutating func invited(_ invite: Invite) throws -> [Action] {
        let previous: UInt64?
        switch state {
        case .idle: previous = nil
        case let .awaitingResult(round, _): previous = round
        default: throw FederationError.round(invite.round, "invitation while \(state)")
        }
        let layout = try layoutFor(invite.plan)
        latestPlan = (invite.plan, layout)
        state = .receivingInvite(Invitation(invite: invite, layout: layout, setup: nil,
                                            receiver: TensorSetReceiver(round: invite.round, kind: .globalAdapter, layout: layout)))
        // A new invitation also means the previous round is over for this client.
        guard let previous else { return [] }
        return roundOver(previous, reason: "a new round started")
    }

    private mutating func setupArrived(_ setup: SecureRoundSetup) throws {
        guard case var .receivingInvite(invitation) = state, invitation.invite.round == setup.round,
              invitation.invite.secureAggregation, invitation.setup == nil else {
            throw FederationError.round(setup.round, "secure-aggregation setup while \(state)")
        }
        invitation.setup = setup
        state = .receivingInvite(invitation)
    }

    private mutating func addChunk(_ chunk: TensorChunk) throws {
        switch state {
        case var .receivingInvite(invitation):
            state = .idle  // release the stored copy, so the receiver's buffers grow in place
            defer { state = .receivingInvite(invitation) }
            try invitation.receiver.add(chunk)
        case var .receivingResult(transfer):
            state = .idle
            defer { state = .receivingResult(transfer) }
            try transfer.receiver.add(chunk)
        default:
            throw FederationError.round(chunk.round, "tensor chunk outside a transfer")
        }
    }

    private mutating func tensorsDone(_ done: TensorsDone) throws -> [Action] {
        switch state {
        case let .receivingInvite(invitation):
            let global = try invitation.receiver.finish(done)
            guard constantTimeDigestEqual(invitation.invite.adapterSHA256, done.sha256) else {
                throw FederationError.round(done.round, "the global adapter's digest does not match the invitation")
            }
            guard !invitation.invite.secureAggregation || invitation.setup != nil else {
                throw FederationError.round(done.round, "a secure-aggregation invitation without its setup")
            }
            return decide(invitation, global: global)
        case let .receivingResult(transfer):
            let global = try transfer.receiver.finish(done)
            guard constantTimeDigestEqual(transfer.result.adapterSHA256, done.sha256) else {
                throw FederationError.round(done.round, "the new global adapter's digest does not match the result")
            }
            state = .idle
            roundsEnded += 1
            return [.keepCommitted(round: transfer.result.round, plan: transfer.plan, global: global)]
        default:
            throw FederationError.round(done.round, "end of tensors outside a transfer")
        }
    }

    /// The invitation is complete: decline it on the policy or on the secure session, else prepare.
    private mutating func decide(_ invitation: Invitation, global: AdapterTensors) -> [Action] {
        let invite = invitation.invite
        if let objection = policy.objection(to: invite.plan, secureAggregation: invitation.setup != nil) {
            return decline(invite.round, .policy, objection)
        }
        // A secure round's session is checked before anything is charged: this client must be in the
        // cohort under its own key, and the announced adapter must be the one it received.
        var masking: (setup: SecureRoundSetup, protocolState: SecureAggregationClient)?
        if let setup = invitation.setup {
            guard let id = setup.id(of: name) else {
                return decline(invite.round, .secureAggregation, "secure aggregation: this client is not in the announced cohort")
            }
            do {
                // A coordinator announcing a threshold that withstands too few colluders is refused here,
                // before anything is charged (it would need few helpers to unmask this client).
                try CollusionResistance.require(cohortSize: setup.members.count, graph: setup.graph, threshold: Int(setup.threshold))
                masking = (setup, try SecureAggregationClient(session: try setup.session(invite: invite), id: id,
                                                              identity: identity,
                                                              localAdapterHash: Array(AdapterMath.digest(global).utf8)))
            } catch {
                return decline(invite.round, .secureAggregation, "secure aggregation: \(error)")
            }
        }
        var distributed: DistributedWork?
        if let setup = invitation.setup, invite.plan.isDistributed {
            do {
                distributed = try Self.distributedWork(plan: invite.plan, setup: setup, assumeHonest: policy.assumeHonest)
            } catch {
                return decline(invite.round, .cannotTrainOnThisPlan, "distributed DP: \(error)")
            }
        }
        state = .preparing(RoundWork(invite: invite, layout: invitation.layout, masking: masking, distributed: distributed))
        return [.prepare(round: invite.round, plan: invite.plan, global: global)]
    }

    /// The round's integer-domain parameters (the coordinator computes the same scale) and its ε both ways.
    private static func distributedWork(plan: TrainingPlan, setup: SecureRoundSetup, assumeHonest: Int) throws -> DistributedWork {
        let parameters = try SecureUpdate.distributedParameters(plan: plan, setup: setup, assumeHonest: assumeHonest)
        let epsilons = try parameters.epsilons(delta: plan.delta)
        return DistributedWork(parameters: parameters, trust: DistributedTrustFigures(
            assumeHonest: parameters.trust.assumeHonest, roundEpsilon: epsilons.assumed, roundEpsilonTrustingNoOne: epsilons.trustingNoOne))
    }

    private mutating func decline(_ round: UInt64, _ code: DeclineCode, _ detail: String) -> [Action] {
        state = .idle
        roundsEnded += 1
        return [.decline(round: round, code: code, detail: detail)]
    }

    private mutating func roundOver(_ round: UInt64, reason: String) -> [Action] {
        roundsEnded += 1
        return [.roundOver(round: round, reason: reason)]
    }

    private mutating func roundResult(_ message: RoundResult) throws -> [Action] {
        guard message.committed else {
            if case .awaitingResult(message.round, _) = state { state = .idle }
            return roundOver(message.round, reason: message.reason)
        }
        guard let latestPlan else { throw FederationError.round(message.round, "a committed result before any invitation") }
        state = .receivingResult(CommittedTransfer(
            result: message, plan: latestPlan.plan,
            receiver: TensorSetReceiver(round: message.round, kind: .globalAdapter, layout: latestPlan.layout)))
        return []
    }

    /// Answers one secure-aggregation stage of the round this client masks for (a message for any
    /// other round is stale). A refusal (bad signature, wrong session, an unmask request that would
    /// expose a peer) ends this client's part in the round, with the reason sent.
    private mutating func secureStage(_ round: UInt64, _ message: SecureDownlink) throws -> [Action] {
        guard case .awaitingResult(round, let current) = state else { return [] }
        guard var participation = current else {
            return [.log("round \(round): ignored a secure-aggregation message for a round this client is not masking for")]
        }
        state = .awaitingResult(round: round, participation: nil)  // release the stored copy
        do {
            let (frames, line) = try participation.answer(message, round: round)
            state = .awaitingResult(round: round, participation: participation)
            return [.log(line), .send(frames)]
        } catch let error as SecureAggregationError {
            // The coordinator hears the code alone; the refusal's words stay in this client's log.
            return [.log("round \(round): secure aggregation: \(ClientLogText.escaped("\(error)")); leaving the round"),
                    .send([try Abort(round: round, code: .secureAggregation).frame()])]
        } catch {
            state = .awaitingResult(round: round, participation: participation)
            throw error
        }
    }
}

extension ClientAgent.SecureParticipation {
    /// This client's answer to one stage, and the line that says what it sent.
    fileprivate mutating func answer(_ message: SecureDownlink, round: UInt64) throws -> (frames: [Frame], log: String) {
        switch message {
        case let .advertisements(message):
            let shares = try protocolState.shareKeys(message.broadcast)
            return ([try SecureShares(round: round, message: shares).frame()],
                    "round \(round): secure aggregation: \(shares.shares.count) encrypted shares sent")
        case let .shares(message):
            let masked = try protocolState.maskInput(message.bundle, input: input)
            input = []
            return ([try SecureMaskedInput(round: round, input: masked).frame(),
                     try MetricsReport(round: round, metrics: metrics).frame()],
                    "round \(round): secure aggregation: masked update sent (\(masked.words.count) words) with the DP-released metrics")
        case let .consistency(message):
            let signature = try protocolState.signSurvivors(message.request)
            return ([try SecureConsistencySignature(round: round, signature: signature).frame()],
                    "round \(round): secure aggregation: survivor set of \(message.request.survivors.count) signed")
        case let .unmask(message):
            let response = try protocolState.unmask(message.request)
            return ([try SecureUnmaskResponse(round: round, response: response).frame()],
                    "round \(round): secure aggregation: \(response.shares.count) shares revealed for unmasking")
        }
    }
}

// MARK: What the agent and its driver exchange

/// What the driver learned preparing a round.
public struct RoundPreparation: Sendable {
    /// What the round's DP-SGD run spends (nil for a plan without differential privacy, which the agent
    /// charges as a run without noise).
    public var mechanism: MechanismSteps?
    /// Training records, canaries included (for the client's own log; it never travels).
    public var examples: Int
    /// Whether the round releases a condition accuracy (the plan asks for one and the client's held-out records carry
    /// conditions): its mechanism is then charged with the round.
    public var scoresConditions: Bool

    public init(mechanism: MechanismSteps?, examples: Int, scoresConditions: Bool = false) {
        self.mechanism = mechanism
        self.examples = examples
        self.scoresConditions = scoresConditions
    }
}

/// Why the driver could not prepare a round; the client declines it with this as the reason.
public enum PreparationFailure: Error, Sendable, CustomStringConvertible {
    /// The client's training or held-out data could not be loaded.
    case data(String)
    /// The trainer refused the plan on this client's model and data.
    case trainer(String)

    public var description: String {
        switch self {
        case let .data(message): return "data: \(message)"
        case let .trainer(message): return "cannot train on this plan: \(message)"
        }
    }

    /// What the coordinator hears of it.
    public var code: DeclineCode {
        switch self {
        case .data: return .data
        case .trainer: return .cannotTrainOnThisPlan
        }
    }
}

/// The charge the agent asks of the ledger before training.
public struct ChargeRequest: Sendable, Equatable {
    /// What the run spends; `MechanismSteps.nonPrivate` (clip norm 0) for a plan without differential
    /// privacy, recorded as ε = +∞.
    public var mechanism: MechanismSteps
    public var clipNorm: Double
    /// The policy's ε: a charge with noise that would pass it is refused, even within the ledger's budget.
    public var ceiling: Double
    /// Whom the run's ε protects (the plan's privacy unit), charged as such.
    public var unit: PrivacyUnit
    /// What the round releases besides the update (the held-out metrics, `MetricsRelease`), charged
    /// in the same write as the training.
    public var releases: [MechanismSteps]
    /// What the ledger entry's purpose adds to the round's name: a distributed round's unit, the trust the
    /// client assumed and this round's ε under it and trusting no one (nil for a local round).
    public var purposeDetail: String?
    /// A distributed round's mechanism with the client's own share only, kept in the ledger entry for the
    /// cumulative ε trusting no one (`PrivacyLedger.epsilonTrustingNoOne`); nil for a local round.
    public var trustingNoOne: MechanismSteps?

    public init(mechanism: MechanismSteps, clipNorm: Double, ceiling: Double, unit: PrivacyUnit = .record,
                releases: [MechanismSteps] = [], purposeDetail: String? = nil, trustingNoOne: MechanismSteps? = nil) {
        self.purposeDetail = purposeDetail
        self.trustingNoOne = trustingNoOne
        self.mechanism = mechanism
        self.clipNorm = clipNorm
        self.ceiling = ceiling
        self.unit = unit
        self.releases = releases
    }
}

/// What the driver measured training a round. Only `update`, `heldOut` and `canaryExposure` leave the
/// client; the exact figures are for its own log.
public struct TrainingReport: Sendable {
    /// The change to the global adapter: local − global.
    public var update: AdapterTensors
    /// The held-out figures as released (noised; charged with the training), nil when the round asks for none.
    public var heldOut: HeldOutRelease?
    /// The condition accuracy as released (noised; charged with the training), nil when the round scores none.
    public var conditionAccuracy: ConditionAccuracyRelease?
    /// Held-out loss of the global adapter as received, and of the trained one (exact: the client's log only), nil
    /// when the round asks for no held-out release (the client does not score its held-out records then).
    public var evalLoss: (before: Double, after: Double)?
    public var evalTokens: Int
    public var trainLoss: Double
    /// Seconds spent training and evaluating.
    public var seconds: Double
    public var canaryExposure: CanaryExposureSummary?

    public init(update: AdapterTensors, heldOut: HeldOutRelease?, evalLoss: (before: Double, after: Double)?,
                evalTokens: Int, trainLoss: Double, seconds: Double, canaryExposure: CanaryExposureSummary? = nil,
                conditionAccuracy: ConditionAccuracyRelease? = nil) {
        self.conditionAccuracy = conditionAccuracy
        self.update = update
        self.heldOut = heldOut
        self.evalLoss = evalLoss
        self.evalTokens = evalTokens
        self.trainLoss = trainLoss
        self.seconds = seconds
        self.canaryExposure = canaryExposure
    }
}

private func constantTimeDigestEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<x.count { difference |= x[i] ^ y[i] }
    return difference == 0
}
