import Foundation
import XCTest
@testable import Wire

/// Protocol 6 (issue 17): the invitation's plan says whether the round asks for the held-out loss release
/// (`heldout_interval`), and a client's metrics carry that release behind a presence flag; the flags' bytes are
/// checked, and the plan's JSON (configurations, audit records) writes the field only when a round asks for none.
final class HeldOutScheduleWireTests: XCTestCase {
    let plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1, clipNorm: 1, delta: 1e-5,
                            maxLength: 64, rank: 4, alpha: 8, targets: ["q_proj"])
    let release = HeldOutRelease(lossBefore: 300_000, lossAfter: 250_000, count: 100_000, lossClip: 6, noiseMultiplier: 5)

    func invite(asks: Bool) -> Invite {
        var plan = plan
        plan.asksHeldOutRelease = asks
        return Invite(round: 4, plan: plan, aggregation: "fedavg", secureAggregation: false,
                      adapterSHA256: String(repeating: "a", count: 64), deadlineSeconds: 30)
    }

    func report(_ heldOut: HeldOutRelease?) -> MetricsReport {
        MetricsReport(round: 2, metrics: ClientRoundMetrics(client: "clinic-1", epsilon: 1.5, delta: 1e-5, epsilonBudget: 8,
                                                            heldOut: heldOut))
    }

    func testTheInvitationCarriesWhetherTheRoundAsks() throws {
        for asks in [true, false] {
            let read = try Invite(frame: try Frame.decode(try invite(asks: asks).frame().encoded()))
            XCTAssertEqual(read.plan.asksHeldOutRelease, asks)
            XCTAssertEqual(read, invite(asks: asks))
        }
        // The flag is the payload's byte before σ_b (protocol 7, 8 bytes): any value but 0 and 1 is refused by name.
        var payload = try invite(asks: false).frame().payload
        let flag = payload.count - 9
        XCTAssertEqual(payload[flag], 0)
        payload[flag] = 2
        XCTAssertThrowsError(try Invite(frame: Frame(type: .invite, payload: payload))) {
            XCTAssertTrue("\($0)".contains("asksHeldOutRelease"), "\($0)")
        }
        payload.removeLast(9)
        XCTAssertThrowsError(try Invite(frame: Frame(type: .invite, payload: payload)), "an invitation without the flag")
    }

    func testTheReleaseTravelsOrIsAbsent() throws {
        for heldOut in [release, nil] {
            let read = try MetricsReport(frame: try Frame.decode(try report(heldOut).frame().encoded()))
            XCTAssertEqual(read.metrics.heldOut, heldOut)
            XCTAssertEqual(read, report(heldOut))
        }
        // The presence flag follows the round, client, ε, δ and budget; a byte other than 0 or 1 is refused by name.
        var payload = try report(nil).frame().payload
        let flag = 8 + (4 + "clinic-1".utf8.count) + 3 * 8
        XCTAssertEqual(payload[flag], 0)
        payload[flag] = 7
        XCTAssertThrowsError(try MetricsReport(frame: Frame(type: .metrics, payload: payload))) {
            XCTAssertTrue("\($0)".contains("hasHeldOut"), "\($0)")
        }
        // An impossible release is still refused when present.
        var bad = release
        bad.noiseMultiplier = 0
        XCTAssertThrowsError(try MetricsReport(frame: try Frame.decode(try report(bad).frame().encoded()))) {
            XCTAssertTrue("\($0)".contains("metrics.heldOut"), "\($0)")
        }
    }

    /// JSON: `heldout_release` written only when false (so plans of earlier builds encode the same), true when absent;
    /// a participant's figures without a release (a round that asked for none) read back without clear figures.
    func testTheJSONFormsReadBack() throws {
        let asking = String(decoding: try JSONEncoder().encode(plan), as: UTF8.self)
        XCTAssertFalse(asking.contains("heldout_release"), asking)
        XCTAssertTrue(try JSONDecoder().decode(TrainingPlan.self, from: Data(asking.utf8)).asksHeldOutRelease)
        var skipping = plan
        skipping.asksHeldOutRelease = false
        let written = String(decoding: try JSONEncoder().encode(skipping), as: UTF8.self)
        XCTAssertTrue(written.contains("\"heldout_release\":false"), written)
        XCTAssertEqual(try JSONDecoder().decode(TrainingPlan.self, from: Data(written.utf8)), skipping)
        let metrics = report(nil).metrics
        let json = try JSONEncoder().encode(metrics)
        XCTAssertFalse(String(decoding: json, as: UTF8.self).contains("held_out"))
        let read = try JSONDecoder().decode(ClientRoundMetrics.self, from: json)
        XCTAssertEqual(read, metrics)
        XCTAssertNil(read.clearFigures)
        // A record of the first format still needs all of its clear figures.
        var old = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        old["examples"] = 40
        XCTAssertThrowsError(try JSONDecoder().decode(ClientRoundMetrics.self, from: try JSONSerialization.data(withJSONObject: old)))
    }
}
