import FederationProtocol
import Foundation
import Wire

// The coordinator's control API: what `rounds start`, `status`, `clients` (and the demo, the tests and
// the scale benchmark) send through the control socket, and what `serve` answers. One JSON object
// each way per connection; the socket itself (Transport) carries bytes.

/// A request to a running coordinator. JSON: `{"command": "start", "count": N}`, `{"command":
/// "status"}`, `{"command": "clients"}` or `{"command": "stop"}`.
public enum ControlRequest: Sendable, Equatable {
    /// Queue `count` more rounds (1...10000), run one after another.
    case start(count: Int)
    /// The round in flight and the connected clients (`CoordinatorStatus`).
    case status
    /// Every enrolled certificate with its live connection (`ClientsListing`).
    case clients
    /// Stop serving, as SIGTERM would.
    case stop

    /// The counts `start` accepts.
    public static let roundCounts = 1...10_000

    /// The request in `bytes`, or the refusal the coordinator answers with.
    public static func read(_ bytes: [UInt8]) -> Result<ControlRequest, ControlRefusal> {
        do {
            return .success(try JSONDecoder().decode(ControlRequest.self, from: Data(bytes)))
        } catch let refusal as ControlRefusal {
            return .failure(refusal)
        } catch {
            return .failure(.notARequest)
        }
    }
}

extension ControlRequest: Codable {
    enum CodingKeys: String, CodingKey {
        case command, count
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case let .start(count):
            try c.encode("start", forKey: .command)
            try c.encode(count, forKey: .count)
        case .status: try c.encode("status", forKey: .command)
        case .clients: try c.encode("clients", forKey: .command)
        case .stop: try c.encode("stop", forKey: .command)
        }
    }

    /// Throws a `ControlRefusal` that says what is wrong with the request.
    public init(from decoder: any Decoder) throws {
        guard let c = try? decoder.container(keyedBy: CodingKeys.self),
              let command = try? c.decode(String.self, forKey: .command) else { throw ControlRefusal.notARequest }
        switch command {
        case "start":
            guard let count = try? c.decode(Int.self, forKey: .count), Self.roundCounts.contains(count) else {
                throw ControlRefusal("'count' must be an integer in \(Self.roundCounts.lowerBound)...\(Self.roundCounts.upperBound)")
            }
            self = .start(count: count)
        case "status": self = .status
        case "clients": self = .clients
        case "stop": self = .stop
        default: throw ControlRefusal("unknown command '\(command)'")
        }
    }
}

/// The coordinator's answer when it refuses a request. JSON `{"error": REASON}`.
public struct ControlRefusal: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var error: String
    public init(_ error: String) { self.error = error }
    public var description: String { error }

    public static let notARequest = ControlRefusal("the request is not a JSON object with a 'command'")
}

/// The answer to `start`. JSON `{"queued", "first_round"}`.
public struct RoundsQueued: Codable, Sendable, Equatable {
    /// Rounds added to the queue.
    public var queued: Int
    /// The number the first of them takes.
    public var firstRound: UInt64

    public init(queued: Int, firstRound: UInt64) {
        self.queued = queued
        self.firstRound = firstRound
    }

    enum CodingKeys: String, CodingKey {
        case queued
        case firstRound = "first_round"
    }
}

/// The answer to `status`: the round engine's status and the federation's. JSON: one flat object,
/// the fields of `RoundEngine.Status` and `{"global_round", "adapter", "adapter_sha256", "name",
/// "port", "aggregation", "secure_aggregation"}`.
public struct CoordinatorStatus: Codable, Sendable, Equatable {
    public var rounds: RoundEngine.Status
    /// The round that made the current global adapter (0: the initial one).
    public var globalRound: UInt64
    /// The current global adapter's folder.
    public var adapter: String
    /// SHA-256 of its safetensors file.
    public var adapterSHA256: String
    /// The federation's name.
    public var name: String
    public var port: Int
    public var aggregation: AggregationKind
    public var secureAggregation: Bool

    public init(rounds: RoundEngine.Status, globalRound: UInt64, adapter: String, adapterSHA256: String, name: String,
                port: Int, aggregation: AggregationKind, secureAggregation: Bool) {
        self.rounds = rounds
        self.globalRound = globalRound
        self.adapter = adapter
        self.adapterSHA256 = adapterSHA256
        self.name = name
        self.port = port
        self.aggregation = aggregation
        self.secureAggregation = secureAggregation
    }

    enum CodingKeys: String, CodingKey {
        case adapter, name, port, aggregation
        case globalRound = "global_round"
        case adapterSHA256 = "adapter_sha256"
        case secureAggregation = "secure_aggregation"
    }

    public func encode(to encoder: any Encoder) throws {
        try rounds.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(globalRound, forKey: .globalRound)
        try c.encode(adapter, forKey: .adapter)
        try c.encode(adapterSHA256, forKey: .adapterSHA256)
        try c.encode(name, forKey: .name)
        try c.encode(port, forKey: .port)
        try c.encode(aggregation, forKey: .aggregation)
        try c.encode(secureAggregation, forKey: .secureAggregation)
    }

    public init(from decoder: any Decoder) throws {
        rounds = try RoundEngine.Status(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        globalRound = try c.decode(UInt64.self, forKey: .globalRound)
        adapter = try c.decode(String.self, forKey: .adapter)
        adapterSHA256 = try c.decode(String.self, forKey: .adapterSHA256)
        name = try c.decode(String.self, forKey: .name)
        port = try c.decode(Int.self, forKey: .port)
        aggregation = try c.decode(AggregationKind.self, forKey: .aggregation)
        secureAggregation = try c.decode(Bool.self, forKey: .secureAggregation)
    }

    /// One line of progress while waiting for rounds: `round R: phase, N connected, uploaded a,b`.
    public var progressLine: String {
        "round \(rounds.inFlight.map { String($0.round) } ?? "-"): \(rounds.phase.rawValue), "
            + "\(rounds.connected.count) connected, uploaded \(rounds.inFlight.map { $0.uploaded.joined(separator: ",") } ?? "-")"
    }
}

/// One certificate as `clients` lists it. JSON `{"id", "status", "serial", "fingerprint", "enrolled",
/// "not_after", "revoked" (or null), "signing_key" (or null)}`, dates in ISO 8601; from a running
/// coordinator also `"connected"` and, while connected, `"connected_since"` (seconds since 1970) and
/// `"address"`.
public struct ClientListing: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case active, revoked
        /// Active, but past its not-after date.
        case expired
    }

    public var id: String
    public var status: Status
    public var serial: UInt64
    public var fingerprint: String
    public var enrolled: String
    public var notAfter: String
    public var revoked: String?
    public var signingKey: String?
    /// Whether the client is connected now (nil when no coordinator was asked).
    public var connected: Bool?
    public var connectedSince: Date?
    /// The peer's address while connected.
    public var address: String?

    public init(id: String, status: Status, serial: UInt64, fingerprint: String, enrolled: String, notAfter: String,
                revoked: String?, signingKey: String?, connected: Bool? = nil, connectedSince: Date? = nil,
                address: String? = nil) {
        self.id = id
        self.status = status
        self.serial = serial
        self.fingerprint = fingerprint
        self.enrolled = enrolled
        self.notAfter = notAfter
        self.revoked = revoked
        self.signingKey = signingKey
        self.connected = connected
        self.connectedSince = connectedSince
        self.address = address
    }

    enum CodingKeys: String, CodingKey {
        case id, status, serial, fingerprint, enrolled, revoked, connected, address
        case notAfter = "not_after"
        case signingKey = "signing_key"
        case connectedSince = "connected_since"
    }

    /// `revoked` and `signing_key` are always there (null when absent); the connection fields only when known.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(status, forKey: .status)
        try c.encode(serial, forKey: .serial)
        try c.encode(fingerprint, forKey: .fingerprint)
        try c.encode(enrolled, forKey: .enrolled)
        try c.encode(notAfter, forKey: .notAfter)
        try c.encode(revoked, forKey: .revoked)
        try c.encode(signingKey, forKey: .signingKey)
        try c.encodeIfPresent(connected, forKey: .connected)
        try c.encodeIfPresent(connectedSince?.timeIntervalSince1970, forKey: .connectedSince)
        try c.encodeIfPresent(address, forKey: .address)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        status = try c.decode(Status.self, forKey: .status)
        serial = try c.decode(UInt64.self, forKey: .serial)
        fingerprint = try c.decode(String.self, forKey: .fingerprint)
        enrolled = try c.decode(String.self, forKey: .enrolled)
        notAfter = try c.decode(String.self, forKey: .notAfter)
        revoked = try c.decodeIfPresent(String.self, forKey: .revoked)
        signingKey = try c.decodeIfPresent(String.self, forKey: .signingKey)
        connected = try c.decodeIfPresent(Bool.self, forKey: .connected)
        connectedSince = try c.decodeIfPresent(Double.self, forKey: .connectedSince).map(Date.init(timeIntervalSince1970:))
        address = try c.decodeIfPresent(String.self, forKey: .address)
    }
}

/// The answer to `clients`. JSON `{"clients": [ClientListing]}`.
public struct ClientsListing: Codable, Sendable, Equatable {
    public var clients: [ClientListing]
    public init(clients: [ClientListing]) { self.clients = clients }
}

/// The answer to `stop`. JSON `{"stopping": true}`.
public struct Stopping: Codable, Sendable, Equatable {
    public var stopping: Bool
    public init(stopping: Bool = true) { self.stopping = stopping }
}

/// What the coordinator answers, one case per request and one for a refusal.
public enum ControlResponse: Encodable, Sendable, Equatable {
    case queued(RoundsQueued)
    case status(CoordinatorStatus)
    case clients(ClientsListing)
    case stopping(Stopping)
    case refused(ControlRefusal)

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case let .queued(answer): try answer.encode(to: encoder)
        case let .status(answer): try answer.encode(to: encoder)
        case let .clients(answer): try answer.encode(to: encoder)
        case let .stopping(answer): try answer.encode(to: encoder)
        case let .refused(answer): try answer.encode(to: encoder)
        }
    }

    /// The response's bytes on the socket (keys sorted).
    public var bytes: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map(Array.init) ?? Array(#"{"error":"cannot encode the response"}"#.utf8)
    }
}
