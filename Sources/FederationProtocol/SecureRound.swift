import Foundation
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// A message the coordinator sends a client during a secure round.
public enum SecureDownlink: Sendable {
    case advertisements(SecureAdvertisements)
    case shares(SecureShareBundle)
    case consistency(SecureConsistencyRequest)
    case unmask(SecureUnmaskRequest)

    /// The message as a frame.
    public func frame() throws -> Frame {
        switch self {
        case let .advertisements(message): return try message.frame()
        case let .shares(message): return try message.frame()
        case let .consistency(message): return try message.frame()
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
/// through the five stages (advertise keys, share keys, masked input, consistency check, unmask), with a deadline per
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
        case consistency = "consistency_check"
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

    /// One of the five protocol stages, while it is open.
    private enum OpenStage: Sendable {
        case advertising, sharing, masking, consistency, unmasking

        var stage: Stage {
            switch self {
            case .advertising: return .advertising
            case .sharing: return .sharing
            case .masking: return .masking
            case .consistency: return .consistency
            case .unmasking: return .unmasking
            }
        }
    }

    /// An open stage: who must still answer it, by when, and what the protocol has so far.
    private struct Collecting: Sendable {
        var stage: OpenStage
        var deadline: Date
        var server: SecureAggregationServer
        /// Members expected to answer the current stage.
        var pending: Set<String>
        /// Members out of the protocol.
        var out: Set<String> = []
        /// The figures that came with each masked input.
        var metrics: [String: ClientRoundMetrics] = [:]

        /// Closes the stage on the server: the next stage's messages, or the unmasked sum.
        mutating func close(round: UInt64, setup: SecureRoundSetup) -> Closing {
            func name(_ id: ParticipantID) -> String { setup.name(of: id) ?? "#\(id)" }
            do {
                switch stage {
                case .advertising:
                    let broadcasts = try server.finishAdvertising()
                    return .open(.sharing, broadcasts.map {
                        (name($0.recipient), .advertisements(SecureAdvertisements(round: round, broadcast: $0)))
                    })
                case .sharing:
                    let bundles = try server.finishSharing()
                    return .open(.masking, bundles.map { (name($0.recipient), .shares(SecureShareBundle(round: round, bundle: $0))) })
                case .masking:
                    let requests = try server.finishMaskedInput()
                    return .open(.consistency, requests.map {
                        (name($0.recipient), .consistency(SecureConsistencyRequest(round: round, request: $0)))
                    })
                case .consistency:
                    let requests = try server.finishConsistencyCheck()
                    return .open(.unmasking, requests.map {
                        (name($0.recipient), .unmask(SecureUnmaskRequest(round: round, request: $0)))
                    })
                case .unmasking:
                    let result = try server.finishUnmasking()
                    let survivors = result.survivors.map(name)
                    return .completed(SecureRoundResult(setup: setup, sum: result.sum, survivors: survivors,
                                                        metrics: survivors.compactMap { metrics[$0] }),
                                      dropped: result.dropped.count)
                }
            } catch {
                return .failed(error)
            }
        }
    }

    private enum State: Sendable {
        case collecting(Collecting)
        case finished
        case aborted
    }

    /// What closing a stage led to.
    private enum Closing {
        case open(OpenStage, [(String, SecureDownlink)])
        case completed(SecureRoundResult, dropped: Int)
        case failed(any Error)
    }

    public let invite: Invite
    public let setup: SecureRoundSetup
    public let session: SecureAggregationSession
    private let stageTimeout: TimeInterval
    private var state: State

    /// A secure round for `invite`'s cohort as listed in `setup`.
    /// - Parameters:
    ///   - firstDeadline: when key advertisements must be in (the round's training deadline).
    ///   - stageTimeout: seconds each later stage gets.
    /// - Throws: `SecureAggregationError.invalidParameters` for a cohort or threshold the session refuses.
    public init(invite: Invite, setup: SecureRoundSetup, firstDeadline: Date, stageTimeout: TimeInterval) throws {
        self.invite = invite
        self.setup = setup
        session = try setup.session(invite: invite)
        self.stageTimeout = stageTimeout
        state = .collecting(Collecting(stage: .advertising, deadline: firstDeadline,
                                       server: SecureAggregationServer(session: session),
                                       pending: Set(setup.members.map(\.name))))
    }

    public var stage: Stage {
        switch state {
        case let .collecting(c): return c.stage.stage
        case .finished: return .finished
        case .aborted: return .aborted
        }
    }

    /// When the open stage closes (nil once the round is over).
    public var deadline: Date? {
        if case let .collecting(c) = state { return c.deadline }
        return nil
    }

    /// Whether `client` still takes part (has not dropped and the round is not over).
    public func isLive(_ client: String) -> Bool {
        guard case let .collecting(c) = state else { return false }
        return setup.id(of: client) != nil && !c.out.contains(client)
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
        modifyCollecting { c in
            if c.stage == .masking, c.pending.contains(client) { c.metrics[client] = metrics }
        }
        return receive(client, at: .masking, sender: message.input.sender, now: now) { try $0.receive(message.input) }
    }

    /// `client`'s signature on the survivor set.
    public mutating func consistencySignature(_ client: String, _ message: SecureConsistencySignature, now: Date) -> [Output] {
        receive(client, at: .consistency, sender: message.signature.sender, now: now) { try $0.receive(message.signature) }
    }

    /// `client`'s revealed shares.
    public mutating func unmask(_ client: String, _ message: SecureUnmaskResponse, now: Date) -> [Output] {
        receive(client, at: .unmasking, sender: message.response.sender, now: now) { try $0.receive(message.response) }
    }

    /// `client` left (declined, disconnected, or gave up with a reason): it is expected no more.
    /// Whatever it already contributed stays; the stage may close now.
    public mutating func withdraw(_ client: String, reason: String, now: Date) -> [Output] {
        guard isLive(client) else { return [] }
        let round = invite.round
        let output = modifyCollecting { c -> Output in
            c.out.insert(client)
            c.pending.remove(client)
            // With its masked input in the sum already, the others' shares unmask it.
            return c.metrics[client] != nil ? .log("round \(round): '\(client)' left after its masked input: \(reason)")
                                            : .drop(client: client, reason: reason)
        }
        return [output].compactMap { $0 } + closeIfAnswered(now: now)
    }

    /// The clock: closes a stage whose deadline passed, dropping those who did not answer.
    public mutating func tick(now: Date) -> [Output] {
        guard let deadline, now >= deadline else { return [] }
        let round = invite.round, roundSeconds = Int(invite.deadlineSeconds), stageSeconds = Int(stageTimeout)
        let outputs = modifyCollecting { c -> [Output] in
            let what: String
            switch c.stage {
            case .advertising: what = "no key advertisement within the round's \(roundSeconds) s"
            case .sharing: what = "no key shares within \(stageSeconds) s"
            case .masking: what = "no masked input within \(stageSeconds) s"
            case .consistency: what = "no signature on the survivor set within \(stageSeconds) s"
            case .unmasking: what = "no unmasking shares within \(stageSeconds) s"
            }
            let late = c.pending.sorted()
            c.out.formUnion(late)
            c.pending = []
            // A survivor late to sign or unmask is not dropped: its input is in the sum, the others' shares unmask it.
            let survivorStage = c.stage == .unmasking || c.stage == .consistency
            return late.map { survivorStage ? .log("round \(round): survivor '\($0)': \(what)") : .drop(client: $0, reason: what) }
        } ?? []
        return outputs + advance(now: now)
    }

    // MARK: Internals

    /// Runs `body` on the open stage (nil once the round is over), in place: the stored copy is
    /// released first, so the server's buffers (the masked sum, the revealed shares) are mutated
    /// rather than copied on every message.
    @discardableResult
    private mutating func modifyCollecting<R>(_ body: (inout Collecting) -> R) -> R? {
        guard case var .collecting(c) = state else { return nil }
        state = .aborted
        defer { state = .collecting(c) }
        return body(&c)
    }

    private mutating func receive(_ client: String, at expected: Stage, sender: ParticipantID, now: Date,
                                  _ body: (inout SecureAggregationServer) throws -> Void) -> [Output] {
        let round = invite.round
        guard let id = setup.id(of: client), isLive(client) else {
            return [.log("round \(round): ignored \(expected.rawValue) message from '\(client)': not in the protocol")]
        }
        guard awaits(client, at: expected) else {
            return [.log("round \(round): ignored \(expected.rawValue) message from '\(client)' during \(stage.rawValue)")]
        }
        guard sender == id else { return refuse(client, "its \(expected.rawValue) message claims participant \(sender), it is \(id)", now: now) }
        let failure = modifyCollecting { c -> String? in
            do {
                try body(&c.server)
            } catch {
                return "\(error)"
            }
            c.pending.remove(client)
            return nil
        } ?? nil
        if let failure { return refuse(client, failure, now: now) }
        return closeIfAnswered(now: now)
    }

    /// Whether `expected` is the open stage and `client` has yet to answer it.
    private func awaits(_ client: String, at expected: Stage) -> Bool {
        guard case let .collecting(c) = state else { return false }
        return c.stage.stage == expected && c.pending.contains(client)
    }

    private mutating func refuse(_ client: String, _ reason: String, now: Date) -> [Output] {
        modifyCollecting { c in
            c.pending.remove(client)
            c.out.insert(client)
            c.metrics[client] = nil
        }
        return [.drop(client: client, reason: "refused: \(reason)")] + closeIfAnswered(now: now)
    }

    private mutating func closeIfAnswered(now: Date) -> [Output] {
        guard awaitsNobody else { return [] }
        return advance(now: now)
    }

    /// Whether a stage is open and every member still in the protocol has answered it.
    private var awaitsNobody: Bool {
        guard case let .collecting(c) = state else { return false }
        return c.pending.isEmpty
    }

    /// Closes the open stage and opens the next, or ends the round.
    private mutating func advance(now: Date) -> [Output] {
        let round = invite.round
        let setup = setup
        switch modifyCollecting({ $0.close(round: round, setup: setup) }) {
        case nil:
            return []
        case let .open(next, messages)?:
            let timeout = stageTimeout
            let live = modifyCollecting { c -> [(String, SecureDownlink)] in
                c.stage = next
                c.deadline = now.addingTimeInterval(timeout)
                // Only those still connected are expected; a recipient that left meanwhile is not waited for.
                let live = messages.filter { !c.out.contains($0.0) }
                c.pending = Set(live.map(\.0))
                return live
            } ?? []
            let outputs: [Output] = [.log("round \(round): secure aggregation stage \(next.stage.rawValue), \(live.count) clients")]
                + live.map { .send(client: $0.0, $0.1) }
            return outputs + (live.isEmpty ? advance(now: now) : [])
        case let .completed(result, dropped)?:
            state = .finished
            return [.log("round \(round): secure aggregation unmasked the sum of \(result.survivors.count) updates "
                         + "(\(dropped) dropped)"),
                    .completed(result)]
        case let .failed(error)?:
            state = .aborted
            return [.aborted("secure aggregation: \(error)")]
        }
    }
}
