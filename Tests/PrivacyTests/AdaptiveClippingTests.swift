import Foundation
@testable import Privacy
import XCTest

/// Adaptive clipping for client-level DP-FedAvg (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021, arXiv:1905.03871),
/// checked against the paper's formulas as TensorFlow's implementations state them, computed here directly.
final class AdaptiveClippingTests: XCTestCase {
    /// z_Δ = (z⁻² − (2σ_b)⁻²)^−½: TFF's `DifferentiallyPrivateFactory.gaussian_adaptive` writes
    /// `value_noise_multiplier = (noise_multiplier**-2 - (2 * clipped_count_stddev)**-2)**-0.5`; with its default
    /// σ_b = 0.05·m for m = 100 clients a round (σ_b 5) and z = 1 that is (1 − 0.01)^−½ = 1.0050378152592119. The two
    /// parts recompose to z (one Gaussian mechanism), and a σ_b at or below z/2 is refused (no noise left for the update).
    func testTheUpdateNoiseMultiplierIsTheSplitOfZ() throws {
        XCTAssertEqual(try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: 1, countNoiseMultiplier: 5),
                       1.0050378152592119, accuracy: 1e-15)
        for (z, sigmaB) in [(1.0, 5.0), (1.4259, 2.0), (0.7, 0.36), (3, 40)] {
            let zDelta = try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: z, countNoiseMultiplier: sigmaB)
            XCTAssertGreaterThan(zDelta, z, "the update pays for the count")
            XCTAssertEqual(1 / (1 / (zDelta * zDelta) + 1 / (4 * sigmaB * sigmaB)).squareRoot(), z, accuracy: 1e-12 * z)
        }
        XCTAssertThrowsError(try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: 1, countNoiseMultiplier: 0.5))
        XCTAssertThrowsError(try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: 1, countNoiseMultiplier: .nan))
        XCTAssertThrowsError(try ClientLevelDP.AdaptiveClipping(targetQuantile: 1, learningRate: 0.2, countNoiseMultiplier: 2))
        XCTAssertThrowsError(try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0, countNoiseMultiplier: 2))
        XCTAssertNoThrow(try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2))
    }

    /// TensorFlow Privacy's `QuantileEstimatorQuery` with `geometric_update`: b̄ = clamp(noised shifted mean + ½, 0, 1),
    /// S' = S·exp(−η(b̄ − γ)), evaluated here by hand: S 0.1, γ 0.5, η 0.2 and b̄ 0.8 give 0.1·e^−0.06 = 0.0941764534;
    /// b̄ 0.2 gives 0.1·e^0.06. The shifted sum 1 over q·N 4 is b̄ 0.75; ±10 clamp to 1 and 0.
    func testTheGeometricUpdateAndTheClampedFraction() throws {
        let adaptive = try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2)
        XCTAssertEqual(adaptive.nextClipNorm(0.1, unclippedFraction: 0.8), 0.09417645335842488, accuracy: 1e-15)
        XCTAssertEqual(adaptive.nextClipNorm(0.1, unclippedFraction: 0.2), 0.10618365465453597, accuracy: 1e-15)
        XCTAssertEqual(adaptive.nextClipNorm(0.1, unclippedFraction: 0.5), 0.1, "at the target S stays")
        XCTAssertEqual(ClientLevelDP.AdaptiveClipping.unclippedFraction(noisedShiftedSum: 1, expectedCohort: 4), 0.75)
        XCTAssertEqual(ClientLevelDP.AdaptiveClipping.unclippedFraction(noisedShiftedSum: 10, expectedCohort: 4), 1)
        XCTAssertEqual(ClientLevelDP.AdaptiveClipping.unclippedFraction(noisedShiftedSum: -10, expectedCohort: 4), 0)
    }

    /// On the grid the count coordinate ±h joins each contribution: the preview's sensitivity is √(Δ₂² + h²) in L2 and
    /// Δ₁ + h in L1 over d + 1 coordinates, the shares carry z times it, the update's noise is σ/Δ₂ ≤ z_Δ and the count's
    /// σ/(2h) ≥ σ_b (both within 1/h of the continuous figures), and (Δ₂/σ)² + (h/σ)² = z⁻²: the two together are
    /// exactly the Gaussian mechanism at z that the accountant composes. Control: the same round without the count has
    /// Δ₂ alone and d coordinates.
    func testTheCountCoordinateJoinsTheSensitivity() throws {
        let z = 1.2, sigmaB = 2.0, d = 4096
        let round = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: z, clipNorm: 0.5, dimension: d, cohort: 4,
                                            threshold: 3, assumeHonest: 1, countNoiseMultiplier: sigmaB)
        let plain = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: z, clipNorm: 0.5, dimension: d, cohort: 4,
                                            threshold: 3, assumeHonest: 1)
        let preview = round.preview
        let h = try XCTUnwrap(preview.countHalfWidth)
        let update = preview.updateSensitivity.l2, hd = Double(h)
        XCTAssertEqual(update, 0.5 * round.scale + Double(d).squareRoot(), accuracy: 1e-9 * update, "Δ₂ = c̃ + √d")
        XCTAssertEqual(preview.sensitivity.l2, (update * update + hd * hd).squareRoot(), accuracy: 1e-9 * update)
        XCTAssertEqual(preview.sensitivity.l1, preview.updateSensitivity.l1 + hd, accuracy: 1e-9 * preview.sensitivity.l1)
        XCTAssertEqual(preview.assumed.dimension, d + 1)
        XCTAssertEqual(preview.updateDimension, d)
        let sigma = round.shareSigma * 3.0.squareRoot()
        XCTAssertEqual(sigma, z * preview.sensitivity.l2, accuracy: 1e-9 * sigma)
        XCTAssertEqual((update / sigma) * (update / sigma) + (hd / sigma) * (hd / sigma), 1 / (z * z), accuracy: 1e-12)
        let zDelta = try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: z, countNoiseMultiplier: sigmaB)
        let noise = try XCTUnwrap(preview.adaptiveNoise)
        XCTAssertLessThanOrEqual(noise.update, zDelta)
        XCTAssertEqual(noise.update, zDelta, accuracy: zDelta / hd)
        XCTAssertGreaterThanOrEqual(noise.count, sigmaB)
        XCTAssertEqual(noise.count, sigmaB, accuracy: 2 * sigmaB / hd)
        XCTAssertNil(plain.preview.countHalfWidth)
        XCTAssertEqual(plain.preview.assumed.dimension, d, "control")
        XCTAssertEqual(plain.preview.sensitivity.l2, plain.preview.updateSensitivity.l2, "control")
        XCTAssertLessThanOrEqual(round.preview.wrapProbability, DistributedPlanPreview.wrapTarget)
        // The accountant's check (KLS 2021, Theorem 1) passes at z with the count in, as it does without it.
        XCTAssertNoThrow(try ClientLevelDP.checkAccountedNoise(round, noiseMultiplier: z))
    }

    /// σ_b just above z/2 makes h wider than the scaled clip c̃; the scale is then chosen so that the wider coordinate
    /// still wraps with probability at most the target (the loop in `DistributedRound`): checked by recomputing the
    /// bound at ⌈max(c̃, h)⌉ over d + 1 coordinates.
    func testAWideCountCoordinateStillMeetsTheWrapTarget() throws {
        let z = 1.0
        let round = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: z, clipNorm: 0.01, dimension: 64, cohort: 8,
                                            threshold: 6, assumeHonest: 1, countNoiseMultiplier: 0.5001)
        let h = Double(try XCTUnwrap(round.preview.countHalfWidth))
        let scaledClip = 0.01 * round.scale
        XCTAssertGreaterThan(h, scaledClip, "the case this test is for")
        let p = try ModularWrap.probability(modulusBits: 32, scaledClip: max(scaledClip, h), dimension: 65, contributions: 8,
                                            shares: 8, shareSigma: round.shareSigma)
        XCTAssertLessThanOrEqual(p, DistributedPlanPreview.wrapTarget)
        XCTAssertEqual(round.preview.wrapProbability, p)
    }

    /// Four clients mask a small update each with the count coordinate; the modular sum's count word over 2h is
    /// Σ(b − ½) plus the shares' noise in bits: over 300 rounds its mean is within 4 standard errors of Σ(b − ½) (1 with
    /// three updates under S and one over, −1 with one under and three over) and its variance within 25% of the count
    /// noise σ/(2h)² (the sample variance's standard error is 8%). The update's words still decode to the clipped sum
    /// (mean residual within 6 standard errors). Control: the two cases' means are apart by more than 8 standard
    /// errors, so a bit sent the wrong way round (b for ‖Δ‖ > S) fails both (seen failing so, in `maskedWords`).
    func testTheCountWordDecodesToTheNoisedUnclippedCount() throws {
        let d = 16, s = 1.0, z = 1.0, sigmaB = 2.0, trials = 300
        let round = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: z, clipNorm: s, dimension: d, cohort: 4,
                                            threshold: 4, assumeHonest: 1, countNoiseMultiplier: sigmaB)
        let h = Double(try XCTUnwrap(round.preview.countHalfWidth))
        let countSD = try XCTUnwrap(round.preview.adaptiveNoise).count
        func constant(norm: Double) -> [Double] { [Double](repeating: norm / Double(d).squareRoot(), count: d) }
        func shifted(norms: [Double]) throws -> (mean: Double, variance: Double, updateMean: Double) {
            var counts: [Double] = [], updates: [Double] = []
            for _ in 0..<trials {
                var sum = [UInt32](repeating: 0, count: d + 1)
                for norm in norms {
                    let words = try ClientLevelDP.maskedWords(update: constant(norm: norm), clipNorm: s, round: round).words
                    XCTAssertEqual(words.count, d + 1)
                    for i in 0...d { sum[i] = sum[i] &+ words[i] }
                }
                counts.append(Double(Int32(bitPattern: sum[d])) / (2 * h))
                updates.append(ClientLevelDP.estimate(modularSum: sum, round: round, expectedCohort: 1).reduce(0, +) / Double(d))
                let fraction = try XCTUnwrap(ClientLevelDP.unclippedFraction(modularSum: sum, round: round, expectedCohort: 4))
                XCTAssertEqual(fraction, min(1, max(0, counts.last! / 4 + 0.5)), accuracy: 1e-12)
            }
            let mean = counts.reduce(0, +) / Double(trials)
            let variance = counts.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(trials - 1)
            return (mean, variance, updates.reduce(0, +) / Double(trials))
        }
        let standardError = countSD / Double(trials).squareRoot()
        let mostlyUnder = try shifted(norms: [0.2, 0.5, 0.9, 3])
        let mostlyOver = try shifted(norms: [0.2, 1.5, 2, 3])
        XCTAssertEqual(mostlyUnder.mean, 1, accuracy: 4 * standardError)
        XCTAssertEqual(mostlyOver.mean, -1, accuracy: 4 * standardError)
        XCTAssertGreaterThan(mostlyUnder.mean - mostlyOver.mean, 8 * standardError, "control: the two cases are told apart")
        for variance in [mostlyUnder.variance, mostlyOver.variance] {
            XCTAssertEqual(variance, countSD * countSD, accuracy: 0.25 * countSD * countSD)
        }
        // The update part: each constant update clipped to S has per-coordinate value min(norm, S)/√d.
        let updateSD = round.shareSigma * 2 / round.scale / Double(d).squareRoot() / Double(trials).squareRoot()
        let expected = [0.2, 0.5, 0.9, 1.0].reduce(0, +) / Double(d).squareRoot()
        XCTAssertEqual(mostlyUnder.updateMean, expected, accuracy: 6 * updateSD)
    }

    /// The bit must match the round: a share with the count coordinate refuses to be made without a bit, and one
    /// without it refuses a bit.
    func testTheBitIsRequiredExactlyWhenTheRoundHasTheCount() throws {
        let adaptive = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: 1, clipNorm: 1, dimension: 8, cohort: 3, threshold: 3,
                                               assumeHonest: 1, countNoiseMultiplier: 3)
        let plain = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: 1, clipNorm: 1, dimension: 8, cohort: 3, threshold: 3,
                                            assumeHonest: 1)
        let values = [Double](repeating: 0.1, count: 8)
        XCTAssertThrowsError(try adaptive.noisedShare(clippedSum: values))
        XCTAssertThrowsError(try plain.noisedShare(clippedSum: values, unclipped: true))
        XCTAssertEqual(try adaptive.noisedShare(clippedSum: values, unclipped: false).count, 9)
        XCTAssertEqual(try plain.noisedShare(clippedSum: values).count, 8)
    }
}
