import Foundation
import Kernels
import LanguageModel
import ModelFormats
import Privacy
import TestSupport
import Tokenizer
import XCTest
@testable import FineTuning

/// Canary exposure (Carlini et al. 2019) on hand-made losses and on the tiny-llama fixture, the
/// sampled estimate against the exact value, and the canaries' layout under SmolLM2's real tokenizer. The
/// one-run audit on real training runs, with its positive controls, is in PrivacyAuditControlTests.
final class CanaryTests: XCTestCase {
    // MARK: exposure from losses

    func testExactExposureFromHandMadeLosses() throws {
        // |R| = 8; the secret is the most likely: rank 1, exposure log2 8 = 3 bits.
        let best = try Exposure.fromLosses(secretLoss: 1, candidateLosses: [2, 3, 4, 5, 6, 7, 8], spaceSize: 8)
        XCTAssertTrue(best.isExact)
        XCTAssertEqual(best.rank, 1)
        XCTAssertEqual(best.bits, 3, accuracy: 1e-12)
        // Three candidates beat it and one ties (ties count against the secret): rank 5, log2 8 − log2 5.
        let middle = try Exposure.fromLosses(secretLoss: 4, candidateLosses: [1, 2, 3, 4, 5, 6, 7], spaceSize: 8)
        XCTAssertEqual(middle.rank, 5)
        XCTAssertEqual(middle.bits, 3 - log2(5.0), accuracy: 1e-12)
        // The least likely: rank 8, exposure 0.
        let worst = try Exposure.fromLosses(secretLoss: 9, candidateLosses: [1, 2, 3, 4, 5, 6, 7], spaceSize: 8)
        XCTAssertEqual(worst.bits, 0, accuracy: 1e-12)
        XCTAssertEqual(worst.lowerBits, worst.upperBits)
    }

    func testSampledExposureFromHandMadeLosses() throws {
        // |R| = 1001; 100 sampled others of which 10 are at most the secret's loss: rank 1 + 1000 · 0.1 = 101.
        let sample = (0..<100).map { $0 < 10 ? 0.5 : 2.0 }
        let estimate = try Exposure.fromLosses(secretLoss: 1, candidateLosses: sample, spaceSize: 1001, confidence: 0.95)
        XCTAssertFalse(estimate.isExact)
        XCTAssertEqual(estimate.rank, 101, accuracy: 1e-9)
        XCTAssertEqual(estimate.bits, log2(1001.0) - log2(101.0), accuracy: 1e-12)
        // The interval comes from the Clopper–Pearson interval on 10/100 (0.04900 to 0.17622).
        XCTAssertEqual(estimate.upperBits, log2(1001.0) - log2(1 + 1000 * 0.04900), accuracy: 2e-3)
        XCTAssertEqual(estimate.lowerBits, log2(1001.0) - log2(1 + 1000 * 0.17622), accuracy: 2e-3)
        XCTAssertLessThan(estimate.lowerBits, estimate.bits)
        XCTAssertGreaterThan(estimate.upperBits, estimate.bits)
        // No sampled candidate beats the secret: the point estimate is the maximum, the interval says
        // how far down the truth could be.
        let top = try Exposure.fromLosses(secretLoss: 0, candidateLosses: sample, spaceSize: 1001)
        XCTAssertEqual(top.bits, log2(1001.0), accuracy: 1e-12)
        XCTAssertEqual(top.lowerBits, log2(1001.0) - log2(1 + 1000 * (1 - pow(0.025, 0.01))), accuracy: 1e-6)
    }

    func testBadLossesAreRefused() {
        XCTAssertThrowsError(try Exposure.fromLosses(secretLoss: .nan, candidateLosses: [1], spaceSize: 2))
        XCTAssertThrowsError(try Exposure.fromLosses(secretLoss: 1, candidateLosses: [1, .infinity], spaceSize: 4))
        XCTAssertThrowsError(try Exposure.fromLosses(secretLoss: 1, candidateLosses: [1, 2, 3], spaceSize: 3)) { error in
            XCTAssertTrue("\(error)".contains("only 2 other candidates"), "\(error)")
        }
        XCTAssertThrowsError(try Exposure.fromLosses(secretLoss: 1, candidateLosses: [], spaceSize: 10))
    }

    // MARK: canary sets

    func testGeneratedCanariesAreDistinctAndPlantedKTimes() throws {
        let set = try CanarySet.generate(count: 20, digits: 3, repetitions: 4)
        XCTAssertEqual(Set(set.canaries).count, 20)
        XCTAssertTrue(set.canaries.allSatisfy { $0.digits.count == 3 && $0.digits.allSatisfy { $0 <= 9 } })
        XCTAssertEqual(set.spaceSize, 1000)
        let lines = set.records()
        XCTAssertEqual(lines.count, 80)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: String]
        XCTAssertEqual(first?["text"], "My account number is " + set.canaries[0].secret)
        XCTAssertEqual(Set(lines.prefix(4)).count, 1, "the first canary's four copies come first")
        let layout = try CanaryTokenization(prefix: [1, 2, 3], digitPieces: (0...9).map { [100 + $0] })
        let ids = set.records(tokenization: layout)
        let parsed = try Dataset.parse(Data(ids[0].utf8), file: "canaries.jsonl", line: 1, tokenizer: nil, vocabularySize: 512)
        XCTAssertEqual(parsed.ids, layout.tokens(set.canaries[0]))
        XCTAssertEqual(Canary(index: set.canaries[5].index, digits: 3), set.canaries[5])
        XCTAssertThrowsError(try CanarySet.generate(count: 600, digits: 3, repetitions: 1))
        XCTAssertThrowsError(try CanarySet.generate(count: 1, digits: 0, repetitions: 1))
        XCTAssertThrowsError(try CanarySet.generate(count: 1, digits: 3, repetitions: 0))
    }

    func testSmolLM2TokenizerSplitsSpacedDigitsIntoFixedPieces() throws {
        let tokenizer = try BPETokenizer(ggufMetadata: try GGUFFile(url: Fixtures.defaultModel).metadata)
        let layout = try CanaryTokenization.text(phrase: CanarySet.defaultPhrase, tokenizer: tokenizer)
        // Every digit is its own piece, and the records the dataset loader reads give the same tokens.
        XCTAssertEqual(Set(layout.digitPieces).count, 10)
        let set = try CanarySet.generate(count: 5, digits: 6, repetitions: 1)
        for (canary, line) in zip(set.canaries, set.records()) {
            let example = try Dataset.parse(Data(line.utf8), file: "canaries.jsonl", line: 1, tokenizer: tokenizer,
                                            vocabularySize: 49152)
            XCTAssertEqual(example.ids, layout.tokens(canary), "\(set.text(canary))")
            XCTAssertEqual(tokenizer.decode(layout.tokens(canary)).hasSuffix(canary.secret), true)
        }
    }

    // MARK: the tiny model

    func tinyModel() throws -> LlamaModel {
        LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
    }

    /// Two tokens per digit (a shared separator, then the digit), like SmolLM2's " 4" → "Ġ", "4".
    func tinyLayout() throws -> CanaryTokenization {
        try CanaryTokenization(prefix: [1, 57, 203, 311, 42], digitPieces: (0...9).map { [7, 400 + $0] })
    }

    func testExactScoresAreTheModelsOwnScores() throws {
        let model = try tinyModel()
        let layout = try tinyLayout()
        let losses = try CanaryScoring.allLosses(model: model, tokenization: layout, digits: 2)
        XCTAssertEqual(losses.count, 100)
        // Each candidate's loss from the tree walk equals `score` on its full sequence with the phrase masked.
        var worst = 0.0
        for index in 0..<100 {
            let tokens = layout.tokens(Canary(index: index, digits: 2))
            let labels = tokens.enumerated().map { $0.offset < layout.prefix.count ? -100 : $0.element }
            let score = try model.score(tokens: tokens, labels: labels)
            XCTAssertEqual(score.countedTokens, 4)
            worst = max(worst, abs(score.totalLoss - losses[index]))
        }
        XCTAssertLessThan(worst, 1e-3, "largest difference between the tree walk and score()")
        // The batched scorer agrees too.
        let some = (0..<100).filter { $0 % 7 == 0 }.map { Canary(index: $0, digits: 2) }
        let batched = try CanaryScoring.losses(model: model, tokenization: layout, candidates: some)
        for (canary, loss) in zip(some, batched) { XCTAssertEqual(loss, losses[canary.index], accuracy: 1e-3) }
        // Exposure's rank is the count of candidates at most as likely as the secret, by the model's own scores.
        let set = try CanarySet(phrase: "tiny", digits: 2, repetitions: 1,
                                canaries: [Canary(digits: [3, 1]), Canary(digits: [9, 0])])
        let exposures = try Exposure.exact(model: model, tokenization: layout, set: set)
        for (canary, exposure) in zip(set.canaries, exposures) {
            let rank = losses.filter { $0 <= losses[canary.index] }.count
            XCTAssertEqual(exposure.rank, Double(rank))
            XCTAssertEqual(exposure.bits, log2(100.0) - log2(Double(rank)), accuracy: 1e-12)
            XCTAssertEqual(exposure.secretLoss, losses[canary.index])
        }
    }

    func testTrainingWithoutPrivacyOnACanaryMakesItTheMostLikely() throws {
        let model = try tinyModel()
        let layout = try tinyLayout()
        let set = try CanarySet.generate(count: 1, digits: 2, repetitions: 8)
        let before = try Exposure.exact(model: model, tokenization: layout, set: set)[0]
        let reference = try Fixtures.json("tiny-llama/reference.json")
        let filler = (reference["input_ids"] as! [[Int]]).enumerated().map { TokenizedExample(ids: $1, labels: $1, line: $0 + 1) }
        var configuration = TrainingConfiguration()
        configuration.steps = 40
        configuration.batchSize = 4
        configuration.learningRate = 2e-2
        configuration.targets = [.qProj, .vProj, .downProj]
        let result = try LoRATrainer(model: model, examples: set.planted(into: filler, tokenization: layout),
                                     configuration: configuration).train()
        model.setAdapter(result.lora.adapter())
        let after = try Exposure.exact(model: model, tokenization: layout, set: set)[0]
        XCTAssertEqual(after.rank, 1, "the memorised secret should be the most likely of the 100 (was rank \(before.rank))")
        XCTAssertEqual(after.bits, log2(100.0), accuracy: 1e-12)
    }

    func testSampledEstimateAgreesWithTheExactValue() throws {
        let model = try tinyModel()
        let layout = try tinyLayout()
        let set = try CanarySet.generate(count: 4, digits: 3, repetitions: 1)
        let exact = try Exposure.exact(model: model, tokenization: layout, set: set)
        let sampled = try Exposure.estimated(model: model, tokenization: layout, set: set, samples: 300, confidence: 0.999)
        for (truth, estimate) in zip(exact, sampled) {
            XCTAssertTrue(truth.isExact)
            XCTAssertFalse(estimate.isExact)
            XCTAssertEqual(estimate.secretLoss, truth.secretLoss, accuracy: 1e-3)
            XCTAssertGreaterThanOrEqual(estimate.candidatesScored, 299)
            // The exact value lies in the 99.9% interval (fails by chance once in a thousand runs at most).
            XCTAssertLessThanOrEqual(estimate.lowerBits, truth.bits + 1e-9, "exact \(truth.bits), estimate \(estimate)")
            XCTAssertGreaterThanOrEqual(estimate.upperBits, truth.bits - 1e-9, "exact \(truth.bits), estimate \(estimate)")
            // The point estimate of the rank is close in relative terms.
            XCTAssertEqual(estimate.rank / truth.rank, 1, accuracy: truth.rank > 50 ? 0.6 : 20, "\(truth.rank) vs \(estimate.rank)")
        }
        // A sample as large as the space is the exact computation.
        let full = try Exposure.estimated(model: model, tokenization: layout, set: set, samples: 999)
        XCTAssertEqual(full, exact)
    }
}

extension CanaryTests {
    func testCanariesRoundTripThroughJSONAndBadOnesAreRefused() throws {
        let audit = try CanaryAudit.generate(count: 6, digits: 5)
        let data = try JSONEncoder().encode(audit)
        XCTAssertEqual(try JSONDecoder().decode(CanaryAudit.self, from: data), audit)
        let bad = #"{"phrase": "x", "digits": 2, "repetitions": 1, "canaries": [[1, 2], [3, 12]]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(CanarySet.self, from: Data(bad.utf8)))
        let short = #"{"phrase": "x", "digits": 3, "repetitions": 1, "canaries": [[1, 2]]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(CanarySet.self, from: Data(short.utf8))) { error in
            XCTAssertTrue("\(error)".contains("canary 0 has 2 digits"), "\(error)")
        }
        let twice = #"{"set": {"phrase": "x", "digits": 1, "repetitions": 2, "canaries": [[1]]}, "included": [true]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(CanaryAudit.self, from: Data(twice.utf8)))
    }
}
