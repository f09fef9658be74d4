import Foundation
import TestSupport
import XCTest
@testable import ModelFormats

final class SafetensorsAndConfigTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// A safetensors file with a hand-written header, for lying headers.
    func file(header: String, dataBytes: Int) throws -> URL {
        var data = Data()
        let json = Data(header.utf8)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        data.append(contentsOf: [UInt8](repeating: 0, count: dataBytes))
        let url = directory.appendingPathComponent("t.safetensors")
        try data.write(to: url)
        return url
    }

    func expectError(_ url: URL, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(url: url), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' missing from: \(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(url.path), file: file, line: line)
        }
    }

    func testTinyLlamaTensors() throws {
        let file = try SafetensorsFile(url: Fixtures.url("tiny-llama/model.safetensors"))
        XCTAssertEqual(file.tensors["model.embed_tokens.weight"]?.shape, [512, 64])
        XCTAssertEqual(file.tensors["model.layers.1.mlp.down_proj.weight"]?.shape, [64, 160])
        XCTAssertEqual(file.tensors["model.layers.0.self_attn.k_proj.weight"]?.shape, [32, 64])
        XCTAssertEqual(try file.floats("model.norm.weight").count, 64)
    }

    func testWriterRoundTrip() throws {
        let url = directory.appendingPathComponent("w.safetensors")
        try SafetensorsWriter.write([("b", [2, 3], [1, 2, 3, 4, 5, 6]), ("a", [1], [-0.5])], metadata: ["format": "pt"], to: url)
        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(try file.floats("b"), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try file.floats("a"), [-0.5])
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.tensors["a"]!.byteRange.lowerBound % 8, 0, "data section is 8-byte aligned")
    }

    func testHalfAndBFloat16Conversions() {
        XCTAssertEqual(floatFromHalf(0x3C00), 1)
        XCTAssertEqual(floatFromHalf(0xC000), -2)
        XCTAssertEqual(floatFromHalf(0x0001), Float(pow(2.0, -24.0)))  // smallest subnormal
        XCTAssertEqual(floatFromHalf(0x7C00), .infinity)
        XCTAssertTrue(floatFromHalf(0x7E00).isNaN)
        XCTAssertEqual(halfFromFloat(65504), 0x7BFF)
        XCTAssertEqual(halfFromFloat(1 + Float(pow(2.0, -11.0))), 0x3C00, "ties round to even")
        XCTAssertEqual(halfFromFloat(1 + 3 * Float(pow(2.0, -11.0))), 0x3C02, "ties round to even (up)")
        XCTAssertEqual(floatFromBFloat16(0x3F80), 1)
        XCTAssertEqual(floatFromBFloat16(0xC0A0), -5)
    }

    func testLyingHeaders() throws {
        expectError(try file(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", dataBytes: 8), "outside")
        expectError(try file(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", dataBytes: 16), "needs 16")
        expectError(try file(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", dataBytes: 16), "outside")
        expectError(try file(header: "{\"x\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", dataBytes: 16),
                    "tensor 'x': unsupported dtype I64")
        expectError(try file(header: "not json", dataBytes: 0), "not a JSON object")
        expectError(try file(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                             + "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", dataBytes: 16), "overlap")
        expectError(try file(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                             dataBytes: 8), "larger than the file")
        // Header length larger than the file.
        var data = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array("{}".utf8))
        let url = directory.appendingPathComponent("h.safetensors")
        try data.write(to: url)
        expectError(url, "header length")
        try Data([1, 2, 3]).write(to: url)
        expectError(url, "truncated")
    }

    func testConfigJSON() throws {
        let c = try LlamaConfiguration(configJSON: Fixtures.url("tiny-llama/config.json"))
        XCTAssertEqual([c.vocabSize, c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads,
                        c.numKeyValueHeads, c.headDim, c.maxPositionEmbeddings], [512, 64, 160, 2, 4, 2, 16, 128])
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(c.rmsNormEps, 1e-5)

        var json = try Fixtures.json("tiny-llama/config.json")
        json.removeValue(forKey: "hidden_size")
        let url = directory.appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertThrowsError(try LlamaConfiguration(configJSON: url)) {
            XCTAssertTrue("\($0)".contains("'hidden_size'") && "\($0)".contains(url.path), "\($0)")
        }
        json["hidden_size"] = "sixty-four"
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertThrowsError(try LlamaConfiguration(configJSON: url)) { XCTAssertTrue("\($0)".contains("'hidden_size'")) }
        json["hidden_size"] = 64
        json["num_key_value_heads"] = 3
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertThrowsError(try LlamaConfiguration(configJSON: url)) { XCTAssertTrue("\($0)".contains("num_key_value_heads")) }
        json["num_key_value_heads"] = 2
        json["model_type"] = "mistral"
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertThrowsError(try LlamaConfiguration(configJSON: url)) { XCTAssertTrue("\($0)".contains("mistral")) }
    }

    func testPEFTAdapterReadWrite() throws {
        let adapter = try PEFTAdapter(directory: Fixtures.url("tiny-llama/peft-adapter"))
        XCTAssertEqual(adapter.rank, 4)
        XCTAssertEqual(adapter.alpha, 8)
        XCTAssertEqual(adapter.scaling, 2)
        XCTAssertEqual(adapter.targetModules.count, 7)
        let q = try XCTUnwrap(adapter.pair(layer: 1, module: "q_proj"))
        XCTAssertEqual([q.rank, q.inFeatures, q.outFeatures], [4, 64, 64])
        let down = try XCTUnwrap(adapter.pair(layer: 0, module: "down_proj"))
        XCTAssertEqual([down.inFeatures, down.outFeatures], [160, 64])
        XCTAssertNil(adapter.pair(layer: 2, module: "q_proj"))

        let out = directory.appendingPathComponent("adapter")
        try PEFTAdapter.write(rank: adapter.rank, alpha: adapter.alpha, targetModules: adapter.targetModules,
                              tensors: adapter.tensors, to: out)
        let again = try PEFTAdapter(directory: out)
        XCTAssertEqual(again.tensors, adapter.tensors)
        XCTAssertEqual(again.scaling, 2)

        var broken = adapter.tensors
        broken[broken.keys.first!] = AdapterTensor(shape: [1], values: [.nan])
        XCTAssertThrowsError(try PEFTAdapter.write(rank: 4, alpha: 8, targetModules: [], tensors: broken,
                                                   to: directory.appendingPathComponent("nan"))) {
            XCTAssertTrue("\($0)".contains("non-finite"))
        }
        XCTAssertThrowsError(try PEFTAdapter(directory: directory.appendingPathComponent("missing"))) {
            XCTAssertTrue("\($0)".contains("adapter_config.json"))
        }
    }

    /// An empty `adapter_config.json` (or `config.json`) is refused and leaves nothing behind: Foundation's
    /// whole-file read kept 4,096 bytes per empty file, found by fuzzing (issue 14); 10,000 refusals kept
    /// 41 MB of heap before the fix.
    func testEmptyConfigFilesAreRefusedWithoutLeaking() throws {
        let adapter = directory.appendingPathComponent("adapter")
        try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
        try Data().write(to: adapter.appendingPathComponent("adapter_config.json"))
        let config = directory.appendingPathComponent("config.json")
        try Data().write(to: config)
        func refusals() {
            XCTAssertThrowsError(try PEFTAdapter(directory: adapter)) { XCTAssertTrue("\($0)".contains("not a JSON object")) }
            XCTAssertThrowsError(try LlamaConfiguration(configJSON: config)) { XCTAssertTrue("\($0)".contains("not a JSON object")) }
        }
        refusals()  // first-use caches are not a leak
        let before = try XCTUnwrap(HeapUsage.bytesInUse())
        for _ in 0..<5_000 { refusals() }
        let growth = try XCTUnwrap(HeapUsage.bytesInUse()) - before
        XCTAssertLessThan(growth, 1 << 20, "10,000 refusals of empty config files kept \(growth) bytes of heap")
    }
}
