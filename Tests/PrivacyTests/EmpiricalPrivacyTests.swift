import Foundation
import XCTest
@testable import Privacy

/// The one-run audit's bound (Steinke, Nasr and Jagielski 2023) against binomial tails computed here
/// independently: by enumerating every outcome of r coin flips, and by exact rational-free recurrences.
final class EmpiricalPrivacyTests: XCTestCase {
    /// P[Binomial(r, q) ≥ v] by enumerating all 2^r outcomes (r ≤ 16): shares no code with `Binomial`.
    func enumeratedTail(r: Int, q: Double, atLeast v: Int) -> Double {
        var total = 0.0
        for outcome in 0..<(1 << r) {
            let successes = outcome.nonzeroBitCount
            guard successes >= v else { continue }
            total += pow(q, Double(successes)) * pow(1 - q, Double(r - successes))
        }
        return total
    }

    func testBinomialTailsMatchEnumeration() {
        for (r, q) in [(10, 0.5), (12, 0.73), (16, 0.9), (7, 0.05)] {
            for v in 0...r {
                let expected = enumeratedTail(r: r, q: q, atLeast: v)
                XCTAssertEqual(Binomial.upperTail(atLeast: v, trials: r, probability: q), expected, accuracy: 1e-12,
                               "P[Bin(\(r), \(q)) >= \(v)]")
                XCTAssertEqual(Binomial.lowerTail(atMost: v, trials: r, probability: q),
                               1 - enumeratedTail(r: r, q: q, atLeast: v + 1), accuracy: 1e-12)
            }
        }
        XCTAssertEqual(Binomial.upperTail(atLeast: 0, trials: 5, probability: 0.3), 1)
        XCTAssertEqual(Binomial.upperTail(atLeast: 6, trials: 5, probability: 0.3), 0)
    }

    func testClopperPearsonEndsHaveTheirTailProbabilities() {
        let interval = Binomial.clopperPearson(successes: 3, trials: 20, confidence: 0.95)
        // At each end, the one-sided tail equals 2.5%; checked with the enumerated tail.
        XCTAssertEqual(enumeratedTail(r: 16, q: 0.5, atLeast: 8), Binomial.upperTail(atLeast: 8, trials: 16, probability: 0.5),
                       accuracy: 1e-12)
        XCTAssertEqual(Binomial.upperTail(atLeast: 3, trials: 20, probability: interval.lowerBound), 0.025, accuracy: 1e-9)
        XCTAssertEqual(Binomial.lowerTail(atMost: 3, trials: 20, probability: interval.upperBound), 0.025, accuracy: 1e-9)
        // Published value (e.g. R's binom.test(3, 20)): 0.03207 to 0.37893.
        XCTAssertEqual(interval.lowerBound, 0.03207, accuracy: 5e-5)
        XCTAssertEqual(interval.upperBound, 0.37893, accuracy: 5e-5)
        let none = Binomial.clopperPearson(successes: 0, trials: 10, confidence: 0.95)
        XCTAssertEqual(none.lowerBound, 0)
        XCTAssertEqual(none.upperBound, 1 - pow(0.025, 0.1), accuracy: 1e-9)
    }

    func testPureBoundIsWhereTheBinomialTailMeetsBeta() {
        for (r, v) in [(10, 9), (16, 13), (12, 10), (14, 14)] {
            let epsilon = EmpiricalPrivacy.epsilonLowerBound(canaries: 2 * r, guesses: r, correct: v, significance: 0.05)
            XCTAssertGreaterThan(epsilon, 0)
            let q = { (e: Double) in exp(e) / (1 + exp(e)) }
            // Just below the bound the enumerated tail is at most β, just above it exceeds β.
            XCTAssertLessThanOrEqual(enumeratedTail(r: r, q: q(epsilon), atLeast: v), 0.05 + 1e-9)
            XCTAssertGreaterThan(enumeratedTail(r: r, q: q(epsilon + 1e-6), atLeast: v), 0.05)
        }
    }

    func testAllRightGivesTheLargestBoundForRAndBeta() {
        // v = r: P[W' ≥ r] = q^r ≤ β exactly when q ≤ β^(1/r), so ε = log(q / (1 − q)) at q = β^(1/r).
        for (r, beta) in [(10, 0.05), (100, 0.05), (1000, 0.01)] {
            let q = pow(beta, 1 / Double(r))
            let expected = log(q / (1 - q))
            XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: r, guesses: r, correct: r, significance: beta),
                           expected, accuracy: 1e-8, "r = \(r)")
        }
        // r = 10, β = 0.05 by hand: q = 0.05^0.1 = 0.741134, ε = ln(0.741134 / 0.258866) = 1.05188.
        XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: 10, guesses: 10, correct: 10), 1.05188, accuracy: 1e-4)
        // No number of right guesses out of r can support more than the all-right bound.
        let top = EmpiricalPrivacy.epsilonLowerBound(canaries: 50, guesses: 50, correct: 50)
        for v in 0..<50 {
            XCTAssertLessThan(EmpiricalPrivacy.epsilonLowerBound(canaries: 50, guesses: 50, correct: v), top)
        }
    }

    func testChanceLevelGivesZero() {
        for r in [2, 10, 100, 1000] {
            XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: r, guesses: r, correct: r / 2), 0, "r = \(r)")
            XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: r, guesses: r, correct: 0), 0)
        }
        // Slightly above chance with few guesses is not significant either.
        XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: 20, guesses: 20, correct: 13), 0)
    }

    func testDeltaTermMatchesTheTheoremComputedDirectly() {
        // f(v) + 2mδ · max_i (f(v − i) − f(v)) / i with f from the enumerated tails.
        let (m, r, v, epsilon, delta) = (40, 16, 14, 0.7, 1e-3)
        let q = exp(epsilon) / (1 + exp(epsilon))
        let f = { (u: Int) in self.enumeratedTail(r: r, q: q, atLeast: u) }
        let slope = (1...v).map { (f(v - $0) - f(v)) / Double($0) }.max()!
        let expected = f(v) + 2 * Double(m) * delta * slope
        XCTAssertEqual(EmpiricalPrivacy.pValue(canaries: m, guesses: r, correct: v, epsilon: epsilon, delta: delta),
                       expected, accuracy: 1e-12)
        // δ > 0 can only weaken the bound.
        let pure = EmpiricalPrivacy.epsilonLowerBound(canaries: m, guesses: r, correct: v)
        let approximate = EmpiricalPrivacy.epsilonLowerBound(canaries: m, guesses: r, correct: v, delta: delta)
        XCTAssertLessThan(approximate, pure)
        XCTAssertGreaterThan(approximate, 0)
        // A δ so large that 2mδ alone exceeds β rejects nothing.
        XCTAssertEqual(EmpiricalPrivacy.epsilonLowerBound(canaries: 1000, guesses: 16, correct: 16, delta: 1e-3), 0)
    }

    func testAuditGuessesFromTheExtremesOfTheLosses() throws {
        // Eight canaries; the four lowest losses are guessed in, the four highest out.
        let losses = [0.1, 5.0, 0.2, 4.0, 0.3, 3.0, 0.4, 2.0]
        let included = [true, false, true, false, true, false, false, true]
        let all = try EmpiricalPrivacy.audit(scores: losses, included: included)
        XCTAssertEqual(all.guesses, 8)
        XCTAssertEqual(all.correct, 6)  // canary 6 (0.4) guessed in is out; canary 7 (2.0) guessed out is in
        XCTAssertEqual(all.epsilonLowerBound, EmpiricalPrivacy.epsilonLowerBound(canaries: 8, guesses: 8, correct: 6))
        // r = 4: the two lowest (0.1, 0.2) in, the two highest (5.0, 4.0) out; all right.
        let some = try EmpiricalPrivacy.audit(scores: losses, included: included, guesses: 4)
        XCTAssertEqual(some.correct, 4)
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(scores: losses, included: included, guesses: 3))
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(scores: losses, included: Array(included.prefix(7))))
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(scores: [0.1, .nan], included: [true, false]))
    }

    func testPerfectSeparationOfManyCanariesSupportsALargeBound() throws {
        // 200 canaries, the included ones all with lower loss: v = r = 200.
        let included = (0..<200).map { $0 % 2 == 0 }
        let losses = included.map { $0 ? 1.0 : 3.0 }.enumerated().map { $1 + Double($0) * 1e-6 }
        let audit = try EmpiricalPrivacy.audit(scores: losses, included: included)
        XCTAssertEqual(audit.correct, 200)
        XCTAssertEqual(audit.epsilonLowerBound, log(pow(0.05, 1 / 200.0) / (1 - pow(0.05, 1 / 200.0))), accuracy: 1e-8)
    }
}

/// The bound against an independent SciPy computation, the audit's power, and positive controls on a
/// stand-in mechanism whose true ε is known exactly (one Gaussian release per canary).
final class OneRunAuditPowerTests: XCTestCase {
    /// Tests/PrivacyTests/Reference/one_run_audit.json, written by generate_one_run_audit.py beside it.
    func reference() throws -> [String: Any] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Reference/one_run_audit.json")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        return try XCTUnwrap(object as? [String: Any], "\(url.path): not a JSON object")
    }

    func testBoundsMatchAnIndependentSciPyComputation() throws {
        let root = try reference()
        let bounds = try XCTUnwrap(root["bounds"] as? [[String: Any]])
        XCTAssertGreaterThan(bounds.count, 200)
        var worst = 0.0
        for case let (m as Int, r as Int, v as Int, delta as Double, beta as Double, expected as Double) in bounds.map({
            ($0["canaries"], $0["guesses"], $0["correct"], $0["delta"], $0["significance"], $0["epsilon_lower_bound"])
        }) {
            let bound = EmpiricalPrivacy.epsilonLowerBound(canaries: m, guesses: r, correct: v, delta: delta, significance: beta)
            XCTAssertEqual(bound, expected, accuracy: 1e-6, "m \(m) r \(r) v \(v) δ \(delta) β \(beta)")
            worst = max(worst, abs(bound - expected))
        }
        XCTAssertLessThan(worst, 1e-6)
        for case let (m as Int, r as Int, v as Int, epsilon as Double, delta as Double, expected as Double)
            in try XCTUnwrap(root["p_values"] as? [[String: Any]]).map({
                ($0["canaries"], $0["guesses"], $0["correct"], $0["epsilon"], $0["delta"], $0["p_value"])
            }) {
            let p = EmpiricalPrivacy.pValue(canaries: m, guesses: r, correct: v, epsilon: epsilon, delta: delta)
            XCTAssertEqual(p, expected, accuracy: 1e-9 * max(1, expected) + 1e-12, "m \(m) r \(r) v \(v) ε \(epsilon) δ \(delta)")
        }
    }

    func testPowerIsTheAllRightBoundAndCapsEveryOutcome() throws {
        // The observation: 40 canaries can never show more than 2.55 at β = 0.05 (SciPy: 2.55401).
        XCTAssertEqual(EmpiricalPrivacy.power(canaries: 40, guesses: 40), 2.55401, accuracy: 1e-5)
        for (m, r, delta) in [(200, 60, 1e-5), (1000, 1000, 1e-5), (500, 100, 0.0)] {
            let power = EmpiricalPrivacy.power(canaries: m, guesses: r, delta: delta)
            XCTAssertEqual(power, EmpiricalPrivacy.epsilonLowerBound(canaries: m, guesses: r, correct: r, delta: delta))
            for v in stride(from: 0, to: r, by: max(1, r / 25)) {
                XCTAssertLessThan(EmpiricalPrivacy.epsilonLowerBound(canaries: m, guesses: r, correct: v, delta: delta), power)
            }
        }
        // More guesses, more power (all right); abstaining costs power, δ costs power.
        XCTAssertLessThan(EmpiricalPrivacy.power(canaries: 1000, guesses: 100), EmpiricalPrivacy.power(canaries: 1000, guesses: 1000))
        XCTAssertLessThan(EmpiricalPrivacy.power(canaries: 1000, guesses: 100, delta: 1e-3),
                          EmpiricalPrivacy.power(canaries: 1000, guesses: 100))
        let audit = try EmpiricalPrivacy.audit(scores: (0..<200).map(Double.init), included: (0..<200).map { $0 < 100 },
                                               guesses: 60, delta: 1e-5)
        XCTAssertEqual(audit.correct, 60)
        XCTAssertEqual(audit.power, EmpiricalPrivacy.power(canaries: 200, guesses: 60, delta: 1e-5))
        XCTAssertEqual(audit.epsilonLowerBound, audit.power)
    }

    func testVerdictRefusesToConfirmAClaimItCouldNotRefute() {
        let weak = OneRunAudit(canaries: 40, guesses: 40, correct: 20, delta: 1e-5, significance: 0.05, epsilonLowerBound: 0,
                               power: EmpiricalPrivacy.power(canaries: 40, guesses: 40, delta: 1e-5))
        XCTAssertEqual(weak.verdict(claimedEpsilon: 8), .noPower, "40 canaries cannot test ε = 8")
        XCTAssertEqual(weak.verdict(claimedEpsilon: 1), .consistent)
        var strong = weak
        strong.epsilonLowerBound = 1.5
        XCTAssertEqual(strong.verdict(claimedEpsilon: 1), .refuted)
        XCTAssertEqual(strong.verdict(claimedEpsilon: 1.5), .consistent)
        XCTAssertEqual(strong.verdict(claimedEpsilon: strong.power), .noPower)
    }

    func testGuessesNeededIsTheFewestWithPower() throws {
        let r = try XCTUnwrap(EmpiricalPrivacy.guessesNeeded(toRefute: 1, canaries: 200, delta: 1e-5))
        XCTAssertGreaterThan(EmpiricalPrivacy.power(canaries: 200, guesses: r, delta: 1e-5), 1)
        XCTAssertLessThanOrEqual(EmpiricalPrivacy.power(canaries: 200, guesses: r - 2, delta: 1e-5), 1)
        XCTAssertNil(EmpiricalPrivacy.guessesNeeded(toRefute: 8, canaries: 1000, delta: 1e-5), "1000 canaries top out near 5.8")
    }

    // MARK: positive controls on a stand-in mechanism: score = −(inclusion bit) + σ·N(0, 1) per canary

    /// Each canary's score depends on its own bit only, through one Gaussian release of sensitivity 1,
    /// so the whole release is exactly as private for each canary as one Gaussian mechanism with σ.
    func gaussianAudit(canaries m: Int, guesses r: Int, sigma: Double?) throws -> OneRunAudit {
        var generator = SystemRandomNumberGenerator()
        let included = (0..<m).map { _ in Bool.random(using: &generator) }
        let scores = included.map { bit -> Double in
            let u1 = Double.random(in: Double.leastNonzeroMagnitude..<1, using: &generator)
            let u2 = Double.random(in: 0..<1, using: &generator)
            let normal = sqrt(-2 * log(u1)) * cos(2 * .pi * u2)
            return (bit ? -1 : 0) + (sigma ?? 0) * normal
        }
        return try EmpiricalPrivacy.audit(scores: scores, included: included, guesses: r, delta: 1e-5)
    }

    func testStandInMechanismControls() throws {
        // σ at which one Gaussian release is exactly (2, 1e-5)-DP (Balle and Wang 2018, Theorem 8), from SciPy.
        let gaussian = try XCTUnwrap(try reference()["gaussian_mechanism"] as? [[String: Any]])
        let entry = try XCTUnwrap(gaussian.first { $0["epsilon"] as? Double == 2 })
        let sigma = try XCTUnwrap(entry["noise_multiplier"] as? Double)
        XCTAssertEqual(sigma, 1.99, accuracy: 0.01)
        let (m, r) = (1000, 200)
        let power = EmpiricalPrivacy.power(canaries: m, guesses: r, delta: 1e-5)
        XCTAssertGreaterThan(power, 2)
        // No noise: every guess right, the bound is the audit's power.
        let open = try gaussianAudit(canaries: m, guesses: r, sigma: nil)
        XCTAssertEqual(open.correct, r)
        XCTAssertEqual(open.epsilonLowerBound, power)
        // σ/1000 while claiming ε = 2: caught.
        let broken = try gaussianAudit(canaries: m, guesses: r, sigma: sigma / 1000)
        XCTAssertEqual(broken.verdict(claimedEpsilon: 2), .refuted, "\(broken)")
        // Honest σ: within ε = 2, with the power to have shown otherwise (fails by chance at most β = 5% of runs
        // by the theorem; far less in practice, the one-run audit being loose for a single Gaussian).
        let honest = try gaussianAudit(canaries: m, guesses: r, sigma: sigma)
        XCTAssertEqual(honest.verdict(claimedEpsilon: 2), .consistent, "\(honest)")
        // A quarter of the noise claims ε = 2 but is only (10.0, 1e-5)-DP (SciPy, same formula): refuted.
        let quarter = try gaussianAudit(canaries: m, guesses: r, sigma: sigma / 4)
        XCTAssertEqual(quarter.verdict(claimedEpsilon: 2), .refuted, "\(quarter)")
    }
}
