import Foundation
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// A message the coordinator sends a client during a secure round.
public enum SecureDownlink: Sendable {
    case advertisements(SecureAdvertisements)
    case shares(SecureShareBundle)
    case unmask(SecureUnmaskRequest)

    /// The message as a frame.
    public func frame() throws -> Frame {
        switch self {
        case let .advertisements(message): return try message.frame()
        case let .shares(message): return try message.frame()
        case let .unmask(message): return try message.frame()
        }
    }
}

/// What a secure round produced: the sum of the survivors' encoded updates, who they were, and
/// their figures (which travel in clear).
public struct SecureRoundResult: Sendable {
    /// The setup the words were encoded under.
    public var setup: SecureRoundSetup
    /// Σ of the survivors' encoded inputs, modulo 2^32: the weighted deltas, then the weight.
    public var sum: [UInt32]
    /// Client ids whose input is in the sum, sorted.
    public var survivors: [String]
    /// Each survivor's metrics, in survivor order.
    public var metrics: [ClientRoundMetrics]
}

/// The coordinator's half of a secure round, without I/O: it drives `SecureAggregationServer`
/// through the four stages (advertise keys, share keys, masked input, unmask), with a deadline per
/// stage, and turns each client message into what to send next. The round engine owns one per
/// secure round and delegates to it; tests drive it directly with dropouts at any stage.
///
/// A stage closes when every client still in the protocol has answered, or at its deadline; clients
/// that missed it are dropped. The first stage's deadline is the round's (clients train first); the
/// later ones are `stageTimeout` after the previous stage closed. Messages are checked against the
/// sending connection's client: a message whose protocol sender is another member's id is refused.
public struct SecureRound: Sendable {
    public enum Stage: String, Sendable {
        case advertising = "advertise_keys"
        case sharing = "share_keys"
        case masking = "masked_input"
        case unmasking = "unmask"
        case finished
        case aborted
    }

    /// What the driver should do.
    public enum Output: Sendable {
        /// Send `message` to `client`.
        case send(client: String, SecureDownlink)
        /// `client` is out of the round (missed a deadline, sent a refused message): record and tell it.
        case drop(client: String, reason: String)
        /// A line for the operator's log.
        case log(String)
        /// The sum is unmasked.
        case completed(SecureRoundResult)
        /// The round cannot complete; nothing about any input was revealed.
        case aborted(String)
    }

    public let invite: Invite
    public let setup: SecureRoundSetup
    public let session: SecureAggregationSession
    public private(set) var stage: Stage = .advertising
    public private(set) var deadline: Date
    private var server: SecureAggregationServer
    private let stageTimeout: TimeInterval
    /// Members expected to answer the current stage.
    private var pending: Set<String>
    /// Members out of the protocol.
    private var out: Set<String> = []
    private var metrics: [String: ClientRoundMetrics] = [:]

    /// A secure round for `invite`'s cohort as listed in `setup`.
    /// - Parameters:
    ///   - firstDeadline: when key advertisements must be in (the round's training deadline).
    ///   - stageTimeout: seconds each later stage gets.
    /// - Throws: `SecureAggregationError.invalidParameters` for a cohort or threshold the session refuses.
    public init(invite: Invite, setup: SecureRoundSetup, firstDeadline: Date, stageTimeout: TimeInterval) throws {
        self.invite = invite
        self.setup = setup
        session = try setup.session(invite: invite)
        server = SecureAggregationServer(session: session)
        deadline = firstDeadline
        self.stageTimeout = stageTimeout
        pending = Set(setup.members.map(\.name))
    }

    /// Whether `client` still takes part (has not dropped and the round is not over).
    public func isLive(_ client: String) -> Bool {
        setup.id(of: client) != nil && !out.contains(client) && stage != .finished && stage != .aborted
    }

    // MARK: Events

    /// `client`'s key advertisement.
    public mutating func advertise(_ client: String, _ message: SecureAdvertise, now: Date) -> [Output] {
        receive(client, at: .advertising, sender: message.advertisement.sender, now: now) {
            try $0.receive(message.advertisement)
        }
    }

    /// `client`'s sealed shares.
    public mutating func shares(_ client: String, _ message: SecureShares, now: Date) -> [Output] {
        receive(client, at: .sharing, sender: message.message.sender, now: now) { try $0.receive(message.message) }
    }

    /// `client`'s masked input and its figures.
    public mutating func maskedInput(_ client: String, _ message: SecureMaskedInput, metrics: ClientRoundMetrics,
                                     now: Date) -> [Output] {
        // Kept before the input is accepted (a refusal removes it), so a stage that closes on this
        // very message already has every survivor's figures.
        if stage == .masking, pending.contains(client), isLive(client) { self.metrics[client] = metrics }
        return receive(client, at: .masking, sender: message.input.sender, now: now) { try $0.receive(message.input) }
    }

    /// `client`'s revealed shares.
    public mutating func unmask(_ client: String, _ message: SecureUnmaskResponse, now: Date) -> [Output] {
        receive(client, at: .unmasking, sender: message.response.sender, now: now) { try $0.receive(message.response) }
    }

    /// `client` left (declined, disconnected, or gave up with a reason): it is expected no more.
    /// Whatever it already contributed stays; the stage may close now.
    public mutating func withdraw(_ client: String, reason: String, now: Date) -> [Output] {
        guard isLive(client) else { return [] }
        out.insert(client)
        pending.remove(client)
        let outputs: [Output]
        if metrics[client] != nil {
            // Its masked input is in the sum already; the others' shares unmask it.
            outputs = [.log("round \(invite.round): '\(client)' left after its masked input: \(reason)")]
        } else {
            outputs = [.drop(client: client, reason: reason)]
        }
        return outputs + closeIfAnswered(now: now)
    }

    /// The clock: closes a stage whose deadline passed, dropping those who did not answer.
    public mutating func tick(now: Date) -> [Output] {
        guard stage != .finished, stage != .aborted, now >= deadline else { return [] }
        var outputs: [Output] = []
        let what: String
        switch stage {
        case .advertising: what = "no key advertisement within the round's \(Int(invite.deadlineSeconds)) s"
        case .sharing: what = "no key shares within \(Int(stageTimeout)) s"
        case .masking: what = "no masked input within \(Int(stageTimeout)) s"
        default: what = "no unmasking shares within \(Int(stageTimeout)) s"
        }
        for client in pending.sorted() {
            out.insert(client)
            outputs.append(stage == .unmasking ? .log("round \(invite.round): survivor '\(client)': \(what)")
                                               : .drop(client: client, reason: what))
        }
        pending = []
        return outputs + advance(now: now)
    }

    // MARK: Internals

    private mutating func receive(_ client: String, at expected: Stage, sender: ParticipantID, now: Date,
                                  _ body: (inout SecureAggregationServer) throws -> Void) -> [Output] {
        guard let id = setup.id(of: client), isLive(client) else {
            return [.log("round \(invite.round): ignored \(expected.rawValue) message from '\(client)': not in the protocol")]
        }
        guard stage == expected, pending.contains(client) else {
            return [.log("round \(invite.round): ignored \(expected.rawValue) message from '\(client)' during \(stage.rawValue)")]
        }
        guard sender == id else {
            return refuse(client, "its \(expected.rawValue) message claims participant \(sender), it is \(id)", now: now)
        }
        do {
            try body(&server)
        } catch {
            return refuse(client, "\(error)", now: now)
        }
        pending.remove(client)
        return closeIfAnswered(now: now)
    }

    private mutating func refuse(_ client: String, _ reason: String, now: Date) -> [Output] {
        pending.remove(client)
        out.insert(client)
        metrics[client] = nil
        return [.drop(client: client, reason: "refused: \(reason)")] + closeIfAnswered(now: now)
    }

    private mutating func closeIfAnswered(now: Date) -> [Output] {
        guard pending.isEmpty, stage != .finished, stage != .aborted else { return [] }
        return advance(now: now)
    }

    /// Closes the current stage and opens the next.
    private mutating func advance(now: Date) -> [Output] {
        let round = invite.round
        func name(_ id: ParticipantID) -> String { setup.name(of: id) ?? "#\(id)" }
        do {
            switch stage {
            case .advertising:
                let broadcasts = try server.finishAdvertising()
                return open(.sharing, now: now, broadcasts.map {
                    (name($0.recipient), .advertisements(SecureAdvertisements(round: round, broadcast: $0)))
                })
            case .sharing:
                let bundles = try server.finishSharing()
                return open(.masking, now: now, bundles.map {
                    (name($0.recipient), .shares(SecureShareBundle(round: round, bundle: $0)))
                })
            case .masking:
                let requests = try server.finishMaskedInput()
                return open(.unmasking, now: now, requests.map {
                    (name($0.recipient), .unmask(SecureUnmaskRequest(round: round, request: $0)))
                })
            case .unmasking:
                let result = try server.finishUnmasking()
                stage = .finished
                let survivors = result.survivors.map(name)
                return [.log("round \(round): secure aggregation unmasked the sum of \(survivors.count) updates "
                             + "(\(result.dropped.count) dropped)"),
                        .completed(SecureRoundResult(setup: setup, sum: result.sum, survivors: survivors,
                                                     metrics: survivors.compactMap { metrics[$0] }))]
            case .finished, .aborted:
                return []
            }
        } catch {
            stage = .aborted
            pending = []
            return [.aborted("secure aggregation: \(error)")]
        }
    }

    private mutating func open(_ next: Stage, now: Date, _ messages: [(String, SecureDownlink)]) -> [Output] {
        stage = next
        deadline = now.addingTimeInterval(stageTimeout)
        // Only those still connected are expected; a recipient that left meanwhile is not waited for.
        let live = messages.filter { !out.contains($0.0) }
        pending = Set(live.map(\.0))
        var outputs: [Output] = [.log("round \(invite.round): secure aggregation stage \(next.rawValue), "
                                      + "\(live.count) clients")]
        outputs += live.map { .send(client: $0.0, $0.1) }
        if pending.isEmpty { outputs += advance(now: now) }
        return outputs
    }
}
