import Foundation
import XCTest
@testable import Wire

/// Protocol 5 (issue 17): a distributed round's metrics carry the client's cumulative ε trusting no one, which
/// can never be below the ε it was charged under its assumption, nor below this round's ε trusting no one.
final class TrustFiguresWireTests: XCTestCase {
    func report(epsilon: Double, trust: DistributedTrustFigures) -> MetricsReport {
        let release = HeldOutRelease(lossBefore: 300_000, lossAfter: 250_000, count: 100_000, lossClip: 6, noiseMultiplier: 5)
        return MetricsReport(round: 2, metrics: ClientRoundMetrics(client: "clinic-1", epsilon: epsilon, delta: 1e-5, epsilonBudget: 8,
                                                                   heldOut: release, trust: trust))
    }

    func decoded(_ report: MetricsReport) throws -> MetricsReport {
        try MetricsReport(frame: try Frame.decode(try report.frame().encoded()))
    }

    func testTheCumulativeEpsilonTrustingNoOneTravelsAndIsChecked() throws {
        let trust = DistributedTrustFigures(assumeHonest: 2, roundEpsilon: 0.5, roundEpsilonTrustingNoOne: 0.9, epsilonTrustingNoOne: 2.75)
        XCTAssertEqual(try decoded(report(epsilon: 1.5, trust: trust)).metrics.trust?.epsilonTrustingNoOne, 2.75)
        for (epsilon, cumulative, field) in [(1.5, 1.25, "below the client's ε"), (0.2, 0.8, "below this round's"),
                                             (0.2, Double.nan, "epsilon_trusting_no_one"), (0.2, .infinity, "epsilon_trusting_no_one")] {
            var bad = trust
            bad.epsilonTrustingNoOne = cumulative
            XCTAssertThrowsError(try decoded(report(epsilon: epsilon, trust: bad)), "\(cumulative)") {
                XCTAssertTrue("\($0)".contains(field), "\($0)")
            }
        }
    }

    /// A version-4 frame (the figure missing) is refused by its header, not misread.
    func testAVersion4PeerIsRefusedByItsHeader() throws {
        var frame = try report(epsilon: 1, trust: DistributedTrustFigures(assumeHonest: 2, roundEpsilon: 0.5, roundEpsilonTrustingNoOne: 0.9,
                                                                          epsilonTrustingNoOne: 1.5)).frame()
        frame.version = 4
        XCTAssertThrowsError(try Frame.decode(frame.encoded())) { XCTAssertTrue("\($0)".contains("version"), "\($0)") }
    }
}
