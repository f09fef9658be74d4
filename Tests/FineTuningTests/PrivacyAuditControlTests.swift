import Foundation
import Kernels
import LanguageModel
import ModelFormats
import Privacy
import TestSupport
import XCTest
@testable import FineTuning

/// The one-run audit (Steinke, Nasr and Jagielski 2023) run on our real trainer with the tiny-llama
/// fixture, with its positive controls: a non-private run must show a bound clearly above zero, a run
/// whose noise is secretly divided by 1000 must show a bound above the ε its ledger claims, and an
/// honest DP run must stay at or below its ε, asserted only because the audit has the power to exceed it.
///
/// Sizes: 200 canaries of 8 one-token digits, half included, 300 steps at expected batch 16 (each
/// included canary seen about 47 times): non-private and σ/1000 runs gave 58–60 of 60 guesses right
/// (ε ≥ 2.2–2.97, power 2.97), honest runs 25–38 of 60 (ε ≥ 0–0.08). At 100 steps the σ/1000 run gave
/// only 49/60 (ε ≥ 0.92 < 1) and its assertion failed: the check can fail. About 4 s a run.
final class PrivacyAuditControlTests: XCTestCase {
    /// The claimed ε of the DP runs: small, so that 200 canaries and 60 guesses have the power to refute it.
    static let claimedEpsilon = 1.0
    static let delta = 1e-5
    static let canaries = 200
    static let guesses = 60
    static let steps = 300
    static let batch = 16

    enum Noise { case none, honest, divided(by: Double) }

    struct Outcome {
        var audit: OneRunAudit
        /// The ε the run's own accounting reports (nil without DP).
        var claimed: Double?
    }

    /// What one audited training run uses: the model, the canaries' layout and the training sizes.
    struct Setup {
        var model: LlamaModel
        var filler: [TokenizedExample]
        var layout: CanaryTokenization
        var canaries = PrivacyAuditControlTests.canaries
        var digits = 8
        var guesses = PrivacyAuditControlTests.guesses
        var steps = PrivacyAuditControlTests.steps
        var batch = PrivacyAuditControlTests.batch
        var learningRate = 2e-2
        var targets: [ProjectionModule] = [.qProj, .vProj, .downProj]
    }

    /// The tiny-llama fixture with one token per digit (ids 400…409) after a fixed five-token phrase.
    func tinySetup() throws -> Setup {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 1))
        let layout = try CanaryTokenization(prefix: [1, 57, 203, 311, 42], digitPieces: (0...9).map { [400 + $0] })
        let reference = try Fixtures.json("tiny-llama/reference.json")
        let filler = (reference["input_ids"] as! [[Int]]).enumerated().map { TokenizedExample(ids: $1, labels: $1, line: $0 + 1) }
        return Setup(model: model, filler: filler, layout: layout)
    }

    /// Plants fresh audit canaries (libsodium bits), scores them on the base model, trains with the
    /// given noise, and audits the result against the base scores.
    func run(_ noise: Noise, _ setup: Setup? = nil) throws -> Outcome {
        let setup = try setup ?? tinySetup()
        let model = setup.model
        model.setAdapter(nil)
        let audit = try CanaryAudit.generate(count: setup.canaries, digits: setup.digits)
        let base = try audit.losses(model: model, tokenization: setup.layout)
        let data = setup.filler + audit.examples(tokenization: setup.layout, firstLine: setup.filler.count)
        var configuration = TrainingConfiguration()
        configuration.steps = setup.steps
        configuration.batchSize = setup.batch
        configuration.learningRate = setup.learningRate
        configuration.decay = .constant
        configuration.targets = setup.targets
        switch noise {
        case .none: break
        case .honest, .divided:
            let q = Double(setup.batch) / Double(data.count)
            let sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: Self.claimedEpsilon, samplingRate: q,
                                                              steps: setup.steps, delta: Self.delta, accountant: .rdp,
                                                              noise: .discreteGaussian)
            configuration.privacy = DifferentialPrivacy(noiseMultiplier: sigma, clipNorm: 1, delta: Self.delta)
            if case .divided(let divisor) = noise { configuration.privacy!.auditTestNoiseDivisor = divisor }
        }
        let result = try LoRATrainer(model: model, examples: data, configuration: configuration).train()
        model.setAdapter(result.lora.adapter())
        let outcome = try audit.audit(model: model, tokenization: setup.layout, baseLosses: base, guesses: setup.guesses,
                                      delta: configuration.privacy == nil ? 0 : Self.delta)
        model.setAdapter(nil)
        print("audit \(noise): \(outcome.correct)/\(outcome.guesses) right of \(outcome.canaries), ε ≥ \(outcome.epsilonLowerBound), "
              + "power \(outcome.power), claimed \(result.epsilon.map { "\($0)" } ?? "∞"), σ \(configuration.privacy?.noiseMultiplier ?? 0), "
              + "train loss \(result.losses.prefix(10).reduce(0, +) / 10) → \(result.trainLoss), \(result.seconds) s")
        return Outcome(audit: outcome, claimed: result.epsilon)
    }

    func testTheAuditHasThePowerToRefuteTheClaimedEpsilon() {
        let power = EmpiricalPrivacy.power(canaries: Self.canaries, guesses: Self.guesses, delta: Self.delta)
        XCTAssertGreaterThan(power, 2 * Self.claimedEpsilon, "the controls below need an audit able to refute ε = \(Self.claimedEpsilon)")
    }

    func testNonPrivateRunShowsABoundClearlyAboveZero() throws {
        let outcome = try run(.none)
        XCTAssertNil(outcome.claimed)
        XCTAssertGreaterThan(outcome.audit.epsilonLowerBound, 0.5,
                             "a non-private run memorises its canaries: \(outcome.audit.correct)/\(outcome.audit.guesses) right")
    }

    func testBrokenNoiseIsCaughtAboveTheClaimedEpsilon() throws {
        let outcome = try run(.divided(by: 1000))
        let claimed = try XCTUnwrap(outcome.claimed)
        XCTAssertEqual(claimed, Self.claimedEpsilon, accuracy: 0.05, "the ledger claims the original σ's ε")
        XCTAssertGreaterThan(outcome.audit.power, claimed)
        XCTAssertEqual(outcome.audit.verdict(claimedEpsilon: claimed), .refuted,
                       "σ/1000 must be caught: ε ≥ \(outcome.audit.epsilonLowerBound) from \(outcome.audit.correct)/\(outcome.audit.guesses)")
    }

    func testHonestDPRunStaysWithinItsEpsilonWithPowerToFail() throws {
        let outcome = try run(.honest)
        let claimed = try XCTUnwrap(outcome.claimed)
        // The check is real only because the audit could have printed more than the claim.
        XCTAssertEqual(outcome.audit.verdict(claimedEpsilon: claimed), .consistent,
                       "empirical ε ≥ \(outcome.audit.epsilonLowerBound) from \(outcome.audit.correct)/\(outcome.audit.guesses) "
                       + "against the accountant's \(claimed) (power \(outcome.audit.power))")
    }
}
