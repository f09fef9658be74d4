import FederationProtocol
import Foundation
import ModelFormats
import SecureAggregation
import Wire
import XCTest

/// The coordinator's reading of one client's frames: an upload becomes one engine event only when its
/// metrics report completes it, and nothing is accepted from a client the round does not await.
final class ClientUplinkTests: XCTestCase {
    private let layout = try! AdapterLayout(configuration: ClientAgentTests.configuration, plan: ClientAgentTests.plan)

    private func metrics(_ client: String) -> ClientRoundMetrics {
        ClientRoundMetrics(client: client, epsilon: 1, delta: 1e-5, epsilonBudget: 8,
                           heldOut: HeldOutRelease(lossBefore: 512, lossAfter: 341, count: 1024, lossClip: 6, noiseMultiplier: 5))
    }

    private func update(_ value: Float) -> AdapterTensors {
        layout.shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0) * value } }
    }

    func testAPlainUpdateBecomesOneEventWithItsMetrics() throws {
        var uplink = ClientUplink(client: "clinic-1", layout: layout)
        let tensors = update(0.01)
        for frame in try TensorSetFrames.frames(round: 4, kind: .update, tensors: tensors) {
            XCTAssertNil(try uplink.receive(frame, isActive: { $0 == 4 }), "no event before the metrics")
        }
        let event = try uplink.receive(try MetricsReport(round: 4, metrics: metrics("clinic-1")).frame(), isActive: { _ in true })
        guard case let .upload(round, received)? = event else { return XCTFail("\(String(describing: event))") }
        XCTAssertEqual(round, 4)
        XCTAssertEqual(received.delta, tensors)
        XCTAssertEqual(received.metrics, metrics("clinic-1"))
        // The update was consumed: a second report has nothing to complete.
        XCTAssertThrowsError(try uplink.receive(try MetricsReport(round: 4, metrics: metrics("clinic-1")).frame(),
                                                isActive: { _ in true }))
    }

    func testAMaskedInputWaitsForItsMetrics() throws {
        var uplink = ClientUplink(client: "clinic-1", layout: layout)
        let masked = SecureMaskedInput(round: 2, input: MaskedInput(sessionID: Array(repeating: 1, count: 32), sender: 3,
                                                                    words: [1, 2, 3]))
        XCTAssertNil(try uplink.receive(try masked.frame(), isActive: { _ in false }))
        let event = try uplink.receive(try MetricsReport(round: 2, metrics: metrics("clinic-1")).frame(), isActive: { _ in false })
        guard case let .secureMaskedInput(input, figures)? = event else { return XCTFail("\(String(describing: event))") }
        XCTAssertEqual(input.round, 2)
        XCTAssertEqual(input.input, masked.input)
        XCTAssertEqual(figures.client, "clinic-1")
    }

    func testRefusals() throws {
        var uplink = ClientUplink(client: "clinic-1", layout: layout)
        let frames = try TensorSetFrames.frames(round: 7, kind: .update, tensors: update(0.5))
        // An update for a round that does not await this client is refused at its first chunk.
        XCTAssertThrowsError(try uplink.receive(frames[0], isActive: { _ in false })) { error in
            XCTAssertTrue("\(error)".contains("not in that round"), "\(error)")
        }
        // Metrics without an update, and metrics that name another client.
        XCTAssertThrowsError(try uplink.receive(try MetricsReport(round: 7, metrics: metrics("clinic-1")).frame(),
                                                isActive: { _ in true })) { error in
            XCTAssertTrue("\(error)".contains("without its update"), "\(error)")
        }
        XCTAssertThrowsError(try uplink.receive(try MetricsReport(round: 7, metrics: metrics("clinic-2")).frame(),
                                                isActive: { _ in true })) { error in
            XCTAssertTrue("\(error)".contains("another client"), "\(error)")
        }
        // The end of an update that never started, and a message only a coordinator sends.
        XCTAssertThrowsError(try uplink.receive(frames.last!, isActive: { _ in true }))
        XCTAssertThrowsError(try uplink.receive(try RoundResult(round: 7, committed: false, adapterSHA256: "", reason: "x")
            .frame(), isActive: { _ in true }))
        // A client's abort is its withdrawal from the round, with its code.
        guard case let .withdraw(round, code)? = try uplink.receive(try Abort(round: 7, code: .secureAggregation).frame(),
                                                                   isActive: { _ in false }) else { return XCTFail() }
        XCTAssertEqual(round, 7)
        XCTAssertEqual(code, .secureAggregation)
        // Text in a client's abort is refused: nothing a client words reaches the coordinator (issue 13).
        XCTAssertThrowsError(try uplink.receive(try Abort(round: 7, code: .secureAggregation, detail: "train.jsonl:3: 812 tokens")
            .frame(), isActive: { _ in false })) { error in
            XCTAssertTrue("\(error)".contains("an abort with text"), "\(error)")
        }
    }
}
