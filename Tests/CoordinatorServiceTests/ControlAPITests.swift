import Audit
import CoordinatorService
import FederationProtocol
import Foundation
import TestSupport
import Transport
import Wire
import XCTest

/// The control API's typed requests and answers against the JSON on the socket, and the client over
/// a real control socket.
final class ControlAPITests: XCTestCase {
    func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    func object(_ value: some Encodable) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(value)) as? [String: Any])
    }

    func testRequestsAreTheCommandObjects() throws {
        XCTAssertEqual(try json(ControlRequest.start(count: 3)), #"{"command":"start","count":3}"#)
        XCTAssertEqual(try json(ControlRequest.status), #"{"command":"status"}"#)
        XCTAssertEqual(try json(ControlRequest.clients), #"{"command":"clients"}"#)
        XCTAssertEqual(try json(ControlRequest.stop), #"{"command":"stop"}"#)
        for request in [ControlRequest.start(count: 10_000), .status, .clients, .stop] {
            XCTAssertEqual(try ControlRequest.read(Array(JSONEncoder().encode(request))).get(), request)
        }
        // Keys in any order, and fields a request does not use, are fine.
        XCTAssertEqual(try ControlRequest.read(Array(#"{"count": 2, "command": "start", "x": 1}"#.utf8)).get(), .start(count: 2))
    }

    func testMalformedRequestsAreRefusedWithTheReason() {
        let notARequest = "the request is not a JSON object with a 'command'"
        let count = "'count' must be an integer in 1...10000"
        let cases: [(String, String)] = [
            ("", notARequest), ("not json", notARequest), (#"["start"]"#, notARequest), (#"{}"#, notARequest),
            (#"{"command": 5}"#, notARequest),
            (#"{"command": "start"}"#, count), (#"{"command": "start", "count": 0}"#, count),
            (#"{"command": "start", "count": 10001}"#, count), (#"{"command": "start", "count": "3"}"#, count),
            (#"{"command": "start", "count": 2.5}"#, count),
            (#"{"command": "reboot"}"#, "unknown command 'reboot'"),
        ]
        for (request, reason) in cases {
            switch ControlRequest.read(Array(request.utf8)) {
            case let .success(parsed): XCTFail("\(request) was read as \(parsed)")
            case let .failure(refusal): XCTAssertEqual(refusal.error, reason, request)
            }
        }
        XCTAssertEqual(ControlResponse.refused(ControlRefusal("no")).bytes, Array(#"{"error":"no"}"#.utf8))
    }

    func status(inFlight: Bool) -> CoordinatorStatus {
        let round = RoundEngine.RoundInFlight(
            round: 4, cohort: ["a", "b", "c"], accepted: ["a", "b"], uploaded: ["a"],
            declined: [ClientReason(client: "c", reason: "privacy budget")], dropped: [],
            started: Date(timeIntervalSince1970: 1_750_000_000.25), secureStage: inFlight ? "masked_input" : nil)
        return CoordinatorStatus(
            rounds: RoundEngine.Status(phase: inFlight ? .training : .idle, queuedRounds: 2, nextRound: 5, connected: ["a", "b"],
                                       inFlight: inFlight ? round : nil),
            globalRound: 3, adapter: "/state/adapters/round-000003", adapterSHA256: String(repeating: "e", count: 64),
            name: "demo", port: 7443, aggregation: .fedavg, secureAggregation: true)
    }

    /// One flat object, as `status --json` has always printed it; the round's fields only while one is in flight.
    func testStatusIsOneFlatObject() throws {
        let idle = try object(status(inFlight: false))
        XCTAssertEqual(Set(idle.keys), ["phase", "queued_rounds", "next_round", "connected", "global_round", "adapter",
                                        "adapter_sha256", "name", "port", "aggregation", "secure_aggregation"])
        XCTAssertEqual(idle["phase"] as? String, "idle")
        XCTAssertEqual(idle["queued_rounds"] as? Int, 2)
        XCTAssertEqual(idle["port"] as? Int, 7443)

        let training = try object(status(inFlight: true))
        XCTAssertEqual(Set(training.keys).subtracting(idle.keys),
                       ["round", "cohort", "accepted", "uploaded", "declined", "dropped", "started", "secure_stage"])
        XCTAssertEqual(training["phase"] as? String, "training")
        XCTAssertEqual(training["round"] as? Int, 4)
        XCTAssertEqual(training["started"] as? Double, 1_750_000_000.25)
        XCTAssertEqual((training["declined"] as? [[String: String]])?.first, ["client": "c", "reason": "privacy budget"])
        XCTAssertEqual(training["secure_stage"] as? String, "masked_input")

        for value in [status(inFlight: false), status(inFlight: true)] {
            XCTAssertEqual(try JSONDecoder().decode(CoordinatorStatus.self, from: JSONEncoder().encode(value)), value)
        }
        XCTAssertEqual(status(inFlight: true).progressLine, "round 4: training, 2 connected, uploaded a")
        XCTAssertEqual(status(inFlight: false).progressLine, "round -: idle, 2 connected, uploaded -")
    }

    func testAnswersOfStartClientsAndStop() throws {
        XCTAssertEqual(try json(ControlResponse.queued(RoundsQueued(queued: 2, firstRound: 7))), #"{"first_round":7,"queued":2}"#)
        XCTAssertEqual(try json(ControlResponse.stopping(Stopping())), #"{"stopping":true}"#)
        let live = ClientListing(id: "a", status: .active, serial: 3, fingerprint: "f", enrolled: "e", notAfter: "n",
                                 revoked: nil, signingKey: "k", connected: true,
                                 connectedSince: Date(timeIntervalSince1970: 1_750_000_000), address: "127.0.0.1:5000")
        let row = try XCTUnwrap((try object(ControlResponse.clients(ClientsListing(clients: [live])))["clients"] as? [[String: Any]])?.first)
        XCTAssertEqual(row["connected"] as? Bool, true)
        XCTAssertEqual(row["connected_since"] as? Double, 1_750_000_000)
        XCTAssertEqual(row["address"] as? String, "127.0.0.1:5000")
        XCTAssertTrue(row["revoked"] is NSNull)
        XCTAssertEqual(try JSONDecoder().decode(ClientListing.self, from: JSONEncoder().encode(live)), live)
    }

    /// The client over a real control socket: typed answers, and a refusal thrown with its reason.
    func testClientOverTheSocket() throws {
        let directory = try Fixtures.temporaryDirectory("control")
        defer { try? FileManager.default.removeItem(at: directory) }
        let paths = CoordinatorPaths(root: directory)
        let server = try ControlSocketServer(path: paths.controlSocket.path, log: { _ in }) { bytes in
            switch ControlRequest.read(bytes) {
            case let .success(.start(count)): return ControlResponse.queued(RoundsQueued(queued: count, firstRound: 11)).bytes
            case .success(.stop): return Array("[1]".utf8)
            case .success: return ControlResponse.refused(ControlRefusal("not here")).bytes
            case let .failure(refusal): return ControlResponse.refused(refusal).bytes
            }
        }
        server.start()
        defer { server.close() }
        let control = CoordinatorControl(paths: paths)
        XCTAssertEqual(try control.startRounds(3), RoundsQueued(queued: 3, firstRound: 11))
        XCTAssertThrowsError(try control.status()) { error in
            XCTAssertEqual("\(error)", "\(paths.controlSocket.path): the coordinator refused: not here")
        }
        XCTAssertThrowsError(try control.stop()) { error in
            XCTAssertEqual("\(error)", "\(paths.controlSocket.path): the coordinator answered something other than a JSON object")
        }
    }
}
