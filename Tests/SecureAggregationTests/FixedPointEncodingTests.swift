import XCTest
@testable import SecureAggregation

final class FixedPointEncodingTests: XCTestCase {
    /// The chosen scale is the largest for which N clients at the clip bound cannot wrap: one more
    /// fractional bit would overflow 2^31 - 1.
    func testScaleIsLargestThatCannotWrap() throws {
        for (clip, clients) in [(1.0, 5), (1.0, 100), (0.01, 500), (8.0, 1000), (1000.0, 3)] {
            let encoding = try FixedPointEncoding(clipBound: clip, maximumClients: clients)
            XCTAssertLessThanOrEqual(Double(clients) * encoding.maximumMagnitude, 2_147_483_647, "\(encoding)")
            XCTAssertThrowsError(try FixedPointEncoding(clipBound: clip, maximumClients: clients,
                                                        fractionalBits: encoding.fractionalBits + 1), "\(encoding)")
        }
        XCTAssertEqual(try FixedPointEncoding(clipBound: 1, maximumClients: 100).fractionalBits, 24)  // 100 · 2^24 < 2^31 < 100 · 2^25
    }

    /// N clients all at +C, or all at -C, or a mix, sum to exactly ±N·C (nearest rounding): the
    /// extremes do not wrap.
    func testExtremeSumsDoNotWrap() throws {
        let n = 100
        let encoding = try FixedPointEncoding(clipBound: 1, maximumClients: n)
        for value: Float in [1, -1, 5, -5] {
            let word = try encoding.encode([value], rounding: .nearest).words[0]
            var sum: UInt32 = 0
            for _ in 0..<n { sum &+= word }
            XCTAssertEqual(try encoding.decodeSum([sum], clientCount: n)[0], Double(n) * Double(max(min(value, 1), -1)))
        }
    }

    /// Values on the 2^-f grid round-trip exactly, alone and summed; negative values are two's complement.
    func testExactRoundTripOnGrid() throws {
        let encoding = try FixedPointEncoding(clipBound: 2, maximumClients: 20)
        let step = 1 / encoding.scale
        let values: [Float] = [0, Float(step), Float(-step), 0.5, -0.75, 1.5, -2, 2, Float(1234 * step)]
        for rounding in [FixedPointEncoding.Rounding.nearest, .stochastic] {
            let words = try encoding.encode(values, rounding: rounding).words
            XCTAssertEqual(try encoding.decodeSum(words, clientCount: 1), values.map(Double.init))
        }
        XCTAssertEqual(try encoding.encode([-Float(step)], rounding: .nearest).words, [0xFFFF_FFFF])
        var sum = [UInt32](repeating: 0, count: values.count)
        let words = try encoding.encode(values, rounding: .nearest).words
        for _ in 0..<20 { for i in sum.indices { sum[i] &+= words[i] } }
        XCTAssertEqual(try encoding.decodeSum(sum, clientCount: 20), values.map { 20 * Double($0) })
    }

    /// Random values: every decoded value is within the stated bound of its clipped input, for both
    /// roundings, and the decoded sum of 50 clients equals the sum of their decoded values exactly.
    func testErrorBoundAndExactSumDecoding() throws {
        // Clip 4 for up to 1000 clients gives f = 19, coarser than Float's spacing in [1, 4), so
        // nearly every value really is rounded.
        let n = 50, d = 20_000
        let encoding = try FixedPointEncoding(clipBound: 4, maximumClients: 1000)
        XCTAssertEqual(encoding.fractionalBits, 19)
        for rounding in [FixedPointEncoding.Rounding.nearest, .stochastic] {
            var sum = [UInt32](repeating: 0, count: d)
            var decodedTotal = [Double](repeating: 0, count: d)
            var worst = 0.0
            for _ in 0..<n {
                let values = (0..<d).map { _ in Float.random(in: -4.5...4.5) }
                let encoded = try encoding.encode(values, rounding: rounding)
                let decoded = try encoding.decodeSum(encoded.words, clientCount: 1)
                for i in 0..<d {
                    worst = max(worst, abs(decoded[i] - Double(min(max(values[i], -4), 4))))
                    decodedTotal[i] += decoded[i]
                    sum[i] &+= encoded.words[i]
                }
            }
            print("\(rounding): worst per-value error \(worst), bound \(encoding.maximumRoundingError(rounding))")
            XCTAssertLessThanOrEqual(worst, encoding.maximumRoundingError(rounding))
            XCTAssertGreaterThan(worst, encoding.maximumRoundingError(rounding) / 2, "the values were not rounded at all")
            XCTAssertEqual(try encoding.decodeSum(sum, clientCount: n), decodedTotal)
        }
    }

    /// Stochastic rounding is unbiased: a value a quarter of the way between two grid points rounds
    /// up about a quarter of the time (within six standard deviations over 200,000 draws).
    func testStochasticRoundingIsUnbiased() throws {
        let encoding = try FixedPointEncoding(clipBound: 1, maximumClients: 10)
        let value = Float((1000 + 0.25) / encoding.scale)
        let count = 200_000
        let words = try encoding.encode([Float](repeating: value, count: count)).words
        XCTAssertTrue(words.allSatisfy { $0 == 1000 || $0 == 1001 })
        let fraction = Double(words.filter { $0 == 1001 }.count) / Double(count)
        XCTAssertEqual(fraction, 0.25, accuracy: 6 * (0.25 * 0.75 / Double(count)).squareRoot())
    }

    /// Clipping is counted; non-finite values, impossible parameters and over-full sums are refused
    /// with the index or value concerned.
    func testClippingAndRefusals() throws {
        let encoding = try FixedPointEncoding(clipBound: 1, maximumClients: 4)
        let encoded = try encoding.encode([0.5, 1.5, -3, 1], rounding: .nearest)
        XCTAssertEqual(encoded.clippedCount, 2)
        XCTAssertThrowsError(try encoding.encode([0, 1, .nan])) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidEncoding("value at index 2 is nan, not finite"))
        }
        XCTAssertThrowsError(try encoding.encode([.infinity]))
        XCTAssertThrowsError(try encoding.decodeSum(encoded.words, clientCount: 5))
        XCTAssertThrowsError(try FixedPointEncoding(clipBound: 0, maximumClients: 4))
        XCTAssertThrowsError(try FixedPointEncoding(clipBound: 1, maximumClients: 0))
        XCTAssertThrowsError(try FixedPointEncoding(clipBound: 1e12, maximumClients: 1 << 40))
        let average = try encoding.decodeAverage([UInt32(bitPattern: -4 << 28)], clientCount: 4)
        XCTAssertEqual(average, [Float(-4 * Double(1 << 28) / encoding.scale / 4)])
    }
}
