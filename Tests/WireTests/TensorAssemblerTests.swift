import XCTest
@testable import Wire

final class TensorAssemblerTests: XCTestCase {
    private let tensor: [Float] = (0..<1000).map { Float($0) * 0.5 - 7 }

    private func assemble(_ chunks: [TensorChunk], limit: Int = 1 << 20) throws -> [Float] {
        var assembler = try TensorAssembler(first: chunks[0], maximumCount: limit)
        for chunk in chunks.dropFirst() { try assembler.add(chunk) }
        return try assembler.finish()
    }

    func testSplitChunksReassembleInAnyOrder() throws {
        let chunks = TensorChunk.split(round: 3, name: "w", values: tensor, maximumValuesPerChunk: 64)
        XCTAssertEqual(chunks.count, 16)
        XCTAssertTrue(chunks.allSatisfy { $0.values.count <= 64 && $0.totalCount == 1000 })
        XCTAssertEqual(try assemble(chunks), tensor)
        XCTAssertEqual(try assemble(chunks.reversed()), tensor)
        var generator = SplitMix64(state: 42)
        for _ in 0..<20 { XCTAssertEqual(try assemble(chunks.shuffled(using: &generator)), tensor) }
        // Through the wire and back.
        let decoded = try chunks.map { try TensorChunk(frame: Frame.decode($0.frame().encoded())) }
        XCTAssertEqual(try assemble(decoded), tensor)
    }

    func testEmptyTensorIsOneEmptyChunk() throws {
        let chunks = TensorChunk.split(round: 1, name: "empty", values: [], maximumValuesPerChunk: 8)
        XCTAssertEqual(chunks.count, 1)
        XCTAssertEqual(try assemble(chunks), [])
    }

    func testOverlappingChunksAreRefused() throws {
        let chunks = TensorChunk.split(round: 3, name: "w", values: tensor, maximumValuesPerChunk: 100)
        var assembler = try TensorAssembler(first: chunks[2], maximumCount: 1 << 20)
        try assembler.add(chunks[3])
        let overlapping = TensorChunk(round: 3, name: "w", offset: 150, totalCount: 1000, values: [Float](repeating: 1, count: 60))
        XCTAssertThrowsError(try assembler.add(overlapping)) { error in
            XCTAssertEqual(error as? WireError, .chunkOverlaps(tensor: "w", offset: 150, count: 60, existing: 200..<400))
        }
        XCTAssertThrowsError(try assembler.add(chunks[3])) { error in
            guard case .chunkOverlaps? = error as? WireError else { return XCTFail("\(error)") }
        }
        // Touching but not overlapping is fine, on both sides.
        try assembler.add(chunks[1])
        try assembler.add(chunks[4])
        XCTAssertEqual(assembler.receivedCount, 400)
        XCTAssertThrowsError(try assembler.finish()) { error in
            XCTAssertEqual(error as? WireError, .tensorIncomplete(tensor: "w", received: 400, total: 1000))
        }
    }

    func testOutOfRangeChunksAreRefusedWithoutOverflow() throws {
        var assembler = try TensorAssembler(
            first: TensorChunk(round: 1, name: "w", offset: 0, totalCount: 10, values: [1, 2]), maximumCount: 100)
        for (offset, count) in [(9, 2), (10, 1), (11, 1), (UInt64.max, 2), (UInt64.max - 1, 3)] as [(UInt64, Int)] {
            let chunk = TensorChunk(round: 1, name: "w", offset: offset, totalCount: 10, values: [Float](repeating: 0, count: count))
            XCTAssertThrowsError(try assembler.add(chunk), "offset \(offset)") { error in
                XCTAssertEqual(error as? WireError, .chunkOutOfRange(tensor: "w", offset: offset, count: count, total: 10))
            }
        }
        let empty = TensorChunk(round: 1, name: "w", offset: 5, totalCount: 10, values: [])
        XCTAssertThrowsError(try assembler.add(empty)) { error in
            guard case .invalidValue? = error as? WireError else { return XCTFail("\(error)") }
        }
    }

    func testOversizedTensorIsRefusedBeforeAllocation() throws {
        let claim = TensorChunk(round: 1, name: "huge", offset: 0, totalCount: UInt64.max, values: [1])
        XCTAssertThrowsError(try TensorAssembler(first: claim, maximumCount: 1 << 20)) { error in
            XCTAssertEqual(error as? WireError, .tensorTooLarge(tensor: "huge", count: UInt64.max, limit: 1 << 20))
        }
        let justOver = TensorChunk(round: 1, name: "w", offset: 0, totalCount: 101, values: [1])
        XCTAssertThrowsError(try TensorAssembler(first: justOver, maximumCount: 100))
        let atLimit = TensorChunk(round: 1, name: "w", offset: 0, totalCount: 100, values: [1])
        XCTAssertNoThrow(try TensorAssembler(first: atLimit, maximumCount: 100))
    }

    func testChunksOfAnotherTensorRoundOrSizeAreRefused() throws {
        var assembler = try TensorAssembler(
            first: TensorChunk(round: 1, name: "w", offset: 0, totalCount: 10, values: [1]), maximumCount: 100)
        XCTAssertThrowsError(try assembler.add(TensorChunk(round: 1, name: "v", offset: 1, totalCount: 10, values: [1]))) { error in
            XCTAssertEqual(error as? WireError, .chunkMismatch(tensor: "w", field: "name", expected: "'w'", actual: "'v'"))
        }
        XCTAssertThrowsError(try assembler.add(TensorChunk(round: 2, name: "w", offset: 1, totalCount: 10, values: [1]))) { error in
            XCTAssertEqual(error as? WireError, .chunkMismatch(tensor: "w", field: "round", expected: "1", actual: "2"))
        }
        XCTAssertThrowsError(try assembler.add(TensorChunk(round: 1, name: "w", offset: 1, totalCount: 11, values: [1]))) { error in
            XCTAssertEqual(error as? WireError, .chunkMismatch(tensor: "w", field: "totalCount", expected: "10", actual: "11"))
        }
        XCTAssertEqual(assembler.receivedCount, 1)
    }
}
