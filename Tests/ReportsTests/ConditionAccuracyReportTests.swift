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
}
