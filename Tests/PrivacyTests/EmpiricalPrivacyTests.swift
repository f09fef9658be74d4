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
        let all = try EmpiricalPrivacy.audit(losses: losses, included: included)
        XCTAssertEqual(all.guesses, 8)
        XCTAssertEqual(all.correct, 6)  // canary 6 (0.4) guessed in is out; canary 7 (2.0) guessed out is in
        XCTAssertEqual(all.epsilonLowerBound, EmpiricalPrivacy.epsilonLowerBound(canaries: 8, guesses: 8, correct: 6))
        // r = 4: the two lowest (0.1, 0.2) in, the two highest (5.0, 4.0) out; all right.
        let some = try EmpiricalPrivacy.audit(losses: losses, included: included, guesses: 4)
        XCTAssertEqual(some.correct, 4)
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(losses: losses, included: included, guesses: 3))
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(losses: losses, included: Array(included.prefix(7))))
        XCTAssertThrowsError(try EmpiricalPrivacy.audit(losses: [0.1, .nan], included: [true, false]))
    }

    func testPerfectSeparationOfManyCanariesSupportsALargeBound() throws {
        // 200 canaries, the included ones all with lower loss: v = r = 200.
        let included = (0..<200).map { $0 % 2 == 0 }
        let losses = included.map { $0 ? 1.0 : 3.0 }.enumerated().map { $1 + Double($0) * 1e-6 }
        let audit = try EmpiricalPrivacy.audit(losses: losses, included: included)
        XCTAssertEqual(audit.correct, 200)
        XCTAssertEqual(audit.epsilonLowerBound, log(pow(0.05, 1 / 200.0) / (1 - pow(0.05, 1 / 200.0))), accuracy: 1e-8)
    }
}
