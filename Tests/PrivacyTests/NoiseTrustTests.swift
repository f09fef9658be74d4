import Foundation
import XCTest
@testable import Privacy

final class NoiseTrustTests: XCTestCase {
    /// k = max(1, h − (n − s)), worked by hand: the n − s dropouts fall on the other honest clients first.
    func testReliedSharesWorstCaseDropouts() throws {
        let cases: [(n: Int, t: Int, h: Int, s: Int?, k: Int)] = [
            (10, 7, 10, nil, 7),  // everyone honest, 3 may drop: 7 honest survivors
            (10, 7, 5, nil, 2),   // 5 honest, 3 of them may drop
            (10, 7, 3, nil, 1),   // the dropouts can take every other honest client
            (10, 10, 4, nil, 4),  // nobody may drop
            (10, 7, 5, 9, 4),     // after the round: 9 survived, 1 dropout
            (10, 7, 1, 10, 1),    // trusting no one: itself, whatever survives
        ]
        for c in cases {
            let trust = try NoiseTrust(cohort: c.n, threshold: c.t, assumeHonest: c.h)
            XCTAssertEqual(try trust.reliedShares(survivors: c.s), c.k, "n=\(c.n) t=\(c.t) h=\(c.h) s=\(String(describing: c.s))")
        }
        let trust = try NoiseTrust(cohort: 10, threshold: 7, assumeHonest: 5)
        XCTAssertEqual(try trust.reliedVariance(totalVariance: 70), 2 * 10, accuracy: 1e-12)  // 2 shares of 70/7
        XCTAssertThrowsError(try trust.reliedShares(survivors: 6)) { XCTAssertTrue("\($0)".contains("survivors")) }
        XCTAssertThrowsError(try NoiseTrust(cohort: 10, threshold: 7, assumeHonest: 0)) { XCTAssertTrue("\($0)".contains("assume_honest")) }
        XCTAssertThrowsError(try NoiseTrust(cohort: 10, threshold: 7, assumeHonest: 11))
        XCTAssertThrowsError(try NoiseTrust(cohort: 10, threshold: 0, assumeHonest: 1))
        XCTAssertThrowsError(try NoiseTrust(cohort: 10, threshold: 11, assumeHonest: 1))
        // Decoding goes through the same checks (a threshold of 0 would divide the variance by zero).
        XCTAssertThrowsError(try JSONDecoder().decode(NoiseTrust.self, from: Data(#"{"cohort": 10, "threshold": 0, "assumeHonest": 1}"#.utf8)))
        XCTAssertEqual(try JSONDecoder().decode(NoiseTrust.self, from: JSONEncoder().encode(trust)), trust)
    }

    /// Trusting no one is local DP with the client's own share, one discrete Gaussian of variance σ²/t:
    /// at q = 1 its ε equals dp_accounting's Gaussian mechanism with noise multiplier (σ/√t)/Δ₂ over the
    /// same integer orders (CKS 2020: the discrete Gaussian's RDP is the Gaussian's), from the reference
    /// record n = 1, σ = 2, Δ₂ = 1 (t = 4, total σ = 4).
    func testTrustingNoOneIsTheDiscreteGaussianOfOneShare() throws {
        let record = try XCTUnwrap(try DistributedReference.records("continuous_limit").first {
            (try? $0.number("shares")) == 1 && (try? $0.number("share_sigma_grid")) == 2 && (try? $0.number("q")) == 1
                && (try? $0.number("steps")) == 100 && (try? $0.number("delta")) == 1e-5
        })
        let trust = try NoiseTrust(cohort: 8, threshold: 4, assumeHonest: 6)
        let sensitivity = try RoundedSensitivity(l2: 1, l1: 1)
        let both = try trust.epsilons(samplingRate: 1, totalSigma: 4, dimension: 1, sensitivity: sensitivity, steps: 100, delta: 1e-5)
        let expected = try record.number("dp_accounting_gaussian_integer_orders")
        XCTAssertEqual(both.trustingNoOne, expected, accuracy: 1e-9 * expected, "local DP \(both.trustingNoOne) vs dp_accounting \(expected)")
        // h = 6 of 8 with t = 4: 6 − 4 = 2 honest shares, variance 8, less than half the local ε... at least lower.
        XCTAssertEqual(try trust.reliedShares(), 2)
        XCTAssertLessThan(both.assumed, both.trustingNoOne)
        print("trust n=8 t=4 h=6, q=1, T=100, δ=1e-5: ε assumed \(both.assumed), trusting no one \(both.trustingNoOne)")
    }

    /// More assumed honesty never raises ε, and a budget that fits the assumption can be exceeded when trusting
    /// no one: the case in which a client that trusts no one declines (the check the policy will make).
    func testMoreTrustNeverCostsMoreAndTrustingNoOneCanExceedTheBudget() throws {
        let sensitivity = try RoundedSensitivity.conditionalRounding(scaledClip: 1024, dimension: 4096, beta: exp(-0.5))
        var previous = Double.infinity
        for h in 1...10 {
            let trust = try NoiseTrust(cohort: 10, threshold: 8, assumeHonest: h)
            let epsilon = try trust.epsilons(samplingRate: 0.02, totalSigma: 1.1 * sensitivity.l2, dimension: 4096,
                                             sensitivity: sensitivity, steps: 200, delta: 1e-5).assumed
            XCTAssertLessThanOrEqual(epsilon, previous * (1 + 1e-12), "h=\(h)")
            previous = epsilon
        }
        let trust = try NoiseTrust(cohort: 10, threshold: 8, assumeHonest: 10)
        let both = try trust.epsilons(samplingRate: 0.02, totalSigma: 1.1 * sensitivity.l2, dimension: 4096,
                                      sensitivity: sensitivity, steps: 200, delta: 1e-5)
        let budget = 8.0
        XCTAssertLessThan(both.assumed, budget, "under the assumption the plan fits ε = 8")
        XCTAssertGreaterThan(both.trustingNoOne, budget, "trusting no one it does not: such a client declines")
        print("trust n=10 t=8 h=10, q=0.02, z=1.1, T=200: ε assumed \(both.assumed), trusting no one \(both.trustingNoOne)")
    }
}

final class DistributedPlanPreviewUnitTests: XCTestCase {
    /// The preview's pieces agree with the functions they come from, and the wrap probability is taken from δ:
    /// a δ below the wrap probability of the rounds is refused.
    func testPreviewIsAssembledFromTheAccountedPieces() throws {
        let trust = try NoiseTrust(cohort: 8, threshold: 6, assumeHonest: 4)
        let preview = try DistributedPlanPreview(samplingRate: 0.02, noiseMultiplier: 1.1, stepsPerRound: 2, clipNorm: 1,
                                                 dimension: 1 << 16, trust: trust, contributions: 8, fractionalBits: nil)
        XCTAssertEqual(preview.assumed.shares, 2)
        XCTAssertEqual(preview.trustingNoOne.shares, 1)
        XCTAssertEqual(preview.shareSigma, 1.1 * preview.sensitivity.l2 / 6.0.squareRoot(), accuracy: 1e-9 * preview.shareSigma)
        XCTAssertLessThanOrEqual(preview.wrapProbability, DistributedPlanPreview.wrapTarget)
        let both = try preview.epsilons(rounds: 3, delta: 1e-5)
        XCTAssertLessThan(both.assumed, both.trustingNoOne)
        // A coarse grid given by hand with a huge cohort wraps often: the δ cannot cover it.
        let wrapping = try DistributedPlanPreview(samplingRate: 0.02, noiseMultiplier: 1.1, stepsPerRound: 1, clipNorm: 1,
                                                  dimension: 1 << 16, trust: trust, contributions: 8, fractionalBits: 28)
        XCTAssertGreaterThan(wrapping.wrapProbability, 1e-5)
        XCTAssertThrowsError(try wrapping.epsilons(rounds: 1, delta: 1e-5)) { XCTAssertTrue("\($0)".contains("wrap probability")) }
    }
}
