import Foundation
import TestSupport
import Wire
import XCTest

/// Issue 17: a plan at privacy unit client (DP-FedAvg) reads, and what it lacks or carries wrongly is refused by
/// field. Each refusal below was seen to pass through when its check in `TrainingPlan.validateClientLevel` (or
/// `ClientLevelDP.checkPlan`) was removed, which is what the assertion on the field name catches.
final class ClientLevelPlanTests: XCTestCase {
    static let json = #"""
    {"steps": 20, "learning_rate": 0.001, "sampling_rate": 0.05, "noise_multiplier": 1.0, "clip_norm": 0.5, "delta": 1e-5,
     "max_length": 64, "rank": 2, "alpha": 4, "targets": ["q_proj"], "privacy_unit": "client", "noise_placement": "distributed",
     "client_sampling_rate": 0.1}
    """#

    func plan(_ json: String = ClientLevelPlanTests.json) throws -> TrainingPlan {
        try JSONDecoder().decode(TrainingPlan.self, from: Data(json.utf8))
    }

    func testAClientLevelPlanReadsAndValidates() throws {
        let plan = try plan()
        XCTAssertEqual(plan.privacyUnit, .client)
        XCTAssertTrue(plan.isClientLevel)
        XCTAssertEqual(plan.clientSamplingRate, 0.1)
        XCTAssertEqual(plan.steps, 20, "local steps: a client-level plan is not one step a round")
        XCTAssertNoThrow(try plan.validate())
        let again = try JSONDecoder().decode(TrainingPlan.self, from: JSONEncoder().encode(plan))
        XCTAssertEqual(again, plan, "client_sampling_rate and the unit survive encoding")
    }

    func field(of json: String) throws -> String? {
        do {
            try plan(json).validate()
            return nil
        } catch let FederationError.configuration(_, field, _) {
            return field
        }
    }

    func testIncompleteClientLevelPlansAreRefusedByField() throws {
        let base = Self.json
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #""noise_placement": "distributed""#, with: #""noise_placement": "local""#)),
                       "noise_placement")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #", "noise_placement": "distributed""#, with: "")), "noise_placement",
                       "local when absent, refused")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #""noise_multiplier": 1.0"#, with: #""noise_multiplier": 0"#)),
                       "noise_multiplier")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #""client_sampling_rate": 0.1"#, with: #""client_sampling_rate": 1.5"#)),
                       "client_sampling_rate")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #""client_sampling_rate": 0.1"#, with: #""client_sampling_rate": 0"#)),
                       "client_sampling_rate")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: #""clip_norm": 0.5"#, with: #""clip_norm": 0"#)), "clip_norm")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: "}", with: #", "expected_batch": 8}"#)), "expected_batch")
        XCTAssertEqual(try field(of: base.replacingOccurrences(of: "}", with: #", "max_contributions": 8}"#)), "max_contributions")
        // q belongs to client-level plans only.
        let record = base.replacingOccurrences(of: #""privacy_unit": "client""#, with: #""privacy_unit": "record""#)
            .replacingOccurrences(of: #""noise_placement": "distributed", "#, with: "")
        XCTAssertEqual(try field(of: record), "client_sampling_rate")
        XCTAssertThrowsError(try plan(base.replacingOccurrences(of: #""privacy_unit": "client""#, with: #""privacy_unit": "household""#))) {
            XCTAssertTrue("\($0)".contains("record, user or client"), "\($0)")
        }
    }

    /// The invitation carries the unit and leaves q out (the client charges its participation at q = 1); its
    /// decoder refuses a client-level plan with a fixed denominator or contributions bound, naming the plan.
    func testTheInvitationCarriesAClientLevelPlanWithoutQ() throws {
        let plan = try plan()
        let invite = Invite(round: 3, plan: plan, aggregation: "fedavg", secureAggregation: true, adapterSHA256: "ab", deadlineSeconds: 60)
        let decoded = try Invite(frame: invite.frame())
        XCTAssertEqual(decoded.plan.privacyUnit, .client)
        XCTAssertNil(decoded.plan.clientSamplingRate, "q stays with the coordinator")
        var expected = plan
        expected.clientSamplingRate = nil
        XCTAssertEqual(decoded.plan, expected)
        var bad = invite
        bad.plan.expectedBatch = 5
        XCTAssertThrowsError(try Invite(frame: bad.frame())) { XCTAssertTrue("\($0)".contains("client-level plan"), "\($0)") }
        // Adaptive clipping: σ_b travels (protocol 7) and comes back; absent, it stays absent; one at or below z/2, or
        // on a record-level plan, is refused naming the field.
        var adaptive = invite
        adaptive.plan.countNoiseMultiplier = 2
        XCTAssertEqual(try Invite(frame: adaptive.frame()).plan.countNoiseMultiplier, 2)
        XCTAssertNil(decoded.plan.countNoiseMultiplier)
        adaptive.plan.countNoiseMultiplier = plan.noiseMultiplier / 2
        XCTAssertThrowsError(try Invite(frame: adaptive.frame())) { XCTAssertTrue("\($0)".contains("count_noise_multiplier"), "\($0)") }
        var recordLevel = Invite(round: 3, plan: TrainingPlan(steps: 1, learningRate: 0.1, samplingRate: 0.1, noiseMultiplier: 1,
                                                              clipNorm: 1, delta: 1e-5, maxLength: 8, rank: 1, alpha: 1, targets: ["q_proj"]),
                                 aggregation: "fedavg", secureAggregation: true, adapterSHA256: "ab", deadlineSeconds: 60)
        recordLevel.plan.countNoiseMultiplier = 2
        XCTAssertThrowsError(try Invite(frame: recordLevel.frame())) { XCTAssertTrue("\($0)".contains("count_noise_multiplier"), "\($0)") }
    }
}
