import Foundation
import TestSupport
import Wire
import XCTest

/// Issue 17: no client's private text reaches the coordinator or its report. A marker is planted in the clients'
/// data (as the `user` of training and held-out records); after two distributed rounds through real processes, no
/// file the coordinator keeps or logs, and not the report, holds the marker. Control: the same search over the clients'
/// folders finds it, so the search would see a leak.
final class PrivateTextEndToEndTests: XCTestCase {
    static let marker = "PRIVATE-MARKER-7f3c9a1e"

    func testAMarkerInClientDataNeverReachesTheCoordinatorOrItsReport() throws {
        let plan = TrainingPlan(steps: 1, learningRate: 0.05, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"],
                                noisePlacement: .distributed, expectedBatch: 22.5, maxContributions: 64)
        let names = ["client-a", "client-b", "client-c"]
        let federation = try TinyFederation.make(clients: names.map { ($0, 30, 50) }, minClients: 3, secureAggregation: true,
                                                 plan: plan, assumeHonest: 2)
        defer { federation.stopAll() }
        let marked = "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], \"user\": \"\(Self.marker)\"}\n"
        // Secure aggregation's threshold is the whole cohort here, so every client must take part: each is marked.
        for (name, file) in [("client-a", "train.jsonl"), ("client-b", "eval.jsonl"), ("client-c", "train.jsonl"),
                             ("client-c", "eval.jsonl")] {
            let url = federation.directory(of: name).appendingPathComponent(file)
            try (try Data(contentsOf: url) + Data(marked.utf8)).write(to: url)
        }

        try federation.start(names)
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)
        let report = try Executables.run(Executables.coordinator, ["report", "--state", federation.coordinator.path,
                                                                    "--out", federation.root.appendingPathComponent("report.html").path])
        XCTAssertEqual(report.status, 0, report.stderr)

        let coordinatorSide = [federation.coordinator, federation.serverLog, federation.root.appendingPathComponent("report.html"),
                               federation.coordinatorConfiguration]
        XCTAssertEqual(try coordinatorSide.flatMap { try Self.files(containing: Self.marker, under: $0) }, [],
                       "the coordinator's state, log or report holds a client's private text")
        // Control: the search finds the marker where it is (each marked client's folder).
        for name in names {
            XCTAssertFalse(try Self.files(containing: Self.marker, under: federation.directory(of: name)).isEmpty,
                           "control: \(name)'s own folder holds the marker")
        }
    }

    /// Every regular file at or under `url` whose bytes contain `text`.
    static func files(containing text: String, under url: URL) throws -> [String] {
        let needle = Data(text.utf8)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return [] }
        let paths: [URL]
        if isDirectory.boolValue {
            let enumerator = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.isRegularFileKey])
            paths = (enumerator?.allObjects as? [URL] ?? []).filter {
                (try? $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true
            }
        } else {
            paths = [url]
        }
        return try paths.filter { try Data(contentsOf: $0).range(of: needle) != nil }.map(\.path)
    }
}
