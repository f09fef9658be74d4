import Audit
import Foundation
import Reports
import Wire
import XCTest

/// Issue 17: a client-level round's audit record keeps the unit, the sampling and the federation's client-level ε,
/// through JSON as written, and the report shows them in their own section, skipped rounds included.
final class ClientLevelReportTests: XCTestCase {
    func clientLevelRecords() -> [AuditRecord] {
        var records = ReportFixtures.records()
        records[0].clientLevel = ClientLevelRecord(population: 40, sampled: 5, samplingRate: 0.125, noiseMultiplier: 1.1, clipNorm: 0.05,
                                                   expectedCohort: 5, epsilon: 0.4321, delta: 1e-5, epsilonBudget: 8, roundsCharged: 1)
        records[1].clientLevel = ClientLevelRecord(population: 40, sampled: 1, samplingRate: 0.125, noiseMultiplier: 1.1, clipNorm: 0.05,
                                                   expectedCohort: 5, epsilon: 0.6543, delta: 1e-5, epsilonBudget: 8, roundsCharged: 2)
        records[1].status = "aborted"
        records[1].abortReason = "skipped: 1 sampled client connected"
        return records
    }

    /// One row per client-level round with the record's figures; control: the fixtures' records alone render no section.
    func testTheReportShowsTheUnitSamplingAndTheFederationsEpsilon() throws {
        XCTAssertFalse(AuditReport.html(AuditReportInput(records: ReportFixtures.records(), chain: .verified(records: 4, publicKey: "")))
            .contains("id=\"client-level\""))
        let records = clientLevelRecords()
        let html = AuditReport.html(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        ReportFixtures.assertSelfContained(html)
        let rows = ReportFixtures.rows(html, table: "client-level-table")
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows.map { $0.attributes["data-round"] }, ["\(records[0].round)", "\(records[1].round)"])
        XCTAssertEqual(rows[0].cells["unit"], "client")
        XCTAssertEqual(rows[0].cells["population"], "40")
        XCTAssertEqual(rows[0].cells["sampled"], "5")
        XCTAssertEqual(rows[0].cells["q"], "0.125")
        XCTAssertEqual(rows[0].cells["expected-cohort"], "5")
        XCTAssertEqual(rows[0].cells["epsilon"], "0.432")
        XCTAssertEqual(rows[1].cells["status"], "skipped")
        XCTAssertEqual(rows[1].cells["epsilon"], "0.654")
        XCTAssertEqual(rows[1].cells["budget"], "8")
    }

    /// The record's JSON names the fields and reads back equal; a record without them reads as nil.
    func testTheAuditRecordKeepsTheClientLevelFigures() throws {
        let record = clientLevelRecords()[0]
        let data = try JSONEncoder().encode(record)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"client_level\"", "\"expected_cohort\"", "\"epsilon_budget\"", "\"rounds_charged\"", "\"unit\":\"client\""] {
            XCTAssertTrue(text.contains(key), key)
        }
        XCTAssertEqual(try JSONDecoder().decode(AuditRecord.self, from: data), record)
        XCTAssertNil(try JSONDecoder().decode(AuditRecord.self, from: JSONEncoder().encode(ReportFixtures.records()[0])).clientLevel)
        XCTAssertFalse(text.contains("adaptive_clipping"), "absent without adaptive clipping, so earlier records encode the same")
    }

    /// Adaptive clipping (Andrew et al. 2021): the record keeps γ, η, σ_b and, for a committed round, b̄, the next S and
    /// z_Δ, through JSON; the report adds their three columns ("n/a" for the skipped round, which moved nothing) and a
    /// note. Control: without adaptive clipping the table has no such column.
    func testTheReportShowsAdaptiveClipping() throws {
        XCTAssertFalse(AuditReport.html(AuditReportInput(records: clientLevelRecords(), chain: .verified(records: 4, publicKey: "")))
            .contains("data-field=\"next-clip\""))
        var records = clientLevelRecords()
        records[0].clientLevel?.adaptiveClipping = AdaptiveClippingRecord(
            targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2, unclippedFraction: 0.8126, nextClipNorm: 0.04709,
            updateNoiseMultiplier: 1.1843, countNoise: 2.0004)
        records[1].clientLevel?.adaptiveClipping = AdaptiveClippingRecord(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2)
        let data = try JSONEncoder().encode(records[0])
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"adaptive_clipping\"", "\"target_quantile\"", "\"unclipped_fraction\"", "\"next_clip_norm\"",
                    "\"update_noise_multiplier\""] {
            XCTAssertTrue(text.contains(key), key)
        }
        XCTAssertEqual(try JSONDecoder().decode(AuditRecord.self, from: data), records[0])
        let html = AuditReport.html(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        ReportFixtures.assertSelfContained(html)
        XCTAssertTrue(html.contains("Adaptive clipping (Andrew et al. 2021)"))
        let rows = ReportFixtures.rows(html, table: "client-level-table")
        XCTAssertEqual(rows[0].cells["unclipped-fraction"], "0.813 (0.5)")
        XCTAssertEqual(rows[0].cells["next-clip"], "0.04709")
        XCTAssertEqual(rows[0].cells["update-z"], "1.184")
        XCTAssertEqual(rows[1].cells["next-clip"], "n/a")
    }
}
