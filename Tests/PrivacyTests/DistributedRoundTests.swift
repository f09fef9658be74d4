import Foundation
@testable import Privacy
import XCTest

/// Issue 17, "What must hold": the noise a distributed-DP round's clients add sums to the discrete Gaussian
/// noise the plan asks of the threshold's survivors, and the scale and ε every party derives are the ones the
/// analysis states. Sources: Kairouz, Liu, Steinke 2021 (arXiv:2102.06387), Theorem 1 (the sum of n discrete
/// Gaussian shares) and Canonne, Kamath, Steinke 2020 (arXiv:2004.00010), Proposition 19 / Corollary 9 (the
/// discrete Gaussian's variance is at most σ², and it is σ²-sub-Gaussian, P[|X| ≥ a] ≤ 2·exp(−a²/(2σ²))).
final class DistributedRoundTests: XCTestCase {
    /// A round with n = 3, t = 3 on 30,000 coordinates (q, z, C as a demo plan; K = 16).
    func round(cohort: Int = 3, threshold: Int = 3, assumeHonest: Int = 1, dimension: Int = 30_000) throws -> DistributedRound {
        try DistributedRound(samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0, dimension: dimension, cohort: cohort,
                             threshold: threshold, assumeHonest: assumeHonest, contributions: 16)
    }

    /// The moments and tails of `samples` against a centred law of variance `variance`: the mean within 5
    /// standard errors, the variance within 5 of its standard errors (√(2/N) relative, Gaussian fourth moment),
    /// excess kurtosis within 5·√(24/N), the frequency beyond 2 and 3 standard deviations within 5 binomial
    /// standard errors of the Gaussian's (4.550% and 0.270%), and below the sub-Gaussian bound 2·exp(−a²/(2v)).
    /// Returns the first failure, or nil.
    func momentsAndTailsProblem(_ samples: [Double], variance: Double) -> String? {
        let n = Double(samples.count)
        let mean = samples.reduce(0, +) / n
        let centred = samples.map { $0 - mean }
        let m2 = centred.reduce(0) { $0 + $1 * $1 } / n
        let m4 = centred.reduce(0) { $0 + $1 * $1 * $1 * $1 } / n
        if abs(mean) > 5 * (variance / n).squareRoot() { return "mean \(mean)" }
        if abs(m2 / variance - 1) > 5 * (2 / n).squareRoot() { return "variance ratio \(m2 / variance)" }
        if abs(m4 / (m2 * m2) - 3) > 5 * (24 / n).squareRoot() { return "kurtosis \(m4 / (m2 * m2))" }
        let sd = variance.squareRoot()
        for (k, gaussian) in [(2.0, 0.0455003), (3.0, 0.0026998)] {
            let beyond = Double(samples.filter { abs($0) >= k * sd }.count) / n
            if abs(beyond - gaussian) > 5 * (gaussian * (1 - gaussian) / n).squareRoot() { return "tail beyond \(k) sd: \(beyond)" }
            if beyond > 2 * exp(-k * k / 2) { return "tail beyond \(k) sd \(beyond) above the sub-Gaussian bound" }
        }
        return nil
    }

    /// Three clients' shares of a zero vector, summed coordinate by coordinate, are the plan's noise: variance
    /// t·σ_share² = (z·Δ₂)², Gaussian moments and tails. Positive control: two shares (one honest client
    /// fewer) fail the same check against the full variance; so would shares sized for the cohort, not t.
    func testTheSharesOfTheThresholdSumToThePlannedDiscreteGaussian() throws {
        let parameters = try round()
        let zeros = [Double](repeating: 0, count: 30_000)
        let shares = try (0..<3).map { _ in try parameters.noisedShare(clippedSum: zeros) }
        let sum = (0..<zeros.count).map { i in Double(shares[0][i] + shares[1][i] + shares[2][i]) }
        let planned = pow(1.0 * parameters.preview.sensitivity.l2, 2)
        XCTAssertEqual(3 * parameters.shareSigma * parameters.shareSigma, planned, accuracy: planned * 1e-12)
        XCTAssertNil(momentsAndTailsProblem(sum, variance: planned))
        let twoShares = (0..<zeros.count).map { i in Double(shares[0][i] + shares[1][i]) }
        XCTAssertNotNil(momentsAndTailsProblem(twoShares, variance: planned), "control: two of three shares carry 2/3 of the variance")
        XCTAssertNil(momentsAndTailsProblem(twoShares, variance: planned * 2 / 3))
    }

    /// The rounding is unbiased: 0.3 grid units round up exactly where the uniform is below 0.3, and with
    /// independent uniforms the mean over 30,000 coordinates is 0.3 within 5 standard errors (√(0.21/N)).
    /// Control: a rounding to nearest would give 0 everywhere, far outside.
    func testRoundingOntoTheGridIsUnbiased() throws {
        let parameters = try round(dimension: 4)
        let value = 0.3 / parameters.scale
        XCTAssertEqual(try parameters.rounded([value, value, value, -value], uniforms: [0.1, 0.29, 0.31, 0.9]), [1, 1, 0, -1])
        let big = try round(dimension: 30_000)
        let values = [Double](repeating: 0.3 / big.scale, count: 30_000)
        let rounded = try big.rounded(values, uniforms: (0..<30_000).map { _ in Double.random(in: 0..<1) })
        let mean = rounded.reduce(0.0) { $0 + Double($1) } / 30_000
        let tolerance = 5 * (0.21 / 30_000).squareRoot()
        XCTAssertEqual(mean, 0.3, accuracy: tolerance)
        XCTAssertGreaterThan(abs(0 - 0.3), tolerance, "control: nearest rounding's mean 0 is outside the tolerance")
        XCTAssertThrowsError(try big.noisedShare(clippedSum: [1]), "a vector of the wrong length is refused")
        XCTAssertThrowsError(try parameters.noisedShare(clippedSum: [.nan, 0, 0, 0]), "a value not finite is refused")
    }

    /// The scale is the finest that meets the wrap target with a share σ the sampler draws; f + 1 fails one of
    /// the two. Δ₂ = C·2^f + √d (the sum rounded once) and σ_share = z·Δ₂/√t, as `DistributedRound` states.
    func testTheScaleIsTheFinestThatWrapsRarelyAndCanBeSampled() throws {
        for (cohort, threshold, dimension) in [(3, 2, 30_000), (8, 6, 1_000_000), (2, 2, 200)] {
            let parameters = try round(cohort: cohort, threshold: threshold, dimension: dimension)
            let f = parameters.fractionalBits
            let l2 = 1.0 * parameters.scale + Double(dimension).squareRoot()
            XCTAssertEqual(parameters.preview.sensitivity.l2, l2, accuracy: l2 * 1e-12)
            XCTAssertEqual(parameters.shareSigma, l2 / Double(threshold).squareRoot(), accuracy: l2 * 1e-12)
            XCTAssertLessThanOrEqual(parameters.preview.wrapProbability, DistributedPlanPreview.wrapTarget)
            XCTAssertLessThanOrEqual(parameters.shareSigma, DiscreteGaussian.sigmaRange.upperBound)
            let finer = Double(sign: .plus, exponent: f + 1, significand: 1)
            let finerL2 = finer + Double(dimension).squareRoot(), finerSigma = finerL2 / Double(threshold).squareRoot()
            let finerWrap = try ModularWrap.probability(modulusBits: 32, scaledClip: finer, dimension: dimension, contributions: 16,
                                                        shares: cohort, shareSigma: finerSigma)
            XCTAssertTrue(finerWrap > DistributedPlanPreview.wrapTarget || finerSigma > DiscreteGaussian.sigmaRange.upperBound,
                          "n \(cohort) t \(threshold) d \(dimension): f \(f) is not the finest")
        }
    }

    /// ε under the client's assumption: trusting no one is its own share alone (one discrete Gaussian of σ/√t,
    /// τ = 0), the same whatever the threshold's others do; more honest clients lower it, down to the k = t
    /// shares of h = n; and the ledger's mechanism is never below the accountant's ε.
    func testEpsilonFallsWithTrustAndTheLedgerChargesAtLeastIt() throws {
        var previous = Double.infinity
        for h in 1...4 {
            let parameters = try round(cohort: 4, threshold: 3, assumeHonest: h)
            let (assumed, alone) = try parameters.epsilons(delta: 1e-5)
            XCTAssertLessThanOrEqual(assumed, alone * (1 + 1e-12))
            XCTAssertLessThanOrEqual(assumed, previous, "h \(h)")
            previous = assumed
            if h <= 1 + (4 - 3) { XCTAssertEqual(assumed, alone, accuracy: 1e-12, "h \(h): k = max(1, h − (n − t)) = 1") }
            let ledger = try PrivacyAccounting.epsilon(steps: [parameters.ledgerMechanism], delta: 1e-5, accountant: .rdp)
            XCTAssertGreaterThanOrEqual(ledger, assumed * (1 - 1e-9), "h \(h): the ledger charges at least the accountant's ε")
        }
        XCTAssertLessThan(previous, try round(cohort: 4, threshold: 3, assumeHonest: 1).epsilons(delta: 1e-5).assumed,
                          "control: trusting all four is cheaper than trusting no one")
        XCTAssertEqual(try round(cohort: 3, threshold: 3, assumeHonest: 99).trust.assumeHonest, 3, "h is clamped to the cohort")
    }
}
