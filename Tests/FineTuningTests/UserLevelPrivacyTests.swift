import Foundation
import Kernels
import LanguageModel
import Privacy
import TestSupport
import XCTest
@testable import FineTuning

/// User-level DP-SGD on the tiny-llama fixture: a sampled user's records give one gradient, the sum of
/// the records' gradients clipped as a whole, and the sampling rate (the accountant's q) counts users.
final class UserLevelPrivacyTests: XCTestCase {
    /// Twelve distinct records (the fixture's sequences, cut to lengths 9 to 16) for `users[i]`.
    func fixture(users: [String]) throws -> (LlamaModel, [TokenizedExample]) {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
        let inputs = try Fixtures.json("tiny-llama/reference.json")["input_ids"] as! [[Int]]
        let examples = users.enumerated().map { i, user -> TokenizedExample in
            let ids = Array(inputs[i % inputs.count].prefix(16 - i % 8))
            return TokenizedExample(ids: ids, labels: ids, line: i + 1, user: user)
        }
        return (model, examples)
    }

    /// Alice 1 record, Bob 4, Carol 7, interleaved as a file would have them.
    let threeUsers = ["bob", "carol", "alice", "bob", "carol", "carol", "bob", "carol", "carol", "bob", "carol", "carol"]

    func configuration(unit: PrivacyUnit, clip: Double, batchSize: Int = 1) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.steps = 3
        c.batchSize = batchSize
        c.learningRate = 1e-2
        c.privacyUnit = unit
        c.privacy = DifferentialPrivacy(noiseMultiplier: 1.0, clipNorm: clip, delta: 1e-5)
        return c
    }

    /// One record's gradient on its own (a fresh buffer), in doubles.
    func gradient(_ model: LlamaModel, _ lora: TrainableLoRA, _ example: TokenizedExample) throws -> [Double] {
        var g = [Float](repeating: 0, count: lora.count)
        _ = try g.withUnsafeMutableBufferPointer {
            try model.lossAndGradient(tokens: example.ids, labels: example.labels, lora: lora, gradient: $0.baseAddress!,
                                      precision: model.precision)
        }
        return g.map(Double.init)
    }

    static func norm(_ v: [Double]) -> Double { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }
    static func clip(_ v: [Double], _ c: Double) -> [Double] { v.map { $0 * min(1, c / norm(v)) } }
    static func add(_ a: [Double], _ b: [Double]) -> [Double] { a.isEmpty ? b : zip(a, b).map(+) }

    /// The trainer's clipped sum over sampled users equals Σ_users clip(Σ_records g), each record's gradient
    /// computed on its own here; the record-level alternative Σ clip(g) differs (the clip binds).
    func testUserGradientIsTheClippedSumOfItsRecordsGradients() throws {
        let (model, examples) = try fixture(users: threeUsers)
        let probe = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .user, clip: 1))
        XCTAssertEqual(probe.units, [[0, 3, 6, 9], [1, 4, 5, 7, 8, 10, 11], [2]], "users in order of first appearance")
        let perRecord = try examples.map { try gradient(model, probe.lora, $0) }
        let userSums = probe.units.map { $0.reduce([Double]()) { Self.add($0, perRecord[$1]) } }
        // C below every user's summed norm, so every user is clipped.
        let clip = 0.5 * userSums.map(Self.norm).min()!
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .user, clip: clip))

        for sampled in [[0, 1, 2], [2, 0], [1]] {
            let sums = try trainer.stepSums(units: sampled, step: 0)
            let dpStep = try XCTUnwrap(sums.dpStep)
            XCTAssertEqual(dpStep.examples, sampled.count, "one contribution per user, not per record")
            XCTAssertEqual(dpStep.clipped, sampled.count)
            XCTAssertEqual(sums.examples, sampled.map { trainer.units[$0].count }.reduce(0, +), "every record of each user")
            let expected = sampled.reduce([Double]()) { Self.add($0, Self.clip(userSums[$1], clip)) }
            let scale = expected.map(abs).max()!
            // The step sums on its fixed-point grid: each contribution is rounded by at most half a step.
            let tolerance = Double(sampled.count) * 0.5 / dpStep.grid.scale + 1e-5 * scale
            let worst = zip(dpStep.decodedSum, expected).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, tolerance, "users \(sampled): worst difference \(worst) against \(scale)")
            XCTAssertLessThanOrEqual(Self.norm(dpStep.decodedSum),
                                     Double(sampled.count) * Double(dpStep.grid.sensitivity) / dpStep.grid.scale * (1 + 1e-5))

            // Positive control: clipping each record and summing is another number, which this check tells apart.
            let recordLevel = sampled.flatMap { trainer.units[$0] }.reduce([Double]()) { Self.add($0, Self.clip(perRecord[$1], clip)) }
            let apart = zip(recordLevel, expected).map { abs($0 - $1) }.max()!
            print("users \(sampled): grid difference \(worst), tolerance \(tolerance), record-level clipping apart by \(apart)")
            XCTAssertGreaterThan(apart, 10 * tolerance, "record-level clipping must differ for users \(sampled)")
        }

        // The same data at unit record: each record is its own unit, clipped alone.
        let records = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .record, clip: clip))
        let sums = try XCTUnwrap(try records.stepSums(units: [0, 3], step: 0).dpStep)
        let expected = Self.add(Self.clip(perRecord[0], clip), Self.clip(perRecord[3], clip))
        XCTAssertEqual(sums.examples, 2)
        XCTAssertLessThan(zip(sums.decodedSum, expected).map { abs($0 - $1) }.max()!,
                          2 * 0.5 / sums.grid.scale + 1e-5 * expected.map(abs).max()!)
    }

    /// q = expected users per step / users, and that q is what the ledger and the accountant get.
    func testTheAccountantsSamplingUnitIsTheUser() throws {
        let (model, examples) = try fixture(users: threeUsers)
        let users = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .user, clip: 1))
        XCTAssertEqual(users.samplingRate, 1.0 / 3, accuracy: 1e-15, "1 expected user of 3")
        XCTAssertEqual(users.mechanism, .dpsgd(samplingRate: users.samplingRate, noiseMultiplier: 1, steps: 3))
        // Positive control: the same data and batch at unit record samples 1 of 12.
        let records = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .record, clip: 1))
        XCTAssertEqual(records.samplingRate, 1.0 / 12, accuracy: 1e-15)

        let result = try users.train()
        XCTAssertEqual(result.privacyUnit, .user)
        XCTAssertEqual(result.samplingUnits, 3)
        let atUsers = try PrivacyAccounting.epsilon(steps: [.dpsgd(samplingRate: 1.0 / 3, noiseMultiplier: 1, steps: 3)],
                                                    delta: 1e-5, accountant: .rdp)
        let atRecords = try PrivacyAccounting.epsilon(steps: [.dpsgd(samplingRate: 1.0 / 12, noiseMultiplier: 1, steps: 3)],
                                                      delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(try XCTUnwrap(result.epsilon), atUsers, accuracy: 1e-12)
        XCTAssertGreaterThan(atUsers, 1.5 * atRecords, "ε per user is not ε per record")

        // A federation's plan fixes q; it is then the rate per user.
        var planned = configuration(unit: .user, clip: 1)
        planned.samplingRate = 0.5
        XCTAssertEqual(try LoRATrainer(model: model, examples: examples, configuration: planned).mechanism?.samplingRate, 0.5)
    }

    /// One user holding every record: q = 1 (one user, one expected per step), and training runs.
    func testOneUserHoldingAllRecordsTrainsWithQOfOne() throws {
        let (model, examples) = try fixture(users: [String](repeating: "patient-7", count: 12))
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .user, clip: 1))
        XCTAssertEqual(trainer.units.count, 1)
        XCTAssertEqual(trainer.samplingRate, 1)
        let result = try trainer.train()
        XCTAssertEqual(result.steps, 3)
        XCTAssertEqual(result.samplingRate, 1)
        XCTAssertEqual(result.samplingUnits, 1)
        XCTAssertTrue(result.lora.parameters.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(result.tokens, 0)
        let expected = try PrivacyAccounting.epsilon(steps: [.dpsgd(samplingRate: 1, noiseMultiplier: 1, steps: 3)],
                                                     delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(try XCTUnwrap(result.epsilon), expected, accuracy: 1e-12)
        // Two expected users per step cannot be drawn from one.
        XCTAssertThrowsError(try LoRATrainer(model: model, examples: examples,
                                             configuration: configuration(unit: .user, clip: 1, batchSize: 2))) {
            XCTAssertTrue("\($0)".contains("exceeds the 1 users"), "\($0)")
        }
    }

    /// A record without a user under unit user is an error naming its line; the cap on records per user
    /// per step draws that many distinct records of the user, each of them in turn.
    func testMissingUsersAndTheCapOnRecordsPerUser() throws {
        var (model, examples) = try fixture(users: threeUsers)
        examples[4].user = nil
        XCTAssertThrowsError(try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .user, clip: 1))) {
            XCTAssertTrue("\($0)".contains("line 5 has no \"user\""), "\($0)")
        }
        XCTAssertNoThrow(try LoRATrainer(model: model, examples: examples, configuration: configuration(unit: .record, clip: 1)))

        (model, examples) = try fixture(users: [String](repeating: "u", count: 12))
        var capped = configuration(unit: .user, clip: 1)
        capped.recordsPerUserPerStep = 5
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: capped)
        var seen = Set<Int>()
        for _ in 0..<60 {
            let drawn = trainer.stepRecords(ofUnit: 0)
            XCTAssertEqual(drawn.count, 5)
            XCTAssertEqual(Set(drawn).count, 5, "without replacement")
            seen.formUnion(drawn)
        }
        // Each record is missed by one draw with probability 7/12; by 60 draws, about 1e-14.
        XCTAssertEqual(seen, Set(0..<12))
        let sums = try XCTUnwrap(try trainer.stepSums(units: [0], step: 0).dpStep)
        XCTAssertEqual(sums.examples, 1, "still one contribution")
        XCTAssertLessThanOrEqual(Self.norm(sums.decodedSum), Double(sums.grid.sensitivity) / sums.grid.scale * (1 + 1e-6))
        XCTAssertEqual(DPSGDStep.uniformSubset(count: 3, size: 5), [0, 1, 2], "a user under the cap gives every record")
    }
}
