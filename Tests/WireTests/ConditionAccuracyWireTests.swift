import Foundation
import XCTest
@testable import Wire

/// Protocol 5 (issue 17): a client's condition accuracy release travels behind a presence flag, impossible values are
/// refused by name, the plan carries its bound and z, and the coordinator's pooled figure is the direct computation.
final class ConditionAccuracyWireTests: XCTestCase {
    func report(_ accuracy: ConditionAccuracyRelease?) -> MetricsReport {
        let release = HeldOutRelease(lossBefore: 300_000, lossAfter: 250_000, count: 100_000, lossClip: 6, noiseMultiplier: 5)
        return MetricsReport(round: 2, metrics: ClientRoundMetrics(client: "clinic-1", epsilon: 1.5, delta: 1e-5, epsilonBudget: 8,
                                                                   heldOut: release, conditionAccuracy: accuracy))
    }

    func decoded(_ report: MetricsReport) throws -> MetricsReport {
        try MetricsReport(frame: try Frame.decode(try report.frame().encoded()))
    }

    func testTheReleaseTravelsOrIsAbsent() throws {
        let accuracy = ConditionAccuracyRelease(correctBefore: -3, correctAfter: 9, count: 11, noiseMultiplier: 5)
        XCTAssertEqual(try decoded(report(accuracy)).metrics.conditionAccuracy, accuracy)
        XCTAssertNil(try decoded(report(nil)).metrics.conditionAccuracy, "a client without conditions sends none")
        // JSON (the audit record's clients) keeps it, under condition_accuracy, and leaves it out when absent.
        let metrics = report(accuracy).metrics
        let json = String(decoding: try JSONEncoder().encode(metrics), as: UTF8.self)
        XCTAssertTrue(json.contains("\"condition_accuracy\":{"), json)
        XCTAssertEqual(try JSONDecoder().decode(ClientRoundMetrics.self, from: Data(json.utf8)), metrics)
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(report(nil).metrics), as: UTF8.self).contains("condition_accuracy"))
    }

    /// Values no count of at most 1000 records plus 64 σ of noise reaches, and a z outside the plan's range, are refused
    /// naming the field; the values at the edge pass (the control).
    func testImpossibleValuesAreRefusedByName() throws {
        let z = 5.0, reach = Int64((64 * z * 3.0.squareRoot()).rounded(.up))
        XCTAssertNoThrow(try decoded(report(ConditionAccuracyRelease(correctBefore: -reach, correctAfter: 1000 + reach, count: 0,
                                                                      noiseMultiplier: z))))
        for (release, field) in [(ConditionAccuracyRelease(correctBefore: -reach - 1, correctAfter: 0, count: 5, noiseMultiplier: z), "correct_before"),
                                 (ConditionAccuracyRelease(correctBefore: 0, correctAfter: 1001 + reach, count: 5, noiseMultiplier: z), "correct_after"),
                                 (ConditionAccuracyRelease(correctBefore: 0, correctAfter: 0, count: .max, noiseMultiplier: z), "count"),
                                 (ConditionAccuracyRelease(correctBefore: 0, correctAfter: 0, count: 5, noiseMultiplier: 0.01), "noise_multiplier"),
                                 (ConditionAccuracyRelease(correctBefore: 0, correctAfter: 0, count: 5, noiseMultiplier: .nan), "noise_multiplier")] {
            XCTAssertThrowsError(try decoded(report(release)), "\(release)") {
                XCTAssertTrue("\($0)".contains("metrics.conditionAccuracy") && "\($0)".contains(field), "\($0)")
            }
        }
    }

    /// The plan's `accuracy_records` and `accuracy_noise_multiplier`: defaults when absent, validated by field, carried by
    /// the invitation.
    func testThePlanCarriesTheBoundAndTheNoise() throws {
        var plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1, clipNorm: 1, delta: 1e-5,
                                maxLength: 64, rank: 4, alpha: 8, targets: ["q_proj"], accuracyRecords: 7, accuracyNoiseMultiplier: 3)
        let invite = Invite(round: 4, plan: plan, aggregation: "fedavg", secureAggregation: false, adapterSHA256: String(repeating: "a", count: 64),
                            deadlineSeconds: 30)
        let read = try Invite(frame: try Frame.decode(try invite.frame().encoded()))
        XCTAssertEqual(read.plan.accuracyRecords, 7)
        XCTAssertEqual(read.plan.accuracyNoiseMultiplier, 3)
        XCTAssertEqual(read.plan, plan)
        let json = try JSONEncoder().encode(plan)
        XCTAssertEqual(try JSONDecoder().decode(TrainingPlan.self, from: json), plan)
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        XCTAssertEqual(object["accuracy_records"] as? Int, 7)
        object["accuracy_records"] = nil
        object["accuracy_noise_multiplier"] = nil
        let old = try JSONDecoder().decode(TrainingPlan.self, from: try JSONSerialization.data(withJSONObject: object))
        XCTAssertEqual(old.accuracyRecords, TrainingPlan.defaultAccuracyRecords)
        XCTAssertEqual(old.accuracyNoiseMultiplier, TrainingPlan.defaultAccuracyNoiseMultiplier)
        for (records, z, field) in [(-1, 5.0, "accuracy_records"), (1001, 5.0, "accuracy_records"), (10, 0.0, "accuracy_noise_multiplier"),
                                    (10, .infinity, "accuracy_noise_multiplier")] {
            plan.accuracyRecords = records
            plan.accuracyNoiseMultiplier = z
            XCTAssertThrowsError(try plan.validate()) { XCTAssertTrue("\($0)".contains(field), "\($0)") }
        }
        plan.accuracyRecords = 0
        plan.accuracyNoiseMultiplier = 5
        XCTAssertNoThrow(try plan.validate(), "0 asks for no accuracy release")
    }

    /// The pooled accuracy against a direct computation over three clients' releases: sums of the released counts, the
    /// fractions clamped to [0, 1], the standard error √(Σσ²)·√(1 + a²)/C; none without releases, no fraction without a
    /// positive count.
    func testThePooledAccuracyIsTheDirectComputation() throws {
        let releases = [ConditionAccuracyRelease(correctBefore: 3, correctAfter: 7, count: 10, noiseMultiplier: 5),
                        ConditionAccuracyRelease(correctBefore: -2, correctAfter: 4, count: 9, noiseMultiplier: 5),
                        ConditionAccuracyRelease(correctBefore: 1, correctAfter: 6, count: 12, noiseMultiplier: 2)]
        let pooled = try XCTUnwrap(ReleasedAccuracy(releases))
        XCTAssertEqual(pooled.records, 31)
        XCTAssertEqual(try XCTUnwrap(pooled.before), 2.0 / 31, accuracy: 1e-15)
        XCTAssertEqual(try XCTUnwrap(pooled.after), 17.0 / 31, accuracy: 1e-15)
        let sigma = (3 * 25.0 + 3 * 25 + 3 * 4).squareRoot()
        XCTAssertEqual(try XCTUnwrap(pooled.standardError), sigma * (1 + pow(17.0 / 31, 2)).squareRoot() / 31, accuracy: 1e-12)
        let clamped = try XCTUnwrap(ReleasedAccuracy([ConditionAccuracyRelease(correctBefore: -4, correctAfter: 12, count: 8, noiseMultiplier: 5)]))
        XCTAssertEqual(clamped.before, 0)
        XCTAssertEqual(clamped.after, 1)
        XCTAssertNil(ReleasedAccuracy([]))
        let empty = try XCTUnwrap(ReleasedAccuracy([ConditionAccuracyRelease(correctBefore: 2, correctAfter: 1, count: -3, noiseMultiplier: 5)]))
        XCTAssertNil(empty.before)
        XCTAssertNil(empty.standardError)
    }
}
