import Foundation
import LanguageModel
import ModelFormats
import TestSupport
import XCTest
@testable import FineTuning

/// `train --out DIR`: the adapter's two files replace the old ones in one step, and a directory
/// holding anything but an adapter's files is refused rather than replaced.
final class AdapterOutputTests: XCTestCase {
    var directory: URL!
    var out: URL!

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("adapter-output")
        out = directory.appendingPathComponent("adapter")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A one-layer adapter of rank `rank` on q_proj (4 → 4) whose values are all `value`.
    func adapter(rank: Int, value: Float) -> LoRAAdapter {
        let pair = LoRAPair(a: [Float](repeating: value, count: rank * 4), b: [Float](repeating: value, count: 4 * rank),
                            rank: rank, inFeatures: 4, outFeatures: 4)
        return LoRAAdapter(rank: rank, alpha: Double(2 * rank), targets: [.qProj], layers: [[.qProj: pair]])
    }

    func rank(in url: URL) throws -> Int? {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url.appendingPathComponent("adapter_config.json")))
        return (json as? [String: Any])?["r"] as? Int
    }

    func entries(_ url: URL) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: url.path).sorted() }

    func testWritesAMissingDirectoryThenReplacesTheAdapterWhole() throws {
        try AdapterOutput.write(adapter(rank: 1, value: 0.5), to: out, baseModel: "base.gguf")
        XCTAssertEqual(try entries(out), ["adapter_config.json", "adapter_model.safetensors"])
        XCTAssertEqual(try rank(in: out), 1)
        try AdapterOutput.write(adapter(rank: 2, value: 0.25), to: out, baseModel: "base.gguf")
        XCTAssertEqual(try rank(in: out), 2)
        let tensors = try PEFTAdapter(directory: out).tensors
        XCTAssertEqual(tensors.values.first?.values.first, 0.25)
        XCTAssertEqual(try entries(directory), ["adapter"], "no temporary or old directory is left beside it")
    }

    /// Writing file by file into DIR (the old way), a failure at the second file left the new
    /// safetensors beside the old config: a mixed adapter. Here the second file's place is taken by a
    /// directory a rename cannot replace; the adapter is written beside DIR and swapped in, so DIR ends
    /// up holding the new adapter whole (before this change: new weights, old config, and an error).
    func testNoMixtureWhenTheSecondFileCannotBeWrittenInPlace() throws {
        try AdapterOutput.write(adapter(rank: 1, value: 0.5), to: out, baseModel: nil)
        let config = out.appendingPathComponent("adapter_config.json")
        try FileManager.default.removeItem(at: config)
        try FileManager.default.createDirectory(at: config.appendingPathComponent("blocker"), withIntermediateDirectories: true)

        try? AdapterOutput.replace(out, with: adapter(rank: 2, value: 0.25), baseModel: nil)
        let weights = try PEFTAdapter(directory: out).tensors.values.first?.values.first
        var isDirectory: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: config.path, isDirectory: &isDirectory))
        XCTAssertFalse(isDirectory.boolValue, "the config is the new adapter's file")
        XCTAssertEqual(try rank(in: out), 2)
        XCTAssertEqual(weights, 0.25, "weights and config come from the same adapter")
    }

    func testADirectoryWithOtherFilesIsRefusedAndLeftAlone() throws {
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: out.appendingPathComponent("notes.txt"))
        try Data("{}".utf8).write(to: out.appendingPathComponent("adapter_config.json"))
        XCTAssertThrowsError(try AdapterOutput.write(adapter(rank: 1, value: 0.5), to: out, baseModel: nil)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(self.out.path) && text.contains("notes.txt"), text)
            XCTAssertTrue(text.contains("Give --out a new directory"), text)
        }
        XCTAssertEqual(try entries(out), ["adapter_config.json", "notes.txt"])
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("notes.txt"), encoding: .utf8), "keep me")

        // An adapter file's name on something that is not a regular file is not an adapter either.
        try FileManager.default.removeItem(at: out.appendingPathComponent("notes.txt"))
        try FileManager.default.createDirectory(at: out.appendingPathComponent("adapter_model.safetensors"),
                                                withIntermediateDirectories: true)
        XCTAssertThrowsError(try AdapterOutput.checkReplaceable(out))
        // A file where the directory should be is refused; an empty directory is fine.
        let file = directory.appendingPathComponent("file")
        try Data().write(to: file)
        XCTAssertThrowsError(try AdapterOutput.checkReplaceable(file))
        let empty = directory.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        XCTAssertNoThrow(try AdapterOutput.checkReplaceable(empty))
    }
}
