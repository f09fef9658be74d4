import Audit
import Foundation
import Transport
import Wire

/// The client side of a running coordinator's control socket (`DIR/control.sock`): typed requests,
/// typed answers. A refusal or an answer of the wrong shape throws `FederationError.state` naming the
/// socket.
public struct CoordinatorControl: Sendable {
    public let paths: CoordinatorPaths

    public init(paths: CoordinatorPaths) { self.paths = paths }

    /// Queues `count` rounds; says which number the first takes.
    public func startRounds(_ count: Int, timeout: Double = 30) throws -> RoundsQueued {
        try send(.start(count: count), expecting: RoundsQueued.self, timeout: timeout)
    }

    public func status(timeout: Double = 30) throws -> CoordinatorStatus {
        try send(.status, expecting: CoordinatorStatus.self, timeout: timeout)
    }

    /// Every enrolled certificate, with its live connection.
    public func clients(timeout: Double = 30) throws -> [ClientListing] {
        try send(.clients, expecting: ClientsListing.self, timeout: timeout).clients
    }

    /// Asks the coordinator to stop serving.
    public func stop(timeout: Double = 30) throws {
        _ = try send(.stop, expecting: Stopping.self, timeout: timeout)
    }

    /// One exchange: `request` out, an answer of type `Response` (or a refusal) back.
    public func send<Response: Decodable>(_ request: ControlRequest, expecting: Response.Type,
                                          timeout: Double = 30) throws -> Response {
        let path = paths.controlSocket.path
        let answer = Data(try ControlSocketClient.request(path: path, Array(try JSONEncoder().encode(request)), timeout: timeout))
        guard (try? JSONDecoder().decode(JSONObject.self, from: answer)) != nil else {
            throw FederationError.state(path: path, "the coordinator answered something other than a JSON object")
        }
        if let refusal = try? JSONDecoder().decode(ControlRefusal.self, from: answer) {
            throw FederationError.state(path: path, "the coordinator refused: \(refusal.error)")
        }
        do {
            return try JSONDecoder().decode(Response.self, from: answer)
        } catch {
            throw FederationError.state(path: path, "unexpected response \(String(decoding: answer, as: UTF8.self)): \(error)")
        }
    }

    /// Waits until rounds `first..<first+count` have audit records, and returns those records.
    /// `recorded` hears of each record as it lands; `polled` of the coordinator's progress (its
    /// `progressLine`) whenever that changes between records.
    /// - Throws: `FederationError.round` after `timeout` seconds; audit log failures.
    public func waitForRounds(first: UInt64, count: Int, timeout: Double, recorded: (AuditRecord) -> Void = { _ in },
                              polled: (String) -> Void = { _ in }) throws -> [AuditRecord] {
        let deadline = Date().addingTimeInterval(timeout)
        let last = first + UInt64(count) - 1
        var reported = Set<UInt64>()
        var lastProgress = ""
        while true {
            let key = try AuditLog.verifyingKey(in: paths)
            let verification = try AuditLog.verify(url: paths.auditLog, publicKey: key)
            let records = verification.records.filter { $0.round >= first && $0.round <= last }
            for record in records where !reported.contains(record.round) {
                reported.insert(record.round)
                recorded(record)
            }
            if records.count >= count { return records }
            if Date() > deadline {
                throw FederationError.round(first, "timed out after \(Int(timeout)) s waiting for rounds \(first)...\(last)")
            }
            if let progress = try? status().progressLine {
                if progress != lastProgress { polled(progress) }
                lastProgress = progress
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }

    /// Any JSON object, whatever its fields.
    private struct JSONObject: Decodable {
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws { _ = try decoder.container(keyedBy: Key.self) }
    }
}
