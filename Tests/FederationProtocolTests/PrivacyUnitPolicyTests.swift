import FederationProtocol
import Foundation
import Privacy
import SystemIO
import Wire
import XCTest

/// The privacy unit in the client's policy, the plan and the invitation: a client declines a private
/// plan at a weaker unit than its policy requires (or another unit than its ledger counts), and the
/// charge it asks for states the plan's unit.
extension ClientAgentTests {
    func userPlan() -> TrainingPlan {
        var plan = Self.plan
        plan.privacyUnit = .user
        return plan
    }

    func testAPolicyForUsersDeclinesRecordPlansAndChargesUserPlansPerUser() throws {
        let users = ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10, privacyUnit: .user)
        var a = agent(policy: users)
        var actions = try invite(&a, round: 2, global: try tensors(1))
        guard case let .decline(2, .policy, reason)? = actions.first, actions.count == 1 else { return XCTFail("\(actions)") }
        XCTAssertEqual(reason, "policy: the plan's privacy unit is record, weaker than the user this client requires")

        actions = try invite(&a, round: 3, global: try tensors(1), plan: userPlan())
        guard case .prepare(3, _, _)? = actions.first else { return XCTFail("\(actions)") }
        let mechanism = MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 3)
        actions = a.prepared(round: 3, RoundPreparation(mechanism: mechanism, examples: 20))
        guard case let .charge(3, request)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(request, ChargeRequest(mechanism: mechanism, clipNorm: 0.5, ceiling: 8, unit: .user,
                                              releases: [MetricsRelease.mechanism(plan: userPlan())]))
    }

    func testAPolicyForRecordsDeclinesUserPlansItsLedgerCannotCount() throws {
        var a = agent()
        let actions = try invite(&a, round: 5, global: try tensors(1), plan: userPlan())
        guard case let .decline(5, .policy, reason)? = actions.first, actions.count == 1 else { return XCTFail("\(actions)") }
        XCTAssertEqual(reason, "policy: the plan's privacy unit is user, this client's ledger counts ε per record "
                       + "(its policy's privacy_unit)")
        // A plan without privacy, which a policy may accept, has no unit to object to.
        var open = ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10, requirePrivacy: false, privacyUnit: .user)
        var plain = Self.plan
        plain.noiseMultiplier = 0
        XCTAssertNil(open.objection(to: plain))
        open.requirePrivacy = true
        XCTAssertNotNil(open.objection(to: plain))
    }

    func testPolicyAndPlanReadTheUnitAndDefaultToRecord() throws {
        func policy(_ json: String) throws -> ClientPolicy {
            try JSONFile.decode(ClientPolicy.self, from: Data(json.utf8), keys: .declared)
        }
        XCTAssertEqual(try policy(#"{"max_epsilon": 8, "delta": 1e-5, "max_steps_per_round": 3}"#).privacyUnit, .record)
        XCTAssertEqual(try policy(#"{"max_epsilon": 8, "delta": 1e-5, "max_steps_per_round": 3, "privacy_unit": "user"}"#).privacyUnit,
                       .user)
        XCTAssertThrowsError(try policy(#"{"max_epsilon": 8, "delta": 1e-5, "max_steps_per_round": 3, "privacy_unit": "people"}"#)) {
            XCTAssertTrue("\($0)".contains("privacy_unit"), "\($0)")
        }

        // The plan as JSON (configuration files, audit records): written with its unit, read as record without one.
        let encoded = try JSONEncoder().encode(userPlan())
        XCTAssertTrue(String(decoding: encoded, as: UTF8.self).contains(#""privacy_unit":"user""#))
        XCTAssertEqual(try JSONDecoder().decode(TrainingPlan.self, from: encoded), userPlan())
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        object["privacy_unit"] = nil
        let old = try JSONDecoder().decode(TrainingPlan.self, from: try JSONSerialization.data(withJSONObject: object))
        XCTAssertEqual(old, Self.plan)

        // On the wire: the invitation carries the unit; an unknown one is refused by name.
        var message = invite(round: 9, tensors: try tensors(1))
        message.plan = userPlan()
        let frame = try message.frame()
        XCTAssertEqual(try Invite(frame: frame).plan.privacyUnit, .user)
        var bad = frame
        // The unit is followed (protocol 4) by the noise placement "local" and 12 bytes of distributed fields, then
        // (protocol 5) 12 bytes of the condition accuracy release's bound and z, (protocol 6) the held-out release flag, and
        // (protocol 7) adaptive clipping's σ_b (8 bytes).
        let tail = Array("user".utf8), after = Array("local".utf8).count + 4 + 12 + 12 + 1 + 8
        let end = bad.payload.count - after
        XCTAssertEqual(Array(bad.payload[(end - 4)..<end]), tail)
        bad.payload.replaceSubrange((end - 4)..<end, with: Array("uzer".utf8))
        XCTAssertThrowsError(try Invite(frame: bad)) { XCTAssertTrue("\($0)".contains("privacyUnit"), "\($0)") }
    }
}
