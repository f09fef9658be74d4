import Foundation
import XCTest
@testable import Privacy

/// The DP-SGD aggregation on its fixed-point grid: exact clipping, the rounding bound, the grid's choice,
/// discrete Gaussian noise of the stated scale lying on the grid, the overflow refusal, and Poisson sampling.
final class DPSGDTests: XCTestCase {
    func testClippingScalesOnlyLargeGradients() throws {
        var step = try DPSGDStep(parameterCount: 3, clipNorm: 1, noiseMultiplier: 1)
        let large: [Float] = [6, 8, 0]     // norm 10 → scaled to norm 1: (0.6, 0.8, 0)
        let small: [Float] = [0, 0, 0.5]   // norm 0.5 → unchanged
        XCTAssertEqual(try large.withUnsafeBufferPointer { try step.add($0) }!, 10, accuracy: 1e-12)
        XCTAssertEqual(try small.withUnsafeBufferPointer { try step.add($0) }!, 0.5, accuracy: 1e-12)
        let halfStep = 0.5 / step.grid.scale  // nearest rounding moves each coordinate by at most half a grid step
        XCTAssertEqual(step.decodedSum[0], 0.6, accuracy: halfStep)
        XCTAssertEqual(step.decodedSum[1], 0.8, accuracy: halfStep)
        XCTAssertEqual(step.decodedSum[2], 0.5, accuracy: halfStep)
        XCTAssertEqual(step.examples, 2)
        XCTAssertEqual(step.clipped, 1)
        let broken: [Float] = [.nan, 1, 1]
        XCTAssertNil(try broken.withUnsafeBufferPointer { try step.add($0) }, "a non-finite gradient is refused")
        XCTAssertEqual(step.examples, 2)
    }

    /// The grid is the coarsest power of two whose rounding inflates the sensitivity by at most 1%:
    /// Δ = ⌈C·2^f + √d/2⌉ + 1 ≤ 1.01·C·2^f, and f − 1 would not do. The effective noise multiplier
    /// σ_int/Δ is never below the plan's σ (which is what the ledger is charged), and only by rounding above.
    func testGridIsTheCoarsestWithinOnePercent() throws {
        for d in [3, 1_000, 200_000, 1_000_000, 50_000_000] {
            for clip in [0.05, 1, 7.5] {
                let grid = try DPSGDGrid(parameterCount: d, clipNorm: clip, noiseMultiplier: 1.1)
                let delta = { (f: Int) in (clip * pow(2, Double(f)) + Double(d).squareRoot() / 2).rounded(.up) + 1 }
                XCTAssertEqual(Double(grid.sensitivity), delta(grid.fractionalBits), "d \(d) C \(clip)")
                XCTAssertLessThanOrEqual(grid.sensitivityInflation, 1.01, "d \(d) C \(clip)")
                XCTAssertGreaterThan(delta(grid.fractionalBits - 1) / (clip * pow(2, Double(grid.fractionalBits - 1))), 1.01,
                                     "d \(d) C \(clip): a coarser grid would also do")
                XCTAssertGreaterThanOrEqual(grid.effectiveNoiseMultiplier, 1.1)
                XCTAssertEqual(grid.effectiveNoiseMultiplier, 1.1, accuracy: 1.1e-12)
                XCTAssertLessThanOrEqual(Double(grid.maximumExamples) * Double(grid.sensitivity), 0x1p62)
            }
        }
        // d = 10⁶, C = 1: 2^f = 65536 (50 100 ≤ C·2^f), Δ = 66037, σ_int = 1.1·66038.
        let grid = try DPSGDGrid(parameterCount: 1_000_000, clipNorm: 1, noiseMultiplier: 1.1)
        XCTAssertEqual(grid.fractionalBits, 16)
        XCTAssertEqual(grid.sensitivity, 65_536 + 500 + 1)
    }

    /// Invalid parameters throw, naming the parameter; σ·Δ beyond the discrete Gaussian's range names
    /// the largest σ this parameter count allows.
    func testGridRefusesInvalidParameters() {
        for (d, clip, sigma, name) in [(0, 1.0, 1.0, "parameter count"), (10, 0, 1, "clip norm"), (10, .nan, 1, "clip norm"),
                                       (10, 1, 0, "noise multiplier"), (10, 1, .infinity, "noise multiplier"),
                                       (1_000_000, 1, 1_000, "noise multiplier")] {
            XCTAssertThrowsError(try DPSGDGrid(parameterCount: d, clipNorm: clip, noiseMultiplier: sigma)) { error in
                XCTAssertEqual((error as? PrivacyParameterError)?.name, name, "\(error)")
            }
        }
        XCTAssertNoThrow(try DPSGDGrid(parameterCount: 1_000_000, clipNorm: 1, noiseMultiplier: 250))
    }

    /// Rounding: every coordinate of a rounded example lies within half a grid step of the clipped value,
    /// and its integer norm within C·2^f + √d/2 ≤ Δ, for gradients far above and below C.
    func testRoundingStaysWithinTheBound() throws {
        let d = 20_000, clip = 0.8
        var generator = SystemRandomNumberGenerator()
        for magnitude in [1e-4, 0.01, 0.8, 10, 1e4] {
            var step = try DPSGDStep(parameterCount: d, clipNorm: clip, noiseMultiplier: 1)
            let gradient = (0..<d).map { _ in Float(Double.random(in: -1...1, using: &generator) * magnitude) }
            let norm = try gradient.withUnsafeBufferPointer { try step.add($0) }!
            let factor = min(1, clip / norm)
            let decoded = step.decodedSum
            var worst = 0.0, integerSquared = 0.0
            for i in 0..<d {
                worst = max(worst, abs(decoded[i] - Double(gradient[i]) * factor))
                integerSquared += Double(step.sum[i]) * Double(step.sum[i])
            }
            XCTAssertLessThanOrEqual(worst, 0.5 / step.grid.scale * (1 + 1e-9), "magnitude \(magnitude)")
            XCTAssertLessThanOrEqual(integerSquared.squareRoot(), clip * step.grid.scale + Double(d).squareRoot() / 2,
                                     "magnitude \(magnitude)")
            XCTAssertLessThanOrEqual(integerSquared.squareRoot(), Double(step.grid.sensitivity))
        }
    }

    /// With nothing added, the output is pure noise: every value lies on the grid (an integer multiple of
    /// 2^−f, divided by the expected batch), and its standard deviation is σ_int / 2^f / (q·N) =
    /// σ·C·(Δ/(C·2^f)) / (q·N), within 1% of σC/(qN). Fails on the Box–Muller sampler this replaced: its
    /// floats are not on any grid (positive control below).
    func testNoiseIsDiscreteGaussianOnTheGrid() throws {
        let step = try DPSGDStep(parameterCount: 200_000, clipNorm: 0.5, noiseMultiplier: 2)
        XCTAssertEqual(step.grid.scale, 65_536)  // 0.5·2^16 = 32768 ≥ 100·(√200000/2 + 1) = 22461 > 0.5·2^15
        let out = try step.privatized(expectedBatchSize: 1)
        XCTAssertTrue(Self.onGrid(out, scale: step.grid.scale), "decoded noise off the 2^-16 grid")
        XCTAssertGreaterThan(Set(out).count, 10_000)
        let continuous = (0..<200_000).map { _ in Float(Double.random(in: -1...1) * 2 * 0.5) }
        XCTAssertFalse(Self.onGrid(continuous, scale: step.grid.scale), "positive control: continuous noise is off the grid")

        let quarter = try step.privatized(expectedBatchSize: 4)
        let mean = quarter.reduce(0.0) { $0 + Double($1) } / Double(quarter.count)
        let deviation = (quarter.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(quarter.count - 1)).squareRoot()
        let expected = step.grid.noiseSigma / step.grid.scale / 4
        // The sample standard deviation's standard error is σ/√(2n) ≈ 0.0016·σ; five of them.
        XCTAssertEqual(deviation, expected, accuracy: 5 * expected / (2.0 * 200_000).squareRoot())
        XCTAssertGreaterThanOrEqual(expected, 2 * 0.5 / 4)
        XCTAssertLessThanOrEqual(expected, 1.01 * 2 * 0.5 / 4 * (1 + 1e-12))
        XCTAssertEqual(mean, 0, accuracy: 5 * expected / 200_000.0.squareRoot())
    }

    /// A step holds at most ⌊2^62/Δ⌋ examples: at 2^f = 2^52 (Δ = 2^52 + 2) that is 1023, whose sum
    /// (1023·2^52) and noise fit in Int64; the 1024th example is refused (2048 would wrap Int64), and the
    /// step's sum is unchanged by the refusal.
    func testOverflowIsRefused() throws {
        let grid = try DPSGDGrid(parameterCount: 4, clipNorm: 1, noiseMultiplier: 0x1p-30, fractionalBits: 52)
        XCTAssertEqual(grid.sensitivity, (1 << 52) + 2)
        XCTAssertEqual(grid.maximumExamples, 1023)
        var step = DPSGDStep(grid: grid)
        let gradient: [Float] = [3, 0, 0, 0]
        for _ in 0..<1023 { try gradient.withUnsafeBufferPointer { _ = try step.add($0) } }
        XCTAssertEqual(step.sum[0], 1023 << 52)
        XCTAssertThrowsError(try gradient.withUnsafeBufferPointer { try step.add($0) }) { error in
            XCTAssertEqual(error as? DPSGDError, .tooManyExamples(limit: 1023))
        }
        XCTAssertEqual(step.sum[0], 1023 << 52)
        XCTAssertEqual(step.examples, 1023)
        XCTAssertEqual(try step.noisySum().count, 4)
        XCTAssertThrowsError(try DPSGDGrid(parameterCount: 4, clipNorm: 1, noiseMultiplier: 0x1p-32, fractionalBits: 54),
                             "an integer sensitivity above 2^53 is refused")
    }

    /// Poisson sampling: the batch size has mean qN and variance qN(1−q); indices are distinct and in range.
    func testPoissonSamplingRate() {
        var sizes: [Int] = []
        for _ in 0..<200 {
            let sample = DPSGDStep.poissonSample(count: 2_000, rate: 0.05)
            XCTAssertEqual(Set(sample).count, sample.count)
            XCTAssertTrue(sample.allSatisfy { (0..<2_000).contains($0) })
            sizes.append(sample.count)
        }
        let mean = Double(sizes.reduce(0, +)) / Double(sizes.count)
        // Mean 100, standard deviation √95 ≈ 9.7 per draw, so the mean of 200 draws is within ±3.5 (5 s.e.).
        XCTAssertEqual(mean, 100, accuracy: 3.5)
        XCTAssertEqual(DPSGDStep.poissonSample(count: 100, rate: 0).count, 0)
        XCTAssertEqual(DPSGDStep.poissonSample(count: 100, rate: 1).count, 100)
    }

    /// DP-SGD's mechanism is the discrete Gaussian, charged at the plan's σ.
    func testMechanismIsTheDiscreteGaussian() {
        let mechanism = MechanismSteps.dpsgd(samplingRate: 0.01, noiseMultiplier: 1.3, steps: 50)
        XCTAssertEqual(mechanism.noise, .discreteGaussian)
        XCTAssertEqual(mechanism.noiseMultiplier, 1.3)
    }

    /// Every value times `scale` is an integer.
    static func onGrid(_ values: [Float], scale: Double) -> Bool {
        values.allSatisfy { (Double($0) * scale).rounded() == Double($0) * scale }
    }
}
