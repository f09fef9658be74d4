import XCTest
@testable import Privacy

/// The DP-SGD aggregation: exact clipping, noise of the stated scale, and Poisson sampling's rate.
final class DPSGDTests: XCTestCase {
    func testClippingScalesOnlyLargeGradients() {
        var step = DPSGDStep(parameterCount: 3, clipNorm: 1, noiseMultiplier: 1)
        let large: [Float] = [6, 8, 0]     // norm 10 → scaled to norm 1: (0.6, 0.8, 0)
        let small: [Float] = [0, 0, 0.5]   // norm 0.5 → unchanged
        XCTAssertEqual(large.withUnsafeBufferPointer { step.add($0) }!, 10, accuracy: 1e-12)
        XCTAssertEqual(small.withUnsafeBufferPointer { step.add($0) }!, 0.5, accuracy: 1e-12)
        XCTAssertEqual(step.sum[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(step.sum[1], 0.8, accuracy: 1e-6)
        XCTAssertEqual(step.sum[2], 0.5, accuracy: 1e-6)
        XCTAssertEqual(step.examples, 2)
        XCTAssertEqual(step.clipped, 1)
        let broken: [Float] = [.nan, 1, 1]
        XCTAssertNil(broken.withUnsafeBufferPointer { step.add($0) }, "a non-finite gradient is refused")
        XCTAssertEqual(step.examples, 2)
    }

    /// With nothing added, the output is pure noise of standard deviation σ·C / (q·N).
    func testNoiseHasTheStatedScale() {
        let step = DPSGDStep(parameterCount: 200_000, clipNorm: 0.5, noiseMultiplier: 2)
        let out = step.privatized(expectedBatchSize: 4)
        let mean = out.reduce(0.0) { $0 + Double($1) } / Double(out.count)
        let variance = out.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(out.count - 1)
        // σC/(qN) = 2·0.5/4 = 0.25; the sample standard deviation's standard error is 0.25/√(2n) ≈ 4e-4.
        XCTAssertEqual(variance.squareRoot(), 0.25, accuracy: 0.003)
        XCTAssertEqual(mean, 0, accuracy: 0.003)
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
}
