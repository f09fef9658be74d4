import FederationProtocol
import FineTuning
import Foundation
import ModelFormats
import TestSupport
import Tokenizer
import Wire
import XCTest
@testable import ClientService

/// Whether a client releases a condition accuracy: only when the plan asks and its held-out records carry conditions,
/// all of them (a file mixing records with and without one is a data decline naming the line, so presence never turns
/// on a single record); which records it then scores.
final class ConditionRoundDataTests: XCTestCase {
    func testHeldOutConditionsAreAllOrNoneAndDecideTheRelease() throws {
        let directory = try Fixtures.temporaryDirectory("condition-data")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenizer = try BPETokenizer(ggufMetadata: try GGUFFile(url: Fixtures.defaultModel).metadata)
        let train = directory.appendingPathComponent("train.jsonl")
        try #"{"text": "some training text"}"#.write(to: train, atomically: true, encoding: .utf8)
        func client(_ name: String, _ records: [String]) throws -> ClientConfiguration {
            let eval = directory.appendingPathComponent("\(name).jsonl")
            try records.joined(separator: "\n").write(to: eval, atomically: true, encoding: .utf8)
            return ClientConfiguration(model: "unused", data: train.path, evalData: eval.path,
                                       policy: ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10))
        }
        let labelled = #"{"prompt": "Note.\nAssessment:", "completion": " Asthma.", "condition": "asthma"}"#
        let plain = #"{"prompt": "Note.\nAssessment:", "completion": " Asthma."}"#
        let plan = TrainingPlan(steps: 1, learningRate: 0.01, samplingRate: 0.5, noiseMultiplier: 1.1, clipNorm: 0.5, delta: 1e-5,
                                maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj"], accuracyRecords: 2)
        func load(_ configuration: ClientConfiguration) -> Result<(train: [TokenizedExample], eval: [TokenizedExample]), PreparationFailure> {
            RoundData.load(configuration, maxLength: 64, tokenizer: tokenizer, vocabularySize: 49152)
        }
        let all = try load(try client("all", [labelled, labelled, labelled])).get()
        XCTAssertEqual(ClientRunner.accuracyIndices(plan: plan, evalExamples: all.eval, ledgerUnit: .record), [0, 1], "the first two, the plan's bound")
        // At privacy unit client the ledger's unit decides: a user-level ledger scores one record per person.
        var clientLevel = plan
        clientLevel.privacyUnit = .client
        let users = all.eval.enumerated().map { index, example in
            var withUser = example
            withUser.user = index < 2 ? "ann" : "bob"
            return withUser
        }
        XCTAssertEqual(ClientRunner.accuracyIndices(plan: clientLevel, evalExamples: users, ledgerUnit: .user), [0, 2])
        XCTAssertEqual(ClientRunner.accuracyIndices(plan: clientLevel, evalExamples: users, ledgerUnit: .record), [0, 1])
        var none = plan
        none.accuracyRecords = 0
        XCTAssertNil(ClientRunner.accuracyIndices(plan: none, evalExamples: all.eval, ledgerUnit: .record), "the plan asks for none")
        let unlabelled = try load(try client("none", [plain, plain])).get()
        XCTAssertNil(ClientRunner.accuracyIndices(plan: plan, evalExamples: unlabelled.eval, ledgerUnit: .record), "no conditions, no release")
        for (name, records, line) in [("mixed", [labelled, plain, labelled], 2), ("mixed-first", [plain, plain, labelled], 3)] {
            guard case let .failure(.data(detail)) = load(try client(name, records)) else { return XCTFail("\(name): not refused") }
            XCTAssertTrue(detail.contains("\(name).jsonl:\(line)") && detail.contains("condition"), detail)
        }
    }
}
