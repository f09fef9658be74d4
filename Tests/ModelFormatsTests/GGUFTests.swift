import Foundation
import TestSupport
import XCTest
@testable import ModelFormats

final class GGUFTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func write(_ data: Data, _ name: String = "m.gguf") throws -> URL {
        let url = directory.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    /// Expects opening `data` as GGUF to throw an error whose text contains every `fragment`.
    func expectError(_ data: Data, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try write(data)
        XCTAssertThrowsError(try GGUFFile(url: url), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(url.path), "error does not name the file: \(text)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(text.contains(fragment), "'\(fragment)' missing from: \(text)", file: file, line: line)
            }
        }
    }

    func smallFile() throws -> GGUFWriter {
        var writer = GGUFWriter()
        writer.set("general.architecture", .string("llama"))
        writer.set("test.values", .array([.uint32(1), .uint32(2)]))
        try writer.addTensor(name: "a", dimensions: [32, 2], type: .q8_0, data: [UInt8](repeating: 1, count: 68))
        try writer.addTensor(name: "b", dimensions: [3], type: .f32, data: [UInt8](repeating: 0, count: 12))
        return writer
    }

    func testDefaultModelMetadataAndTensors() throws {
        let file = try GGUFFile(url: Fixtures.defaultModel)
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.string("general.architecture"), "llama")
        XCTAssertEqual(file.tensors.count, 272)
        var counts: [TensorType: Int] = [:]
        for tensor in file.tensors { counts[tensor.type, default: 0] += 1 }
        XCTAssertEqual(counts, [.q4_1: 210, .f32: 61, .q8_0: 1])
        let embedding = try XCTUnwrap(file.tensor(named: "token_embd.weight"))
        XCTAssertEqual(embedding.dimensions, [576, 49152])
        XCTAssertEqual(embedding.type, .q8_0)
        XCTAssertEqual(try file.stringArray("tokenizer.ggml.tokens")?.count, 49152)
        XCTAssertEqual(try file.stringArray("tokenizer.ggml.merges")?.count, 48900)
        let c = try LlamaConfiguration(gguf: file)
        XCTAssertEqual([c.numHiddenLayers, c.hiddenSize, c.intermediateSize, c.numAttentionHeads, c.numKeyValueHeads,
                        c.vocabSize, c.headDim], [30, 576, 1536, 9, 3, 49152, 64])
        XCTAssertEqual(c.ropeTheta, 100000)
        XCTAssertEqual(c.rmsNormEps, 1e-5, accuracy: 1e-12)
        XCTAssertTrue(c.tieWordEmbeddings)
        // The last tensor's data ends inside the file, and every tensor is aligned.
        for tensor in file.tensors { XCTAssertEqual((file.dataOffset + tensor.offset) % file.alignment, 0) }
    }

    /// The file is mapped, not read: opening it grows resident memory by far less than its 98 MB.
    func testOpeningTheModelDoesNotCopyIt() throws {
        func residentBytes() -> Int {
            let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0"
            return (Int(statm.split(separator: " ")[1]) ?? 0) * Int(getpagesize())
        }
        let before = residentBytes()
        let file = try GGUFFile(url: Fixtures.defaultModel)
        let after = residentBytes()
        XCTAssertEqual(file.tensors.count, 272)
        // Metadata (tokens, merges) costs a few MB; the weights (98 MB) must not be touched.
        XCTAssertLessThan(after - before, 40 << 20, "opening the GGUF grew resident memory by \(after - before) bytes")
    }

    func testEveryValueTypeAndTensorTypeRoundTrips() throws {
        var writer = GGUFWriter(alignment: 64)
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("f32", .float32(1.5)),
            ("bool", .bool(true)), ("string", .string("héllo ✓")), ("u64", .uint64(1 << 62)), ("i64", .int64(-(1 << 62))),
            ("f64", .float64(-2.25)), ("nested", .array([.array([.int8(1), .int8(2)]), .array([.int8(3)])])),
            ("strings", .array([.string("a"), .string("")])), ("empty", .array([])),
        ]
        for (key, value) in values { writer.set(key, value) }
        for type in TensorType.allCases {
            let bytes = (0..<(512 / type.blockSize * type.bytesPerBlock)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try writer.addTensor(name: "t.\(type)", dimensions: [256, 2], type: type, data: bytes)
        }
        let url = directory.appendingPathComponent("all.gguf")
        try writer.write(to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.alignment, 64)
        for (key, value) in values { XCTAssertEqual(file.metadata[key], value, key) }
        XCTAssertEqual(Array(file.metadataKeys.prefix(values.count)), values.map(\.0))
        for type in TensorType.allCases {
            let info = try XCTUnwrap(file.tensor(named: "t.\(type)"))
            XCTAssertEqual(info.type, type)
            XCTAssertEqual(info.dimensions, [256, 2])
            let expected = (0..<(512 / type.blockSize * type.bytesPerBlock)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            XCTAssertEqual(Array(file.data(for: info)), expected, "\(type) data")
        }
        XCTAssertThrowsError(try file.stringArray("u8"))
        XCTAssertEqual(try file.intArray("nested.missing"), nil)
    }

    /// Truncating a valid file at every byte length that loses data gives an error, never a crash
    /// (cutting only the alignment padding after the last tensor loses nothing and is accepted).
    func testTruncationAtEveryLengthIsAnError() throws {
        let full = try smallFile().encoded()
        let parsed = try GGUFFile(url: try write(full))
        let dataEnd = parsed.tensors.map { parsed.dataOffset + $0.offset + $0.byteCount }.max()!
        XCTAssertLessThan(dataEnd, full.count)
        XCTAssertNoThrow(try GGUFFile(url: try write(full.prefix(dataEnd), "exact.gguf")))
        for length in 0..<dataEnd {
            let url = try write(full.prefix(length), "cut.gguf")
            XCTAssertThrowsError(try GGUFFile(url: url), "a file cut at \(length) of \(full.count) bytes was accepted")
        }
    }

    func testWrongMagicAndVersion() throws {
        var data = try smallFile().encoded()
        data[0] = UInt8(ascii: "X")
        try expectError(data, "not a GGUF file")
        data = try smallFile().encoded()
        data[4] = 9
        try expectError(data, "unsupported GGUF version 9")
    }

    /// Header fields patched to absurd values, found by their byte positions in a known layout.
    func testAbsurdCountsAndDimensions() throws {
        let good = try smallFile().encoded()
        func patched(_ offset: Int, _ value: UInt64, width: Int = 8) -> Data {
            var data = good
            withUnsafeBytes(of: value.littleEndian) { bytes in
                for i in 0..<width { data[offset + i] = bytes[i] }
            }
            return data
        }
        try expectError(patched(8, 1 << 40), "tensor count")
        try expectError(patched(16, 1 << 40), "metadata count")
        // First key's length (offset 24) claims 2^63 bytes.
        try expectError(patched(24, 1 << 63), "string length")
        // Locate the first tensor info: name "a" then n_dims.
        let nameOffset = try XCTUnwrap(findTensorName(good, "a"))
        try expectError(patched(nameOffset + 1, 9, width: 4), "dimensions")
        try expectError(patched(nameOffset + 5, 0), "dimension 0")
        try expectError(patched(nameOffset + 5, 1 << 40), "dimension 0")
        // Unknown types (16 is ggml's IQ2_XXS, 99 is none): refused with the tensor's name and the number.
        try expectError(patched(nameOffset + 5 + 16, 16, width: 4), "'a'", "unsupported type 16", "Q4_K")
        try expectError(patched(nameOffset + 5 + 16, 99, width: 4), "'a'", "unsupported type 99")
        // Type 14 (Q6_K) on a row of 32: a K-quant row holds whole super-blocks of 256, so the tensor is
        // refused naming it (the file is named by expectError) and the fix.
        try expectError(patched(nameOffset + 5 + 16, 14, width: 4), "'a'", "first dimension 32", "Q6_K's block of 256",
                        "llama-quantize")
        // The positive control: Q8_0 (8), as written, opens.
        XCTAssertNoThrow(try GGUFFile(url: try write(patched(nameOffset + 5 + 16, 8, width: 4), "control.gguf")))
        // Offset beyond the file.
        try expectError(patched(nameOffset + 5 + 16 + 4, 1 << 20), "'a'")
        // Misaligned offset.
        try expectError(patched(nameOffset + 5 + 16 + 4, 3), "not aligned")
    }

    func testTensorDataBeyondTheFile() throws {
        var writer = GGUFWriter()
        try writer.addTensor(name: "big", dimensions: [64, 64], type: .f32, data: [UInt8](repeating: 0, count: 64 * 64 * 4))
        let data = writer.encoded()
        try expectError(data.prefix(data.count - 100), "'big'", "beyond the end of the file")
    }

    func testArrayCountLargerThanTheFile() throws {
        var writer = GGUFWriter()
        writer.set("list", .array([.uint32(1)]))
        var data = writer.encoded()
        // key: 8 (len) + 4 ("list") + 4 (type) + 4 (element type) → count at 24 + 20.
        let countOffset = 24 + 8 + 4 + 4 + 4
        withUnsafeBytes(of: UInt64(1 << 50).littleEndian) { for i in 0..<8 { data[countOffset + i] = $0[i] } }
        try expectError(data, "'list'", "cannot fit")
    }

    /// Arrays of one-byte values cost 24 bytes each in memory: their elements together are bounded
    /// (`maximumArrayElements`), so a crafted file cannot turn megabytes on disk into gigabytes of memory.
    /// Failed before: this 5 MB file opened, and its arrays took about 240 MB (a 50 MB one, 2 GB).
    func testOneByteArraysAreBoundedByTheElementBudget() throws {
        func residentBytes() -> Int {
            let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0"
            return (Int(statm.split(separator: " ")[1]) ?? 0) * Int(getpagesize())
        }
        func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        func byteArray(_ key: String, count: Int) -> [UInt8] {
            le(UInt64(key.utf8.count)) + Array(key.utf8) + le(UInt32(9)) + le(UInt32(0)) + le(UInt64(count))
                + [UInt8](repeating: 7, count: count)
        }
        let first = GGUFFile.maximumArrayElements * 3 / 4
        let second = GGUFFile.maximumArrayElements / 2
        let bytes = Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(2))
            + byteArray("tokenizer.ggml.token_type", count: first) + byteArray("junk", count: second)
        let before = residentBytes()
        try expectError(Data(bytes), "'junk'", "array of \(second) elements is more than the \(GGUFFile.maximumArrayElements)",
                        "(\(GGUFFile.maximumArrayElements - first) left)")
        XCTAssertLessThan(residentBytes() - before, 200 << 20, "refusing the file still took \(residentBytes() - before) bytes")
        // One array within the budget still opens (positive control).
        let fits = Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + byteArray("small", count: 1000)
        XCTAssertEqual(try GGUFFile(url: write(Data(fits), "fits.gguf")).metadata["small"]?.arrayValue?.count, 1000)
    }

    func testDuplicateKeysAndBadBoolean() throws {
        var writer = GGUFWriter()
        writer.set("flag", .bool(true))
        var data = writer.encoded()
        let boolOffset = 24 + 8 + 4 + 4
        data[boolOffset] = 7
        try expectError(data, "boolean")
        // Two identical keys.
        var a = GGUFWriter()
        a.set("k", .uint8(1))
        let once = a.encoded()
        let entryEnd = 24 + 8 + 1 + 4 + 1
        var twice = once.prefix(entryEnd)
        twice.append(contentsOf: once[24..<entryEnd])
        twice.append(contentsOf: once[entryEnd...])
        withUnsafeBytes(of: UInt64(2).littleEndian) { for i in 0..<8 { twice[16 + i] = $0[i] } }
        try expectError(twice, "duplicate metadata key 'k'")
    }

    func testWriterRefusesInconsistentTensors() {
        var writer = GGUFWriter()
        XCTAssertThrowsError(try writer.addTensor(name: "x", dimensions: [30], type: .q4_0, data: []))
        XCTAssertThrowsError(try writer.addTensor(name: "x", dimensions: [32], type: .q4_0, data: [0]))
    }

    private func findTensorName(_ data: Data, _ name: String) -> Int? {
        // A tensor info starts with u64 length 1 then the name byte; the metadata's keys are longer.
        let bytes = [UInt8](data)
        for i in 24..<(bytes.count - 9) where bytes[i] == UInt8(name.utf8.first!) && bytes[i - 8] == 1
            && bytes[(i - 7)..<i].allSatisfy({ $0 == 0 }) {
            return i
        }
        return nil
    }
}
