import Foundation
import SystemIO
import Wire

/// What a client agrees to, whatever a coordinator's plan asks (the ledger's budget is enforced
/// separately, when the round is charged).
public struct ClientPolicy: Codable, Sendable, Equatable {
    /// The client's privacy budget: the most ε it will ever spend, at `delta`.
    public var maxEpsilon: Double
    public var delta: Double
    /// The most DP-SGD steps it trains in one round.
    public var maxStepsPerRound: Int
    /// Whether it refuses plans without differential privacy.
    public var requirePrivacy: Bool

    public init(maxEpsilon: Double, delta: Double, maxStepsPerRound: Int, requirePrivacy: Bool = true) {
        self.maxEpsilon = maxEpsilon
        self.delta = delta
        self.maxStepsPerRound = maxStepsPerRound
        self.requirePrivacy = requirePrivacy
    }

    enum CodingKeys: String, CodingKey {
        case delta
        case maxEpsilon = "max_epsilon"
        case maxStepsPerRound = "max_steps_per_round"
        case requirePrivacy = "require_privacy"
    }

    /// `require_privacy` may be left out; it defaults to true.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        maxEpsilon = try container.decode(Double.self, forKey: .maxEpsilon)
        delta = try container.decode(Double.self, forKey: .delta)
        maxStepsPerRound = try container.decode(Int.self, forKey: .maxStepsPerRound)
        requirePrivacy = try container.decodeIfPresent(Bool.self, forKey: .requirePrivacy) ?? true
    }

    /// Nil when the plan is acceptable, else the reason to decline it.
    public func objection(to plan: TrainingPlan) -> String? {
        if requirePrivacy && !plan.isPrivate { return "policy: the plan has no differential privacy (noise multiplier 0)" }
        if plan.delta > delta {
            return "policy: the plan's δ \(plan.delta) is larger than this client's δ \(delta)"
        }
        if plan.steps > maxStepsPerRound {
            return "policy: the plan asks \(plan.steps) steps, this client trains at most \(maxStepsPerRound) per round"
        }
        return nil
    }
}

/// The client's side of the protocol as a state machine without I/O: it takes frames from the
/// coordinator and says what to do; the driver trains, charges the ledger and sends.
public struct ClientAgent: Sendable {
    public enum State: Sendable, Equatable {
        /// Connected, waiting for an invitation.
        case idle
        /// Invited to a round; the global adapter is arriving.
        case receivingInvite(UInt64)
        /// Training or uploading for a round.
        case working(UInt64)
        /// Update sent; waiting for how the round ended.
        case awaitingResult(UInt64)
        /// The round committed; the new global adapter is arriving.
        case receivingResult(UInt64)
    }

    public enum Action: Sendable {
        /// Decide on the invitation (policy, ledger), then train on `global` and upload, or decline.
        case invited(Invite, global: AdapterTensors)
        /// The round committed: keep `global` as the latest global adapter.
        case committed(RoundResult, global: AdapterTensors)
        /// The round is over for this client without a new adapter (aborted, or dropped).
        case roundOver(round: UInt64, reason: String)
        /// A secure-aggregation stage message for the round this client uploads to.
        case secure(round: UInt64, SecureDownlink)
    }

    public private(set) var state: State = .idle
    private let layoutFor: @Sendable (TrainingPlan) throws -> AdapterLayout
    private var invite: Invite?
    /// The secure-aggregation setup that came with the current invitation, if any.
    public private(set) var secureSetup: SecureRoundSetup?
    private var result: RoundResult?
    private var receiver: TensorSetReceiver?
    private var lastLayout: AdapterLayout?

    /// `layoutFor` gives the adapter layout of a plan on this client's model.
    public init(layoutFor: @escaping @Sendable (TrainingPlan) throws -> AdapterLayout) {
        self.layoutFor = layoutFor
    }

    /// The round this client is working on or waiting to hear about (0 for none), for `Hello`.
    public var pendingRound: UInt64 {
        switch state {
        case .idle, .receivingInvite: return 0
        case let .working(round), let .awaitingResult(round), let .receivingResult(round): return round
        }
    }

    /// The driver took part (`uploaded`) or declined; the agent moves on.
    public mutating func finishedWork(round: UInt64, uploaded: Bool) {
        state = uploaded ? .awaitingResult(round) : .idle
    }

    /// The connection was lost: an invitation half received is forgotten; a round worked on stays
    /// pending so that the coordinator can say how it ended.
    public mutating func connectionLost() {
        if case .receivingInvite = state { state = .idle }
        if case let .receivingResult(round) = state { state = .awaitingResult(round) }
        // Work cut short by the lost connection: the round stays pending until the coordinator
        // says how it ended.
        if case let .working(round) = state { state = .awaitingResult(round) }
        receiver = nil
    }

    /// Handles one frame from the coordinator.
    public mutating func receive(_ frame: Frame) throws -> [Action] {
        switch frame.type {
        case .invite:
            let message = try Invite(frame: frame)
            switch state {
            case .idle, .awaitingResult:
                // A new invitation also means the previous round is over for this client.
                var actions: [Action] = []
                if case let .awaitingResult(old) = state {
                    actions.append(.roundOver(round: old, reason: "a new round started"))
                }
                let layout = try layoutFor(message.plan)
                lastLayout = layout
                invite = message
                secureSetup = nil
                receiver = TensorSetReceiver(round: message.round, kind: .globalAdapter, layout: layout)
                state = .receivingInvite(message.round)
                return actions
            default:
                throw FederationError.round(message.round, "invitation while \(state)")
            }
        case .secureSetup:
            let setup = try SecureRoundSetup(frame: frame)
            guard case let .receivingInvite(round) = state, round == setup.round, invite?.secureAggregation == true,
                  secureSetup == nil else {
                throw FederationError.round(setup.round, "secure-aggregation setup while \(state)")
            }
            secureSetup = setup
            return []
        case .secureAdvertisements:
            let message = try SecureAdvertisements(frame: frame)
            return secureStage(message.round, .advertisements(message))
        case .secureShareBundle:
            let message = try SecureShareBundle(frame: frame)
            return secureStage(message.round, .shares(message))
        case .secureUnmaskRequest:
            let message = try SecureUnmaskRequest(frame: frame)
            return secureStage(message.round, .unmask(message))
        case .tensorChunk:
            let chunk = try TensorChunk(frame: frame)
            guard receiver != nil else { throw FederationError.round(chunk.round, "tensor chunk outside a transfer") }
            try receiver!.add(chunk)
            return []
        case .tensorsDone:
            let done = try TensorsDone(frame: frame)
            guard let receiver else { throw FederationError.round(done.round, "end of tensors outside a transfer") }
            let tensors = try receiver.finish(done)
            self.receiver = nil
            switch state {
            case let .receivingInvite(round) where round == done.round:
                guard let invite, constantTimeDigestEqual(invite.adapterSHA256, done.sha256) else {
                    throw FederationError.round(done.round, "the global adapter's digest does not match the invitation")
                }
                guard !invite.secureAggregation || secureSetup != nil else {
                    throw FederationError.round(done.round, "a secure-aggregation invitation without its setup")
                }
                state = .working(round)
                return [.invited(invite, global: tensors)]
            case let .receivingResult(round) where round == done.round:
                guard let result, constantTimeDigestEqual(result.adapterSHA256, done.sha256) else {
                    throw FederationError.round(done.round, "the new global adapter's digest does not match the result")
                }
                state = .idle
                return [.committed(result, global: tensors)]
            default:
                throw FederationError.round(done.round, "end of tensors while \(state)")
            }
        case .roundResult:
            let message = try RoundResult(frame: frame)
            if message.committed {
                guard let layout = lastLayout ?? invite.flatMap({ try? layoutFor($0.plan) }) else {
                    throw FederationError.round(message.round, "a committed result before any invitation")
                }
                result = message
                receiver = TensorSetReceiver(round: message.round, kind: .globalAdapter, layout: layout)
                state = .receivingResult(message.round)
                return []
            }
            if case let .awaitingResult(round) = state, round == message.round { state = .idle }
            return [.roundOver(round: message.round, reason: message.reason)]
        case .abort:
            let message = try Abort(frame: frame)
            if pendingRound == message.round, case .awaitingResult = state { state = .idle }
            return [.roundOver(round: message.round, reason: message.reason)]
        default:
            throw FederationError.peer("coordinator", "unexpected \(frame.type) message")
        }
    }

    /// A stage message is for the round this client uploads to; one for any other round is stale.
    private func secureStage(_ round: UInt64, _ message: SecureDownlink) -> [Action] {
        guard case let .awaitingResult(current) = state, current == round else { return [] }
        return [.secure(round: round, message)]
    }
}

private func constantTimeDigestEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<x.count { difference |= x[i] ^ y[i] }
    return difference == 0
}
