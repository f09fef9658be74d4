import Audit
import Foundation
import Reports
import Wire
import XCTest

/// Issue 17: a distributed-DP round's audit record keeps the unit, the noise planned and survived, and each
/// participant's trust with its ε both ways; the record survives JSON as written, and the report shows them.
final class DistributedReportTests: XCTestCase {
    func distributedRecords() -> [AuditRecord] {
        var records = ReportFixtures.records()
        records[1].distributed = DistributedNoiseRecord(unit: "user", cohort: 4, threshold: 3, survivors: 3, fractionalBits: 21,
                                                        shareSigma: 1_234_567, plannedNoiseMultiplier: 1.1,
                                                        survivingNoiseMultiplier: 1.1, wrapProbability: 3.2e-10, expectedBatch: 64)
        for index in records[1].clients.indices {
            records[1].clients[index].trust = DistributedTrustFigures(assumeHonest: 2 + index, roundEpsilon: 0.25 + Double(index) / 100,
                                                                      roundEpsilonTrustingNoOne: 0.875,
                                                                      epsilonTrustingNoOne: 2.5 + Double(index))
        }
        return records
    }

    /// The section lists one row per participant of each distributed round, with the figures of the record;
    /// a log of local rounds has no such section (control: the fixtures' records alone render none).
    func testTheReportShowsUnitTrustAndBothEpsilons() throws {
        XCTAssertFalse(AuditReport.html(AuditReportInput(records: ReportFixtures.records(), chain: .verified(records: 4, publicKey: "")))
            .contains("id=\"distributed\""))
        let records = distributedRecords()
        let html = AuditReport.html(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        ReportFixtures.assertSelfContained(html)
        let rows = ReportFixtures.rows(html, table: "distributed-table")
        XCTAssertEqual(rows.count, records[1].clients.count)
        XCTAssertEqual(rows.map { $0.attributes["data-round"] }, records[1].clients.map { _ in "\(records[1].round)" })
        XCTAssertEqual(rows.first?.attributes["data-client"], records[1].clients[0].client)
        XCTAssertFalse(html.contains("<script>alert"), "a hostile client id is escaped in this section too")
        XCTAssertEqual(rows.first?.cells["unit"], "user")
        XCTAssertEqual(rows.first?.cells["shares"], "4 / 3 / 3")
        XCTAssertEqual(rows.first?.cells["z-survived"], "1.100")
        XCTAssertEqual(rows.first?.cells["wrap"], "3.2e-10")
        XCTAssertEqual(rows.map { $0.cells["assume-honest"] }, records[1].clients.indices.map { "\(2 + $0)" })
        XCTAssertEqual(rows.first?.cells["epsilon-assumed"], "0.250")
        XCTAssertEqual(rows.first?.cells["epsilon-trusting-no-one"], "0.875")
        XCTAssertEqual(rows.first?.cells["epsilon-cumulative"], String(format: "%.3f", records[1].clients[0].epsilon))
        XCTAssertEqual(rows.map { $0.cells["epsilon-cumulative-trusting-no-one"] },
                       records[1].clients.indices.map { String(format: "%.3f", 2.5 + Double($0)) })
    }

    /// A record from before protocol 5 has no cumulative ε trusting no one: the cell says so ("–"), never 0.
    func testAnOlderRecordShowsNoCumulativeTrustingNoOne() throws {
        var records = distributedRecords()
        for index in records[1].clients.indices { records[1].clients[index].trust?.epsilonTrustingNoOne = nil }
        let json = String(decoding: try JSONEncoder().encode(records[1]), as: UTF8.self)
        XCTAssertFalse(json.contains("\"epsilon_trusting_no_one\""), json)
        let html = AuditReport.html(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        let rows = ReportFixtures.rows(html, table: "distributed-table")
        XCTAssertEqual(Set(rows.map { $0.cells["epsilon-cumulative-trusting-no-one"] }), ["–"])
    }

    /// The record's JSON names the fields and reads back equal; a record without them (older, or local) reads as nil.
    func testTheAuditRecordKeepsTheDistributedFigures() throws {
        let record = distributedRecords()[1]
        let data = try JSONEncoder().encode(record)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"distributed\"", "\"surviving_noise_multiplier\"", "\"assume_honest\"", "\"round_epsilon_trusting_no_one\"",
                    "\"epsilon_trusting_no_one\""] {
            XCTAssertTrue(text.contains(key), key)
        }
        XCTAssertEqual(try JSONDecoder().decode(AuditRecord.self, from: data), record)
        let local = try JSONDecoder().decode(AuditRecord.self, from: JSONEncoder().encode(ReportFixtures.records()[0]))
        XCTAssertNil(local.distributed)
        XCTAssertNil(local.clients.first?.trust)
    }
}
