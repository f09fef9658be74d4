import XCTest
@testable import Kernels

/// Normalised mean squared error: Σ(a−b)² / Σb², as ggml's test-quantize-fns uses.
func nmse(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var error = 0.0, norm = 0.0
    for i in a.indices {
        error += Double(a[i] - b[i]) * Double(a[i] - b[i])
        norm += Double(b[i]) * Double(b[i])
    }
    return norm > 0 ? error / norm : error
}

/// Deterministic test data (not security-relevant).
struct TestRandom {
    var state: UInt64
    mutating func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
    }
    mutating func values(_ n: Int) -> [Float] { (0..<n).map { _ in next() } }
}

final class KernelTests: XCTestCase {
    let formats: [WeightFormat] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// Round-trip error of each format on smooth random data, against ggml's expected quality.
    func testQuantizationRoundTripError() {
        var random = TestRandom(state: 1)
        let values = random.values(32 * 64)
        // Tolerances: f16/bf16 are exact to their mantissa; Q8_0 ≈ 1e-5, Q4 ≈ 1e-2 NMSE on uniform data.
        let tolerance: [WeightFormat: Double] = [.f32: 0, .f16: 1e-7, .bf16: 2e-5, .q8_0: 1e-4, .q4_0: 1.5e-2, .q4_1: 1e-2]
        for format in formats {
            let matrix = Quantize.matrix(values, rows: 64, columns: 32, format: format)
            let error = nmse(matrix.dequantized(), values)
            XCTAssertLessThanOrEqual(error, tolerance[format]!, "\(format) round-trip NMSE \(error)")
        }
    }

    /// Known block encodings: a ramp quantized by hand with ggml's formulas.
    func testKnownBlockEncodings() {
        let ramp = (0..<32).map { Float($0) - 16 } // −16 ... 15
        let q8 = Quantize.matrix(ramp, rows: 1, columns: 32, format: .q8_0)
        // d = 16/127; q(−16) = −127
        XCTAssertEqual(q8.data.load(fromByteOffset: 2, as: Int8.self), -127)
        let q40 = Quantize.matrix(ramp, rows: 1, columns: 32, format: .q4_0)
        // value of largest magnitude is −16, d = 2, so −16 → nibble 0 and 14 → 15 (clamped)
        XCTAssertEqual(Dequantize.half(q40.data.load(as: UInt16.self)), 2)
        XCTAssertEqual(q40.data.load(fromByteOffset: 2, as: UInt8.self) & 0x0F, 0)
        let q41 = Quantize.matrix(ramp, rows: 1, columns: 32, format: .q4_1)
        XCTAssertEqual(Dequantize.half(q41.data.load(fromByteOffset: 2, as: UInt16.self)), -16)
        XCTAssertEqual(Dequantize.half(q41.data.load(as: UInt16.self)), Float(Float16(Float(31) / 15))) // (15 − −16)/15 in f16
    }

    /// The threaded linear layer against the Double-accumulating reference, odd shapes included.
    func testLinearMatchesReference() {
        var random = TestRandom(state: 7)
        let pool = ThreadPool(threads: 3)
        for format in formats {
            for (rows, columns, tokens) in [(1, 32, 1), (37, 96, 3), (130, 64, 5), (5, 160, 17)] {
                let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                let input = random.values(tokens * columns)
                let expected = Linear.referenceForward(weights, input: input, tokens: tokens)
                var output = [Float](repeating: 0, count: tokens * rows)
                input.withUnsafeBufferPointer { x in
                    output.withUnsafeMutableBufferPointer { y in
                        Linear.forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!, pool: pool)
                    }
                }
                let error = nmse(output, expected)
                XCTAssertLessThan(error, 1e-10, "\(format) \(rows)x\(columns)x\(tokens): NMSE \(error)")
            }
        }
    }

    /// backwardInput is the transpose product: checked against an explicit Wᵀg.
    func testBackwardInputIsTransposeProduct() {
        var random = TestRandom(state: 11)
        let rows = 23, columns = 64, tokens = 4
        let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: .q8_0)
        let w = weights.dequantized()
        let grad = random.values(tokens * rows)
        var expected = [Float](repeating: 0, count: tokens * columns)
        for t in 0..<tokens {
            for c in 0..<columns {
                var sum = 0.0
                for r in 0..<rows { sum += Double(w[r * columns + c]) * Double(grad[t * rows + r]) }
                expected[t * columns + c] = Float(sum)
            }
        }
        var output = [Float](repeating: 0, count: tokens * columns)
        grad.withUnsafeBufferPointer { g in
            output.withUnsafeMutableBufferPointer { o in
                Linear.backwardInput(weights, gradOutput: g.baseAddress!, tokens: tokens, gradInput: o.baseAddress!,
                                     pool: ThreadPool(threads: 2))
            }
        }
        XCTAssertLessThan(nmse(output, expected), 1e-10)
    }

    func testDotHandlesEveryTailLength() {
        var random = TestRandom(state: 3)
        for n in 0..<70 {
            let a = random.values(n), b = random.values(n)
            let expected = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let got = a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in
                Vector.dot(x.baseAddress ?? UnsafePointer(bitPattern: 8)!, y.baseAddress ?? UnsafePointer(bitPattern: 8)!, n) } }
            XCTAssertEqual(Double(got), expected, accuracy: 1e-5, "n = \(n)")
        }
    }

    /// RoPE layouts: rotating adjacent pairs of permuted rows equals rotate_half of the original rows.
    func testRoPELayoutsAgreeUnderPermutation() {
        var random = TestRandom(state: 5)
        let heads = 3, hd = 8, tokens = 4
        let x = random.values(tokens * heads * hd)
        var halfSplit = x
        // Permute each head: HF row s·hd/2 + i goes to 2i + s.
        var adjacent = x
        for t in 0..<tokens {
            for h in 0..<heads {
                for s in 0..<2 {
                    for i in 0..<(hd / 2) {
                        adjacent[t * heads * hd + h * hd + 2 * i + s] = x[t * heads * hd + h * hd + s * hd / 2 + i]
                    }
                }
            }
        }
        let frequencies = RoPE.inverseFrequencies(headDimension: hd, theta: 10000)
        let positions = [0, 1, 7, 100]
        positions.withUnsafeBufferPointer { p in
            frequencies.withUnsafeBufferPointer { f in
                halfSplit.withUnsafeMutableBufferPointer {
                    RoPE.apply($0.baseAddress!, tokens: tokens, heads: heads, headDimension: hd, positions: p.baseAddress!,
                               inverseFrequencies: f.baseAddress!, layout: .halfSplit)
                }
                adjacent.withUnsafeMutableBufferPointer {
                    RoPE.apply($0.baseAddress!, tokens: tokens, heads: heads, headDimension: hd, positions: p.baseAddress!,
                               inverseFrequencies: f.baseAddress!, layout: .adjacentPairs)
                }
            }
        }
        for t in 0..<tokens {
            for h in 0..<heads {
                for s in 0..<2 {
                    for i in 0..<(hd / 2) {
                        XCTAssertEqual(adjacent[t * heads * hd + h * hd + 2 * i + s],
                                       halfSplit[t * heads * hd + h * hd + s * hd / 2 + i], accuracy: 1e-6)
                    }
                }
            }
        }
        // Position 0 is the identity.
        XCTAssertEqual(Array(halfSplit[0..<(heads * hd)]), Array(x[0..<(heads * hd)]))
    }

    func testSoftmaxAndRMSNorm() {
        var logits: [Float] = [1000, 1001, 999]
        logits.withUnsafeMutableBufferPointer { Activation.softmax($0.baseAddress!, 3) }
        let e = [exp(-1.0), 1, exp(-2.0)], total = e.reduce(0, +)
        for i in 0..<3 { XCTAssertEqual(Double(logits[i]), e[i] / total, accuracy: 1e-6) }
        let x: [Float] = [3, 4], w: [Float] = [1, 2]
        var out = [Float](repeating: 0, count: 2)
        RMSNorm.forward(x, weight: w, tokens: 1, width: 2, eps: 0, out: &out)
        let rms = (12.5 as Float).squareRoot()
        XCTAssertEqual(out[0], 3 / rms, accuracy: 1e-6)
        XCTAssertEqual(out[1], 8 / rms, accuracy: 1e-6)
    }
}

final class ThreadPoolTests: XCTestCase {
    /// Every index is visited exactly once, for many loops of varying sizes, on pools of 2 to 5 threads,
    /// including loops smaller than the thread count; released pools stop their workers.
    func testEveryIndexExactlyOnce() {
        for threads in 2...5 {
            let pool = ThreadPool(threads: threads)
            for round in 0..<300 {
                let count = 1 + (round * 37) % 50
                let visits = UnsafeMutablePointer<Int>.allocate(capacity: count)
                visits.initialize(repeating: 0, count: count)
                nonisolated(unsafe) let shared = visits
                pool.parallelFor(count) { range in for i in range { shared[i] += 1 } }
                XCTAssertTrue((0..<count).allSatisfy { visits[$0] == 1 }, "threads \(threads) round \(round)")
                visits.deallocate()
            }
        }
    }

    /// A loop finishes without a worker the operating system has not scheduled (on a loaded machine, or
    /// asleep): the caller runs every chunk itself instead of waiting for the worker to show up, and the
    /// worker, arriving late, touches neither that loop nor the loops after it.
    func testLoopDoesNotWaitForAnAbsentWorker() throws {
        let pool = ThreadPool(threads: 2)
        let held = DispatchSemaphore(value: 0), arrived = DispatchSemaphore(value: 0)
        let holding = HoldFlag()
        // Stands for a descheduled worker: it stops between seeing a loop and joining it.
        pool.state.beforeJoin = { _ in
            if holding.isSet {
                arrived.signal()
                held.wait()
            }
        }
        let count = 64
        let visits = UnsafeMutablePointer<Int>.allocate(capacity: count)
        visits.initialize(repeating: 0, count: count)
        defer { visits.deallocate() }
        nonisolated(unsafe) let shared = visits
        let finished = DispatchSemaphore(value: 0)
        // On its own thread, so that a pool that waits for the absent worker fails the test instead of hanging it.
        let caller = Thread {
            pool.parallelFor(count) { _ in }  // the worker stops at this loop (or the next)
            pool.parallelFor(count) { range in for i in range { shared[i] += 1 } }
            finished.signal()
        }
        caller.start()
        let result = finished.wait(timeout: .now() + 10)
        let workerSawALoop = arrived.wait(timeout: .now() + 10)
        holding.clear()
        held.signal()
        XCTAssertEqual(result, .success, "the loops waited for a worker that never joined them")
        XCTAssertEqual(workerSawALoop, .success, "the worker never reached a loop: the test tested nothing")
        if result != .success { _ = finished.wait(timeout: .now() + 10) }
        XCTAssertTrue((0..<count).allSatisfy { visits[$0] == 1 }, "an index was missed or visited twice")
        // The late worker joins later loops as usual, and every index is still visited once.
        for round in 0..<200 {
            visits.update(repeating: 0, count: count)
            pool.parallelFor(count) { range in for i in range { shared[i] += 1 } }
            XCTAssertTrue((0..<count).allSatisfy { visits[$0] == 1 }, "round \(round)")
        }
    }

    /// Workers keep joining loops after the loop counter passes 2³¹ (the ticket keeps 31 bits of it):
    /// about ten hours of generation at 60,000 loops a second. Started just below the boundary, loops whose
    /// chunks take a millisecond each must get some of them run by the worker on either side of it.
    func testWorkersStillJoinPastTheTicketsGenerationBits() {
        let pool = ThreadPool(threads: 2)
        let boundary = 1 << 31
        pool.state.generation.store(boundary - 20, ordering: .sequentiallyConsistent)
        var workerChunksPast = 0
        for loop in 0..<60 {
            let caller = Thread.current
            let onWorker = WorkerCount()
            pool.parallelFor(8) { range in
                for _ in range { usleep(1_000) }
                if Thread.current != caller { onWorker.add() }
            }
            if loop > 20 { workerChunksPast += onWorker.value }
        }
        XCTAssertGreaterThan(pool.state.generation.load(ordering: .relaxed), boundary, "the test did not cross the boundary")
        XCTAssertGreaterThan(workerChunksPast, 0, "no chunk ran on the worker after the generation passed 2^31")
    }
}

/// Chunks counted across a pool's threads in a test.
private final class WorkerCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add() { lock.withLock { count += 1 } }
}

/// A flag shared with a pool's worker in a test.
private final class HoldFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = true
    var isSet: Bool { lock.withLock { set } }
    func clear() { lock.withLock { set = false } }
}
