import TestSupport
import XCTest
@testable import Privacy

final class CalibrationTests: XCTestCase {
    struct InverseRecord { let targetEpsilon, q: Double; let steps: Int; let delta, sigmaRDP, sigmaPLD: Double }

    func loadInverse() throws -> [InverseRecord] {
        let root = try Fixtures.json("privacy/reference.json")
        guard let entries = root["inverse"] as? [[String: Any]], !entries.isEmpty else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "privacy/reference.json: no inverse entries"])
        }
        return try entries.enumerated().map { index, entry in
            func number(_ key: String) throws -> Double {
                guard let value = entry[key] as? Double else {
                    throw CocoaError(.fileReadCorruptFile,
                                     userInfo: [NSLocalizedDescriptionKey: "privacy/reference.json inverse[\(index)].\(key) missing"])
                }
                return value
            }
            return InverseRecord(targetEpsilon: try number("target_eps"), q: try number("q"), steps: Int(try number("steps")),
                                 delta: try number("delta"), sigmaRDP: try number("sigma_rdp_opacus_style"),
                                 sigmaPLD: try number("sigma_pld"))
        }
    }

    /// The calibrated σ matches the fixture's grid search (RDP and PLD) within ±0.002, and it is the
    /// smallest on the grid: σ fits, σ − 0.001 does not.
    func testNoiseMultiplierMatchesFixtureInverse() throws {
        for record in try loadInverse() {
            for (kind, expected) in [(AccountantKind.rdp, record.sigmaRDP), (.pld, record.sigmaPLD)] {
                let sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: record.targetEpsilon, samplingRate: record.q,
                                                                  steps: record.steps, delta: record.delta, accountant: kind)
                print("calibration \(kind): σ \(sigma) vs fixture \(expected)")
                XCTAssertEqual(sigma, expected, accuracy: 0.002 + 1e-9, "\(kind)")
                func epsilon(_ s: Double) throws -> Double {
                    try PrivacyAccounting.epsilon(steps: [MechanismSteps(samplingRate: record.q, noiseMultiplier: s, steps: record.steps)],
                                                  delta: record.delta, accountant: kind)
                }
                XCTAssertLessThanOrEqual(try epsilon(sigma), record.targetEpsilon)
                XCTAssertGreaterThan(try epsilon(sigma - 0.001), record.targetEpsilon)
            }
        }
    }

    /// The largest step count that fits is exact: it fits, one more does not.
    func testMaximumStepsIsTheBoundary() throws {
        let steps = try PrivacyAccounting.maximumSteps(targetEpsilon: 2, samplingRate: 0.01, noiseMultiplier: 1, delta: 1e-5,
                                                       accountant: .rdp, upTo: 100_000)
        func epsilon(_ t: Int) throws -> Double {
            try PrivacyAccounting.epsilon(steps: [MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: t)], delta: 1e-5, accountant: .rdp)
        }
        XCTAssertGreaterThan(steps, 100)
        XCTAssertLessThan(steps, 100_000)
        XCTAssertLessThanOrEqual(try epsilon(steps), 2)
        XCTAssertGreaterThan(try epsilon(steps + 1), 2)
    }

    /// A target already exceeded by earlier spending cannot be met by any σ.
    func testUnreachableTargetThrows() throws {
        let spent = [MechanismSteps(samplingRate: 1, noiseMultiplier: 0.5, steps: 10)]
        XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1, samplingRate: 0.01, steps: 10, delta: 1e-5,
                                                                   accountant: .rdp, alreadySpent: spent))
    }
}
