import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import ModelFormats
import TestSupport
import Wire
import XCTest
@testable import ClientService

/// A plan's `max_length` does not make a client's answer depend on its records' lengths (issue 13):
/// the coordinator chooses max_length, and a decline quoting "record has N tokens" let it binary-search
/// private token counts. Seen failing on the old code: the long client declined with
/// "data: long.jsonl:2: record has 900 tokens, more than the maximum length 4", and with the prompt-only
/// data the trainer refused max_length 4 ("no training example has a token to learn") but not 64.
final class RoundDataTests: XCTestCase {
    /// Two clients whose data differ only in one record's length: 3 tokens or 900.
    func testTheClientsAnswerIsTheSameWhateverTheRecordLengths() throws {
        let directory = try Fixtures.temporaryDirectory("round-data")
        defer { try? FileManager.default.removeItem(at: directory) }
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")))
        func client(_ name: String, records: [String]) throws -> ClientConfiguration {
            let data = directory.appendingPathComponent("\(name).jsonl")
            try records.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
            return ClientConfiguration(model: "unused", data: data.path, evalData: data.path,
                                       policy: ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10))
        }
        func ids(_ count: Int) -> String { (0..<count).map { String($0 % 9 + 1) }.joined(separator: ", ") }
        let five = "{\"input_ids\": [\(ids(5))]}"
        let short = try client("short", records: [five, "{\"input_ids\": [\(ids(3))]}"])
        let long = try client("long", records: [five, "{\"input_ids\": [\(ids(900))]}"])
        // Every learnable token lies past position 5: a small max_length leaves nothing to learn.
        let promptOnly = try client("prompt-only", records: [
            "{\"input_ids\": [\(ids(12))], \"labels\": [-100, -100, -100, -100, -100, -100, \(ids(6))]}",
        ])
        var answers: [String: [Int: String]] = [:]
        for maxLength in [2, 4, 64] {
            let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.5, noiseMultiplier: 1.1, clipNorm: 0.5,
                                    delta: 1e-5, maxLength: maxLength, rank: 2, alpha: 4, targets: ["q_proj"])
            let layout = try AdapterLayout(configuration: model.configuration, plan: plan)
            for (name, configuration) in [("short", short), ("long", long), ("prompt-only", promptOnly)] {
                let records = try RoundData.load(configuration, maxLength: maxLength, tokenizer: nil,
                                                 vocabularySize: model.configuration.vocabSize).get()
                XCTAssertTrue((records.train + records.eval).allSatisfy { $0.ids.count <= maxLength }, name)
                // What the client answers the coordinator with: the charge it asks for (q, σ, steps) on N records.
                let trainer = try LoRATrainer(model: model, examples: records.train,
                                              configuration: ClientRunner.training(plan, layout: layout))
                answers[name, default: [:]][maxLength] = "\(String(describing: trainer.mechanism)) on \(records.train.count)"
            }
        }
        XCTAssertEqual(answers["short"], answers["long"])
        XCTAssertEqual(Set(answers["prompt-only"]!.values).count, 1, "\(answers)")
        // The positive control: the two datasets do differ, and differently truncated.
        let whole = try Dataset.load(URL(fileURLWithPath: long.data), tokenizer: nil, maxLength: nil, vocabularySize: 10)
        XCTAssertEqual(whole.map(\.ids.count), [5, 900])
    }

    /// The records read in one round serve the next while the files are unchanged (each round's truncation still
    /// applied), and a file changed between rounds is read again. Control: a changed file is not served from the cache.
    func testRecordsAreKeptBetweenRoundsUntilAFileChanges() throws {
        let directory = try Fixtures.temporaryDirectory("round-data")
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("train.jsonl")
        let eval = directory.appendingPathComponent("eval.jsonl")
        try "{\"input_ids\": [1, 2, 3, 4, 5, 6]}\n".write(to: data, atomically: true, encoding: .utf8)
        try "{\"input_ids\": [1, 2, 3]}\n".write(to: eval, atomically: true, encoding: .utf8)
        let configuration = ClientConfiguration(model: "unused", data: data.path, evalData: eval.path,
                                                policy: ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10))
        let cache = RoundData.Cache()
        let first = try RoundData.load(configuration, maxLength: 64, tokenizer: nil, vocabularySize: 10, cache: cache).get()
        XCTAssertEqual(cache.hits, 0)
        let second = try RoundData.load(configuration, maxLength: 4, tokenizer: nil, vocabularySize: 10, cache: cache).get()
        XCTAssertEqual(cache.hits, 1, "the second round reads nothing")
        XCTAssertEqual(first.train.map(\.ids.count), [6])
        XCTAssertEqual(second.train.map(\.ids.count), [4], "cut to the second plan's max_length")
        XCTAssertEqual(second.eval.map(\.ids), first.eval.map(\.ids))

        try "{\"input_ids\": [1, 2, 3, 4, 5, 6]}\n{\"input_ids\": [7, 8]}\n".write(to: data, atomically: true, encoding: .utf8)
        let third = try RoundData.load(configuration, maxLength: 64, tokenizer: nil, vocabularySize: 10, cache: cache).get()
        XCTAssertEqual(cache.hits, 1, "control: a changed file is read again")
        XCTAssertEqual(third.train.count, 2)
        try "{\"input_ids\": [1, 2, oops\n".write(to: data, atomically: true, encoding: .utf8)
        guard case .failure = RoundData.load(configuration, maxLength: 64, tokenizer: nil, vocabularySize: 10, cache: cache) else {
            return XCTFail("a file broken between rounds was served from the cache")
        }
    }

    /// What does make a client decline for its data is the same for every plan: a malformed record, or
    /// no record with a token to learn as read.
    func testDataDeclinesAreIndependentOfThePlan() throws {
        let directory = try Fixtures.temporaryDirectory("round-data")
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("unlabeled.jsonl")
        try "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, -100]}".write(to: data, atomically: true, encoding: .utf8)
        let configuration = ClientConfiguration(model: "unused", data: data.path, evalData: data.path,
                                                policy: ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10))
        for maxLength in [2, 64] {
            guard case let .failure(failure) = RoundData.load(configuration, maxLength: maxLength, tokenizer: nil, vocabularySize: 10)
            else { return XCTFail("max_length \(maxLength): accepted data without a token to learn") }
            XCTAssertEqual(failure.code, .data)
            XCTAssertTrue(failure.description.contains("no record has a token to learn"), failure.description)
        }
    }

    /// A held-out split whose scored tokens all lie past max_length reports 0 over 0 tokens, which the
    /// coordinator accepts; the NaN mean it replaces is refused (the positive control).
    func testAHeldOutSplitCutToNothingIsReportedAsZeroOverZeroTokens() throws {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")))
        let records = [TokenizedExample(ids: [1, 2, 3, 4, 5, 6], labels: [-100, -100, -100, -100, 5, 6], line: 1)]
        let cut = try Evaluator.evaluate(model: model, examples: Dataset.truncated(records, to: 3))
        XCTAssertEqual(cut.tokens, 0)
        XCTAssertTrue(cut.loss.isNaN)
        XCTAssertEqual(RoundData.reportedLoss(cut), 0)
        let whole = try Evaluator.evaluate(model: model, examples: records)
        XCTAssertEqual(RoundData.reportedLoss(whole), whole.loss)
        XCTAssertGreaterThan(whole.tokens, 0)
        // What travels is the held-out release (issue 13): a split cut to nothing releases exact sums of
        // zero, which encode and decode like any other; the cut record counts for nothing in it.
        let sums = try HeldOutMetrics.exactSums(before: cut, after: cut, lossClip: 6, gridScale: HeldOutRelease.gridScale)
        XCTAssertEqual(sums, [0, 0, 0])
        let release = try HeldOutMetrics.release(before: cut, after: cut, lossClip: 6, noiseMultiplier: 5,
                                                 gridScale: HeldOutRelease.gridScale)
        let heldOut = HeldOutRelease(lossBefore: release[0], lossAfter: release[1], count: release[2], lossClip: 6,
                                     noiseMultiplier: 5)
        let metrics = ClientRoundMetrics(client: "c", epsilon: 1, delta: 1e-5, epsilonBudget: 8, heldOut: heldOut)
        XCTAssertNoThrow(try MetricsReport(frame: MetricsReport(round: 1, metrics: metrics).frame()))
    }
}
