import Foundation
import Wire

/// What one client's frames mean to the round engine: the coordinator's decoder for one connection,
/// without I/O. Tensor chunks are assembled into an update, and an update or a masked input is held
/// until the metrics report that completes it; then the whole becomes one engine event. The TLS
/// server and the in-memory harness both use it, so a client's upload is read one way only.
public struct ClientUplink: Sendable {
    /// A client's message, decoded and complete, for `RoundEngine.handle`.
    public enum Event: Sendable {
        case accept(round: UInt64)
        /// A client's decline or abort carries a code, never text (`DeclineCode`).
        case decline(round: UInt64, code: DeclineCode)
        case withdraw(round: UInt64, code: DeclineCode)
        case secureAdvertise(SecureAdvertise)
        case secureShares(SecureShares)
        case secureConsistency(SecureConsistencySignature)
        case secureUnmask(SecureUnmaskResponse)
        case secureMaskedInput(SecureMaskedInput, metrics: ClientRoundMetrics)
        case upload(round: UInt64, ReceivedUpdate)
    }

    public let client: String
    private let layout: AdapterLayout
    /// The plain update being received.
    private var receiver: TensorSetReceiver?
    /// A complete plain update waiting for its metrics report.
    private var delta: (round: UInt64, tensors: AdapterTensors)?
    /// A masked input waiting for its metrics report.
    private var masked: SecureMaskedInput?

    /// `layout`: the shape every update must have (the plan's adapter on the coordinator's model).
    public init(client: String, layout: AdapterLayout) {
        self.client = client
        self.layout = layout
    }

    /// Decodes `frame`; returns the event it completes, or nil while an upload is still arriving.
    /// `isActive(round)` says whether the engine awaits this client's update in `round` (asked once,
    /// at an update's first chunk, so no memory is spent on a client the round does not expect).
    public mutating func receive(_ frame: Frame, isActive: (UInt64) -> Bool) throws -> Event? {
        switch frame.type {
        case .accept: return .accept(round: try Accept(frame: frame).round)
        case .decline:
            let message = try Decline(frame: frame)
            return .decline(round: message.round, code: message.code)
        case .abort:
            let message = try Abort(frame: frame)
            guard message.detail.isEmpty else {
                throw FederationError.peer(client, "an abort with text: a client's abort carries its code only")
            }
            return .withdraw(round: message.round, code: message.code)
        case .secureAdvertise: return .secureAdvertise(try SecureAdvertise(frame: frame))
        case .secureShares: return .secureShares(try SecureShares(frame: frame))
        case .secureConsistencySignature: return .secureConsistency(try SecureConsistencySignature(frame: frame))
        case .secureUnmaskResponse: return .secureUnmask(try SecureUnmaskResponse(frame: frame))
        case .secureMaskedInput:
            masked = try SecureMaskedInput(frame: frame)
            return nil
        case .tensorChunk:
            try receiveChunk(try TensorChunk(frame: frame), isActive: isActive)
            return nil
        case .tensorsDone:
            let done = try TensorsDone(frame: frame)
            guard let receiver else { throw FederationError.round(done.round, "end of an update that never started") }
            delta = (done.round, try receiver.finish(done))
            self.receiver = nil
            return nil
        case .metrics: return try complete(with: try MetricsReport(frame: frame))
        default:
            throw FederationError.peer(client, "unexpected \(frame.type) message")
        }
    }

    /// A chunk of a plain update; the first of a round must come from a client that round awaits.
    private mutating func receiveChunk(_ chunk: TensorChunk, isActive: (UInt64) -> Bool) throws {
        if receiver?.round != chunk.round {
            guard isActive(chunk.round) else {
                throw FederationError.round(chunk.round, "update from '\(client)', which is not in that round")
            }
            receiver = TensorSetReceiver(round: chunk.round, kind: .update, layout: layout)
        }
        try receiver!.add(chunk)
    }

    /// The figures that complete a masked input or a plain update of the same round.
    private mutating func complete(with report: MetricsReport) throws -> Event {
        guard report.metrics.client == client else {
            throw FederationError.peer(client, "metrics name another client '\(report.metrics.client)'")
        }
        if let masked, masked.round == report.round {
            self.masked = nil
            return .secureMaskedInput(masked, metrics: report.metrics)
        }
        guard let delta, delta.round == report.round else {
            throw FederationError.round(report.round, "metrics from '\(client)' without its update")
        }
        self.delta = nil
        return .upload(round: report.round, ReceivedUpdate(delta: delta.tensors, metrics: report.metrics))
    }
}

extension RoundEngine {
    /// Applies one client's decoded message (from `ClientUplink`).
    public mutating func handle(_ event: ClientUplink.Event, from client: String, now: Date) -> [Action] {
        switch event {
        case let .accept(round): return accept(client, round: round, now: now)
        case let .decline(round, code): return decline(client, round: round, reason: code.name, now: now)
        case let .withdraw(round, code): return withdraw(client, round: round, reason: code.name, now: now)
        case let .secureAdvertise(message): return secureAdvertise(client, round: message.round, message, now: now)
        case let .secureShares(message): return secureShares(client, round: message.round, message, now: now)
        case let .secureConsistency(message): return secureConsistency(client, round: message.round, message, now: now)
        case let .secureUnmask(message): return secureUnmask(client, round: message.round, message, now: now)
        case let .secureMaskedInput(message, metrics):
            return secureMaskedInput(client, round: message.round, message, metrics: metrics, now: now)
        case let .upload(round, update): return upload(client, round: round, update: update, now: now)
        }
    }
}
