import TestSupport
import XCTest
@testable import Privacy

/// One record of Tests/Fixtures/privacy/reference.json (dp_accounting 0.6.0 and prv-accountant 0.2.0).
struct PrivacyReferenceRecord {
    let q: Double, sigma: Double, steps: Int, delta: Double
    let epsRDP: Double, rdpBestOrder: Double, epsPLDUpper: Double, epsLowerBound: Double?, epsExact: Double?

    static func load() throws -> [PrivacyReferenceRecord] {
        let root = try Fixtures.json("privacy/reference.json")
        guard let records = root["records"] as? [[String: Any]], !records.isEmpty else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "privacy/reference.json: no records"])
        }
        return try records.enumerated().map { index, record in
            func number(_ key: String) throws -> Double {
                guard let value = record[key] as? Double else {
                    throw CocoaError(.fileReadCorruptFile,
                                     userInfo: [NSLocalizedDescriptionKey: "privacy/reference.json records[\(index)].\(key) missing"])
                }
                return value
            }
            return PrivacyReferenceRecord(q: try number("q"), sigma: try number("sigma"), steps: Int(try number("steps")),
                                          delta: try number("delta"), epsRDP: try number("eps_rdp"),
                                          rdpBestOrder: try number("rdp_best_order"),
                                          epsPLDUpper: try number("eps_pld_upper"),
                                          epsLowerBound: record["eps_lower_bound"] as? Double,
                                          epsExact: record["eps_exact"] as? Double)
        }
    }
}

final class RDPAccountantTests: XCTestCase {
    /// The orders are Opacus' defaults as the fixture's meta states them.
    /// One step repeated n times is the composition of n steps, at the same best order (the progress line's ε).
    func testRepeatedStepEqualsComposedSteps() throws {
        var one = RDPAccountant()
        try one.add(samplingRate: 0.01, noiseMultiplier: 1, steps: 1)
        for steps in [1, 20, 10_000] {
            var many = RDPAccountant()
            try many.add(samplingRate: 0.01, noiseMultiplier: 1, steps: steps)
            let composed = try many.epsilon(delta: 1e-5), repeated = try one.epsilon(delta: 1e-5, repetitions: steps)
            XCTAssertEqual(repeated.epsilon, composed.epsilon, accuracy: 1e-9 * composed.epsilon, "\(steps) steps")
            XCTAssertEqual(repeated.order, composed.order)
        }
        XCTAssertEqual(try one.epsilon(delta: 1e-5, repetitions: 0).epsilon, 0)
    }

    /// Opacus' default orders, which the shared fixture's `eps_rdp` uses.
    static let opacusOrders: [Double] = (1...99).map { 1 + Double($0) / 10 } + (12...63).map { Double($0) }

    /// Every shared-fixture record: over Opacus' orders, ε within 0.5% of dp_accounting's RDP value at the
    /// same best order (the default orders are checked against Reference/accountant_reference.json).
    func testEpsilonMatchesDPAccountingForEveryRecord() throws {
        var worst = 0.0
        for record in try PrivacyReferenceRecord.load() {
            var accountant = try RDPAccountant(orders: Self.opacusOrders)
            try accountant.add(samplingRate: record.q, noiseMultiplier: record.sigma, steps: record.steps)
            let (epsilon, order) = try accountant.epsilon(delta: record.delta)
            let relative = abs(epsilon - record.epsRDP) / record.epsRDP
            worst = max(worst, relative)
            XCTAssertLessThan(relative, 0.005, "q=\(record.q) σ=\(record.sigma) T=\(record.steps): ε \(epsilon) vs \(record.epsRDP)")
            XCTAssertEqual(order, record.rdpBestOrder, accuracy: 1e-9, "q=\(record.q) σ=\(record.sigma) T=\(record.steps)")
        }
        print("RDP: worst relative difference from dp_accounting \(worst)")
    }

    /// The fractional-order series agrees with the exact binomial sum at integer orders, where both
    /// apply: a check of the Section 3.3 series independent of the fixture's orders.
    func testFractionalSeriesAgreesWithBinomialSumAtIntegerOrders() throws {
        for (q, sigma) in [(0.01, 1.0), (0.001, 0.5), (0.2, 3.0), (0.05, 0.8)] {
            for alpha in [2, 3, 7, 20] {
                let exact = RDPAccountant.logAIntegerOrder(q: q, sigma: sigma, alpha: alpha)
                let series = try XCTUnwrap(RDPAccountant.logAFractionalOrder(q: q, sigma: sigma, alpha: Double(alpha)))
                XCTAssertEqual(series, exact, accuracy: 1e-9 * max(1, abs(exact)), "q=\(q) σ=\(sigma) α=\(alpha)")
            }
        }
    }

    /// Special cases: q = 1 is the plain Gaussian (α/(2σ²)); q = 0 and zero steps cost nothing.
    func testSpecialCases() throws {
        XCTAssertEqual(RDPAccountant.rdp(samplingRate: 1, noiseMultiplier: 2, order: 3.5), 3.5 / 8)
        XCTAssertEqual(RDPAccountant.rdp(samplingRate: 0, noiseMultiplier: 2, order: 3.5), 0)
        var accountant = RDPAccountant()
        try accountant.add(samplingRate: 0, noiseMultiplier: 1, steps: 1000)
        try accountant.add(samplingRate: 0.5, noiseMultiplier: 1, steps: 0)
        XCTAssertEqual(try accountant.epsilon(delta: 1e-5).epsilon, 0)
        XCTAssertThrowsError(try accountant.add(samplingRate: 1.5, noiseMultiplier: 1, steps: 1))
        XCTAssertThrowsError(try accountant.add(samplingRate: 0.1, noiseMultiplier: 0, steps: 1))
        XCTAssertThrowsError(try accountant.epsilon(delta: 0))
    }

    /// Heterogeneous composition adds RDP: two halves equal the whole, and a mixed sequence lies
    /// between its parts.
    func testHeterogeneousCompositionAddsRDP() throws {
        var whole = RDPAccountant(), halves = RDPAccountant(), mixed = RDPAccountant()
        try whole.add(samplingRate: 0.01, noiseMultiplier: 1, steps: 1000)
        try halves.add(samplingRate: 0.01, noiseMultiplier: 1, steps: 400)
        try halves.add(samplingRate: 0.01, noiseMultiplier: 1, steps: 600)
        XCTAssertEqual(try halves.epsilon(delta: 1e-5).epsilon, try whole.epsilon(delta: 1e-5).epsilon, accuracy: 1e-12)
        try mixed.add(samplingRate: 0.01, noiseMultiplier: 1, steps: 500)
        try mixed.add(samplingRate: 0.01, noiseMultiplier: 2, steps: 500)
        var quiet = RDPAccountant()
        try quiet.add(samplingRate: 0.01, noiseMultiplier: 2, steps: 1000)
        let mixedEpsilon = try mixed.epsilon(delta: 1e-5).epsilon
        XCTAssertLessThan(mixedEpsilon, try whole.epsilon(delta: 1e-5).epsilon)
        XCTAssertGreaterThan(mixedEpsilon, try quiet.epsilon(delta: 1e-5).epsilon)
    }

    /// 10,000 steps within 50 ms: the cost does not grow with the step count (RDP is computed once per
    /// mechanism and scaled).
    func testTenThousandStepsIsFast() throws {
        let start = Date()
        var accountant = RDPAccountant()
        try accountant.add(samplingRate: 0.01, noiseMultiplier: 1.1, steps: 10_000)
        _ = try accountant.epsilon(delta: 1e-5)
        let elapsed = Date().timeIntervalSince(start)
        print("RDP: 10,000 steps in \(elapsed * 1000) ms")
        // About 2 ms even in a debug build; 50 ms is the release budget.
        XCTAssertLessThan(elapsed, 0.05)
    }
}
