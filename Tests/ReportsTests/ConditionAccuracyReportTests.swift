import Audit
import Foundation
import Reports
import Wire
import XCTest

/// Issue 17: the pooled condition accuracy of a round, as its audit record keeps it, in the `rounds start --wait` line,
/// its JSON and the report; rounds without it show nothing of it.
final class ConditionAccuracyReportTests: XCTestCase {
    func records() -> [AuditRecord] {
        var records = ReportFixtures.records()
        records[0].clients[0].conditionAccuracy = ConditionAccuracyRelease(correctBefore: 2, correctAfter: 6, count: 10, noiseMultiplier: 5)
        let pooled = ReleasedAccuracy(records[0].clients.compactMap(\.conditionAccuracy))
        records[0].conditionAccuracyBefore = pooled?.before
        records[0].conditionAccuracyAfter = pooled?.after
        records[0].conditionAccuracyStandardError = pooled?.standardError
        return records
    }

    func testTheLineAndJSONCarryTheAccuracyOnlyWhenReleased() throws {
        let record = records()[0]
        let se = 5 * 3.0.squareRoot() * (1 + 0.36).squareRoot() / 10
        XCTAssertEqual(record.conditionAccuracyStandardError ?? 0, se, accuracy: 1e-12)
        let plainLine = RoundSummary(ReportFixtures.records()[0]).line
        XCTAssertEqual(RoundSummary(record).line, plainLine.replacingOccurrences(
            of: ", max ε", with: String(format: ", condition accuracy (DP-released, ± %.3f) 0.200 → 0.600, max ε", se)))
        // Control: the fixture's own record (no release) prints as before.
        XCTAssertFalse(plainLine.contains("condition"))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(RoundSummary(record))) as? [String: Any])
        XCTAssertEqual(json["condition_accuracy_before"] as? Double, 0.2)
        XCTAssertEqual(json["condition_accuracy_after"] as? Double, 0.6)
        XCTAssertEqual(json["condition_accuracy_standard_error"] as? Double, record.conditionAccuracyStandardError)
        let plain = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(RoundSummary(ReportFixtures.records()[0])))
                                  as? [String: Any])
        XCTAssertNil(plain["condition_accuracy_before"])
        // The audit record keeps the figures and the client's release, and reads back equal; older records have none.
        let encoded = try JSONEncoder().encode(record)
        XCTAssertEqual(try JSONDecoder().decode(AuditRecord.self, from: encoded), record)
        XCTAssertTrue(String(decoding: encoded, as: UTF8.self).contains("\"condition_accuracy_before\""))
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(ReportFixtures.records()[0]), as: UTF8.self).contains("condition_accuracy"))
        // `audit --json`: the pooled figures and the client's release.
        let row = try AuditTable.json(record)
        XCTAssertEqual(row["condition_accuracy_after"] as? Double, 0.6)
        XCTAssertEqual(row["condition_accuracy_standard_error"] as? Double, record.conditionAccuracyStandardError)
        let client = try XCTUnwrap((row["clients"] as? [[String: Any]])?.first)
        XCTAssertEqual((client["condition_accuracy"] as? [String: Any])?["correct_after"] as? Int, 6)
    }

    func testTheReportHasAnAccuracySectionOnlyWhenReleased() throws {
        XCTAssertFalse(AuditReport.html(AuditReportInput(records: ReportFixtures.records(), chain: .verified(records: 4, publicKey: "")))
            .contains("id=\"accuracy\""))
        let records = records()
        let html = AuditReport.html(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        ReportFixtures.assertSelfContained(html)
        let rows = ReportFixtures.rows(html, table: "accuracy-table")
        XCTAssertEqual(rows.count, 1)
        XCTAssertEqual(rows.first?.attributes["data-round"], "\(records[0].round)")
        XCTAssertEqual(rows.first?.cells["accuracy-before"], "0.200")
        XCTAssertEqual(rows.first?.cells["accuracy-after"], "0.600")
        XCTAssertEqual(rows.first?.cells["accuracy-se"], String(format: "± %.3f", records[0].conditionAccuracyStandardError ?? 0))
        XCTAssertEqual(rows.first?.cells["accuracy-records"], "10.0")
        XCTAssertEqual(rows.first?.cells["accuracy-clients"], "1")
    }

    /// A probe that recorded its notes' conditions marks each assessment as naming it or not (escaped); one that did
    /// not marks nothing (the control: AuditReportTests' exact cells).
    func testTheProbeSectionMarksWhetherEachAssessmentNamesTheCondition() {
        let probe = PublicProbe(adapterRound: 4, notes: [
            PublicProbe.Note(title: "t", prompt: "p\nAssessment:", reference: "r", before: "The patient", after: "Heart failure.",
                             condition: "heart <failure>", namedBefore: false, namedAfter: true),
        ])
        let html = AuditReport.html(AuditReportInput(records: ReportFixtures.records(), chain: .verified(records: 4, publicKey: ""),
                                                     probe: probe))
        XCTAssertTrue(html.contains("<td data-field=\"probe-before\">The patient<br><small data-field=\"names\">does not name "
                                    + "heart &lt;failure&gt;</small></td>"), html)
        XCTAssertTrue(html.contains("<td data-field=\"probe-after\">Heart failure.<br><small data-field=\"names\">names "
                                    + "heart &lt;failure&gt;</small></td>"), html)
    }
}
