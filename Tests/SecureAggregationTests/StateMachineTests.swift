import SecureCrypto
import XCTest
@testable import SecureAggregation

/// The two machines as state machines: a call out of order is refused with the state it met, a
/// refused message leaves the stage open for everyone else, and a failed or aborted machine stays so.
final class StateMachineTests: XCTestCase {
    let words: [UInt32] = [1, 2, 3, 4]

    func testClientRefusesStagesOutOfOrderAndStaysFailed() throws {
        let run = try ProtocolRun.make(count: 4, vectorLength: 4) { _ in [1, 2, 3, 4] }
        let id = run.ids[0]
        var client = try XCTUnwrap(run.clients[id])
        let emptyBundle = ShareBundle(sessionID: run.session.sessionID, recipient: id, shares: [])
        XCTAssertThrowsError(try client.maskInput(emptyBundle, input: words)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "shared", actual: "ready"))
        }
        XCTAssertNil(client.failureReason, "a call out of order does not fail the client")
        _ = try client.advertiseKeys()
        XCTAssertThrowsError(try client.advertiseKeys()) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "ready", actual: "advertised"))
        }
        XCTAssertNil(client.transcriptID, "no transcript before the share stage")

        // A broadcast of another session fails the client for good, and later calls say why.
        XCTAssertThrowsError(try client.shareKeys(AdvertisementBroadcast(sessionID: [9], recipient: id, advertisements: [], others: [])))
        let reason = try XCTUnwrap(client.failureReason)
        XCTAssertThrowsError(try client.maskInput(emptyBundle, input: words)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "shared", actual: "failed (\(reason))"))
        }
        XCTAssertNil(client.transcriptID)
    }

    /// The client keeps the transcript it derived through masking and after it has answered; a
    /// second unmask request finds it finished.
    func testClientKeepsItsTranscriptToTheEnd() throws {
        var run = try ProtocolRun.make(count: 4, vectorLength: 4) { _ in [1, 2, 3, 4] }
        let requests = try run.maskAndSign(try run.share(try run.advertise()))
        let transcript = try XCTUnwrap(run.server.transcriptID)
        let request = requests[0]
        XCTAssertEqual(run.clients[request.recipient]?.transcriptID, transcript)
        _ = try run.clients[request.recipient]!.unmask(request)
        XCTAssertEqual(run.clients[request.recipient]?.transcriptID, transcript)
        XCTAssertThrowsError(try run.clients[request.recipient]!.unmask(request)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "signed", actual: "finished"))
        }
    }

    /// A refused message at each stage leaves the stage collecting: the others' messages are still
    /// taken, and the round sums every input.
    func testServerRefusalLeavesTheStageOpen() throws {
        var run = try ProtocolRun.make(count: 5, vectorLength: 4) { id in [UInt32](repeating: id, count: 4) }
        XCTAssertThrowsError(try run.server.finishSharing()) { error in
            XCTAssertEqual(error as? SecureAggregationError,
                           .invalidState(expected: "collectingShares", actual: "collectingAdvertisements"))
        }
        var advertisements: [KeyAdvertisement] = []
        for id in run.ids {
            let advertisement = try run.clients[id]!.advertiseKeys()
            advertisements.append(advertisement)
            try run.server.receive(advertisement)
            XCTAssertThrowsError(try run.server.receive(advertisement))  // a duplicate, refused
        }
        XCTAssertNil(run.server.transcriptID)
        let broadcasts = try run.server.finishAdvertising()
        XCTAssertThrowsError(try run.server.receive(advertisements[0])) { error in
            XCTAssertEqual(error as? SecureAggregationError,
                           .invalidState(expected: "collectingAdvertisements", actual: "collectingShares"))
        }
        var bundles: [ShareBundle] = []
        for broadcast in broadcasts {
            let message = try run.clients[broadcast.recipient]!.shareKeys(broadcast)
            try run.server.receive(message)
            XCTAssertThrowsError(try run.server.receive(message))
        }
        bundles = try run.server.finishSharing()
        var requests: [UnmaskRequest] = []
        for bundle in bundles {
            let masked = try run.clients[bundle.recipient]!.maskInput(bundle, input: run.inputs[bundle.recipient]!)
            let short = MaskedInput(sessionID: masked.sessionID, sender: masked.sender, words: Array(masked.words.prefix(3)))
            XCTAssertThrowsError(try run.server.receive(short))
            try run.server.receive(masked)
            XCTAssertThrowsError(try run.server.receive(masked))
        }
        for check in try run.server.finishMaskedInput() {
            let signature = try run.clients[check.recipient]!.signSurvivors(check)
            try run.server.receive(signature)
            XCTAssertThrowsError(try run.server.receive(signature))
        }
        requests = try run.server.finishConsistencyCheck()
        for request in requests {
            let response = try run.clients[request.recipient]!.unmask(request)
            try run.server.receive(response)
            XCTAssertThrowsError(try run.server.receive(response))
        }
        let transcript = try XCTUnwrap(run.server.transcriptID)
        let result = try run.server.finishUnmasking()
        XCTAssertEqual(result.sum, run.plaintextSum(of: run.ids))
        XCTAssertEqual(run.server.transcriptID, transcript, "the transcript stays readable once finished")
        XCTAssertThrowsError(try run.server.finishUnmasking()) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "collectingUnmaskResponses", actual: "finished"))
        }
    }
}
