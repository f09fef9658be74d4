import CKernels
import Foundation
import XCTest
@testable import Kernels

/// The vectorised exponential and the kernels built on it, against Double references.
final class ExponentialTests: XCTestCase {
    /// Documented bound of `Exponential.exp` (relative, against Double).
    static let expTolerance = 2.5e-7

    func testExpRelativeErrorOverItsRange() {
        var worst = 0.0, worstAt: Float = 0
        var x = Exponential.lowerLimit
        while x <= Exponential.upperLimit {
            var lanes = SIMD16<Float>()
            for i in 0..<16 { lanes[i] = min(x + Float(i) * 1.37e-3, Exponential.upperLimit) }
            let fast = Exponential.exp(lanes)
            for i in 0..<16 {
                let exact = Foundation.exp(Double(lanes[i]))
                let error = abs(Double(fast[i]) - exact) / exact
                if error > worst { (worst, worstAt) = (error, lanes[i]) }
            }
            x += 16 * 1.37e-3
        }
        XCTAssertLessThanOrEqual(worst, Self.expTolerance, "worst relative error \(worst) at x = \(worstAt)")
    }

    func testExpNearZeroAndAtTheEdges() {
        for x: Float in [0, -0, 1e-8, -1e-8, 0.34657, -0.34657, 1, -1, 10.5, -20.25] {
            let exact = Foundation.exp(Double(x))
            XCTAssertLessThanOrEqual(abs(Double(Exponential.exp(x)) - exact) / exact, Self.expTolerance, "x = \(x)")
        }
        XCTAssertEqual(Exponential.exp(0), 1)
        XCTAssertEqual(Exponential.exp(-90), 0)
        XCTAssertEqual(Exponential.exp(-Float.infinity), 0)
        XCTAssertEqual(Exponential.exp(89), .infinity)
        XCTAssertEqual(Exponential.exp(Float.infinity), .infinity)
        XCTAssertTrue(Exponential.exp(Float.nan).isNaN)
        XCTAssertTrue(Exponential.exp(Exponential.upperLimit).isFinite)
        XCTAssertGreaterThan(Exponential.exp(Exponential.lowerLimit), 0)
    }

    /// Deterministic values in about [−spread, spread] (a linear congruential sequence; not for anything random).
    func values(_ n: Int, spread: Float, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<n).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * spread
        }
    }

    func testLogSumExpMatchesDoubleForOddLengths() {
        for n in [1, 2, 15, 16, 17, 33, 1000, 1025, 49_152 + 7] {
            let x = values(n, spread: 12, seed: UInt64(n))
            let maximum = Double(x.max()!)
            let exact = maximum + log(x.reduce(0.0) { $0 + Foundation.exp(Double($1) - maximum) })
            let (value, argmax) = x.withUnsafeBufferPointer { Activation.logSumExp($0.baseAddress!, n) }
            XCTAssertEqual(value, exact, accuracy: 1e-6 * max(1, abs(exact)), "n = \(n)")
            XCTAssertEqual(argmax, x.firstIndex(of: x.max()!)!, "n = \(n)")
        }
    }

    /// The AVX-512 `exponentiate` against the Swift one: every stored lane bit for bit (tails of 1..15, the
    /// clamps, ±∞ and NaN included), the sums to float rounding of each 16-lane partial, past one 1,024 flush.
    func testAVX512ExponentiateEqualsGeneric() throws {
        try requireAVX512VNNI("ck_exponentiate_avx512")
        for n in [1, 15, 16, 17, 250, 1024, 2061] {
            var x = values(n, spread: 40, seed: UInt64(n) + 200)
            // Two lengths carry the specials (their sums are then NaN); the others check the sums.
            if n == 17 || n == 2061 {
                for (i, special) in [Float.nan, 200, -200, .infinity, -.infinity, Exponential.upperLimit].enumerated() {
                    x[(i * 7) % n] = special
                }
            }
            var fast = [Float](repeating: 0, count: n), slow = fast
            let shift: Float = n == 1 ? 0 : 1.5
            let fastSum = ck_exponentiate_avx512(x, &fast, n, shift)
            let slowSum = x.withUnsafeBufferPointer { Exponential.genericSumOfExponentials($0.baseAddress!, n, shift: shift,
                                                                                           storingInto: &slow) }
            for i in 0..<n {
                XCTAssertEqual(fast[i].bitPattern, slow[i].bitPattern, "n = \(n), x[\(i)] = \(x[i]): \(fast[i]) vs \(slow[i])")
            }
            if slowSum.isFinite {
                XCTAssertEqual(fastSum, slowSum, accuracy: 1e-6 * slowSum, "n = \(n)")
            } else {
                XCTAssertEqual(fastSum.isNaN, slowSum.isNaN, "n = \(n): \(fastSum) vs \(slowSum)")
            }
            let noStore = x.withUnsafeBufferPointer { ck_exponentiate_avx512($0.baseAddress!, nil, n, shift) }
            XCTAssertEqual(noStore.bitPattern, fastSum.bitPattern, "n = \(n): the sum without storing")
        }
    }

    func testLogSumExpPropagatesNaN() {
        var x = values(40, spread: 3, seed: 9)
        x[37] = .nan
        XCTAssertTrue(x.withUnsafeBufferPointer { Activation.logSumExp($0.baseAddress!, 40) }.value.isNaN)
    }

    func testCrossEntropyGradientMatchesDouble() {
        for (n, label) in [(1, 0), (5, 4), (17, 3), (49_152 + 3, 12_345)] {
            let x = values(n, spread: 15, seed: UInt64(n) + 100)
            let scale: Float = 1.0 / 7
            let maximum = Double(x.max()!)
            let sum = x.reduce(0.0) { $0 + Foundation.exp(Double($1) - maximum) }
            let exactLoss = maximum + log(sum) - Double(x[label])
            var gradient = x
            let loss = gradient.withUnsafeMutableBufferPointer {
                Activation.crossEntropyGradient($0.baseAddress!, n, label: label, scale: scale)
            }
            XCTAssertEqual(loss, exactLoss, accuracy: 1e-6 * max(1, abs(exactLoss)), "n = \(n)")
            var worst = 0.0
            for i in 0..<n {
                let p = Foundation.exp(Double(x[i]) - maximum) / sum
                let exact = Double(scale) * (p - (i == label ? 1 : 0))
                worst = max(worst, abs(Double(gradient[i]) - exact))
            }
            // Against the largest entry (scale): float rounding of p and of scale·p.
            XCTAssertLessThanOrEqual(worst / Double(scale), 1e-6, "n = \(n)")
        }
    }

    func testSoftmaxMatchesDoubleForOddLengths() {
        for n in [1, 3, 16, 31, 129] {
            let x = values(n, spread: 20, seed: UInt64(n) + 7)
            var y = x
            y.withUnsafeMutableBufferPointer { Activation.softmax($0.baseAddress!, n) }
            let maximum = Double(x.max()!)
            let sum = x.reduce(0.0) { $0 + Foundation.exp(Double($1) - maximum) }
            for i in 0..<n {
                XCTAssertEqual(Double(y[i]), Foundation.exp(Double(x[i]) - maximum) / sum, accuracy: 1e-6, "n = \(n), i = \(i)")
            }
        }
    }

    func testSwiGLUAndItsBackwardMatchDouble() {
        for n in [1, 15, 16, 47] {
            let gate = values(n, spread: 30, seed: UInt64(n) + 1), up = values(n, spread: 2, seed: UInt64(n) + 2)
            let dy = values(n, spread: 1, seed: UInt64(n) + 3)
            var out = [Float](repeating: 0, count: n), dGate = out, dUp = out
            gate.withUnsafeBufferPointer { g in
                up.withUnsafeBufferPointer { u in
                    dy.withUnsafeBufferPointer { d in
                        out.withUnsafeMutableBufferPointer {
                            Activation.swiglu(gate: g.baseAddress!, up: u.baseAddress!, out: $0.baseAddress!, n)
                        }
                        dGate.withUnsafeMutableBufferPointer { dg in
                            dUp.withUnsafeMutableBufferPointer { du in
                                Activation.swigluBackward(gate: g.baseAddress!, up: u.baseAddress!, gradOutput: d.baseAddress!,
                                                          gradGate: dg.baseAddress!, gradUp: du.baseAddress!, n)
                            }
                        }
                    }
                }
            }
            for i in 0..<n {
                let g = Double(gate[i]), u = Double(up[i]), d = Double(dy[i])
                let sigmoid = 1 / (1 + Foundation.exp(-g))
                XCTAssertEqual(Double(out[i]), g * sigmoid * u, accuracy: 1e-6 * max(1, abs(g * u)), "n = \(n), i = \(i)")
                XCTAssertEqual(Double(dUp[i]), d * g * sigmoid, accuracy: 1e-6 * max(1, abs(g)), "n = \(n), i = \(i)")
                XCTAssertEqual(Double(dGate[i]), d * u * sigmoid * (1 + g * (1 - sigmoid)), accuracy: 1e-6 * max(1, abs(g * u)),
                               "n = \(n), i = \(i)")
            }
        }
    }

    /// The C kernels of `largest`, `swiglu` and `swigluBackward` this CPU runs: (tier, maximum, forward, backward).
    typealias SwiGLUBackwardKernel = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                      UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    func activationKernels() throws -> [(String, (UnsafePointer<Float>, Int) -> Float,
                                         (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                                         SwiGLUBackwardKernel)] {
        try requireAVX2("ck_maximum_avx2, ck_swiglu_avx2, ck_swiglu_backward_avx2")
        var kernels: [(String, (UnsafePointer<Float>, Int) -> Float,
                       (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                       SwiGLUBackwardKernel)] = [("avx2", { ck_maximum_avx2($0, $1) }, { ck_swiglu_avx2($0, $1, $2, $3) },
                                                  { ck_swiglu_backward_avx2($0, $1, $2, $3, $4, $5) })]
        if ck_has_avx512_vnni() != 0 {
            kernels.append(("avx512", { ck_maximum_avx512($0, $1) }, { ck_swiglu_avx512($0, $1, $2, $3) },
                            { ck_swiglu_backward_avx512($0, $1, $2, $3, $4, $5) }))
        }
        return kernels
    }

    /// The AVX2 and AVX-512 maxima against the Swift one (a maximum is exact, so equal bit for bit): tails of 1..15,
    /// n = 0, NaN skipped wherever it stands, a row of −∞, and the largest in the tail or the first lane (seen failing
    /// with the AVX-512 kernel's start at 0 instead of −∞).
    func testSIMDLargestEqualsGeneric() throws {
        for (tier, largest, _, _) in try activationKernels() {
            XCTAssertEqual([Float(5)].withUnsafeBufferPointer { largest($0.baseAddress!, 0) }, -.infinity, "\(tier): n = 0")
            for n in [1, 7, 8, 9, 15, 16, 17, 31, 280, 1_031] {
                var rows = [values(n, spread: 30, seed: UInt64(n) + 400), [Float](repeating: -.infinity, count: n)]
                var nan = values(n, spread: 30, seed: UInt64(n) + 401)
                for i in stride(from: 0, to: n, by: 3) { nan[i] = .nan }
                var last = values(n, spread: 30, seed: UInt64(n) + 402)
                last[n - 1] = 100
                var first = values(n, spread: 30, seed: UInt64(n) + 403)
                first[0] = 100
                rows += [nan, last, first]
                for (r, x) in rows.enumerated() {
                    let fast = x.withUnsafeBufferPointer { largest($0.baseAddress!, n) }
                    let slow = Exponential.genericLargest(x, n)
                    XCTAssertEqual(fast.bitPattern, slow.bitPattern, "\(tier), n = \(n), row \(r): \(fast) vs \(slow)")
                    XCTAssertEqual(slow, x.filter { !$0.isNaN }.max() ?? -.infinity, "n = \(n), row \(r)")
                }
            }
        }
    }

    /// The AVX2 and AVX-512 SwiGLU and its backward against the Swift ones, every lane bit for bit: tails of 1..15,
    /// the exponential's clamps, ±∞, NaN and −0 among the gates (seen failing by 1 ulp in ∂gate's tail with its
    /// association the vector lanes'), and the forward written in place over its gate.
    func testSIMDSwiGLUEqualsGeneric() throws {
        for (tier, _, forward, backward) in try activationKernels() {
            for n in [1, 7, 8, 9, 15, 16, 17, 24, 250, 1_536 + 7] {
                var gate = values(n, spread: 40, seed: UInt64(n) + 300)
                let up = values(n, spread: 2, seed: UInt64(n) + 301), dy = values(n, spread: 1, seed: UInt64(n) + 302)
                if n >= 17 {
                    for (i, special) in [Float.nan, 200, -200, .infinity, -.infinity, -0.0, Exponential.upperLimit].enumerated() {
                        gate[(i * 5) % n] = special
                    }
                }
                var fast = gate, slow = [Float](repeating: 0, count: n)
                var fastGate = slow, fastUp = slow, slowGate = slow, slowUp = slow
                fast.withUnsafeMutableBufferPointer { forward($0.baseAddress!, up, $0.baseAddress!, n) }
                backward(gate, up, dy, &fastGate, &fastUp, n)
                gate.withUnsafeBufferPointer { g in
                    up.withUnsafeBufferPointer { u in
                        Activation.genericSwiglu(gate: g.baseAddress!, up: u.baseAddress!, out: &slow, n)
                        dy.withUnsafeBufferPointer { d in
                            Activation.genericSwigluBackward(gate: g.baseAddress!, up: u.baseAddress!, gradOutput: d.baseAddress!,
                                                             gradGate: &slowGate, gradUp: &slowUp, n)
                        }
                    }
                }
                // A NaN's sign and payload are not compared: LLVM may swap a multiply's operands, which picks the NaN.
                func same(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
                for i in 0..<n {
                    let lane = "\(tier), n = \(n), gate[\(i)] = \(gate[i])"
                    XCTAssertTrue(same(fast[i], slow[i]), "swiglu, \(lane): \(fast[i]) vs \(slow[i])")
                    XCTAssertTrue(same(fastGate[i], slowGate[i]), "∂gate, \(lane): \(fastGate[i]) vs \(slowGate[i])")
                    XCTAssertTrue(same(fastUp[i], slowUp[i]), "∂up, \(lane): \(fastUp[i]) vs \(slowUp[i])")
                }
            }
        }
    }
}

/// The strided weighted row sum under attention, against a Double loop.
final class WeightedRowSumTests: XCTestCase {
    /// The AVX2 kernel of attention's values (`ck_weighted_rows_avx2`) against Double, widths around its
    /// 64- and 8-column steps, with a positive control: one coefficient changed by 1e-3 must fail the bound.
    func testAVX2AttentionValuesMatchDouble() throws {
        try requireAVX2("ck_weighted_rows_avx2")
        for (width, count, rowStride) in [(64, 5, 64), (64, 130, 192), (83, 7, 100), (15, 1, 15), (200, 33, 211), (7, 3, 9)] {
            let rows = (0..<(count * rowStride)).map { Float(($0 * 37) % 101) / 50 - 1 }
            let coefficients = (0..<count).map { Float(($0 * 13) % 29) / 14 - 1 }
            let start = (0..<width).map { Float($0 % 7) - 3 }
            func worst(_ c: [Float], accumulate: Bool) -> Double {
                var out = start
                ck_weighted_rows_avx2(&out, rows, rowStride, c, Int32(count), Int32(width), accumulate ? 1 : 0)
                var worst = 0.0
                for column in 0..<width {
                    var exact = accumulate ? Double(start[column]) : 0
                    for i in 0..<count { exact += Double(coefficients[i]) * Double(rows[i * rowStride + column]) }
                    worst = max(worst, abs(Double(out[column]) - exact))
                }
                return worst
            }
            for accumulate in [false, true] {
                XCTAssertLessThan(worst(coefficients, accumulate: accumulate), 1e-5, "width \(width), count \(count)")
                var moved = coefficients
                moved[count - 1] += 1e-3
                XCTAssertGreaterThan(worst(moved, accumulate: accumulate), 1e-5, "control: width \(width), count \(count)")
            }
        }
    }

    /// The selected tier's weightedRowSum (AVX2 C on x86 tiers) and the portable one, both against double.
    func testMatchesDoubleForOddWidthsAndStrides() {
        for generic in [false, true] {
            for (width, count, rowStride, coefficientStride) in [(64, 5, 64, 1), (83, 7, 100, 3), (15, 1, 15, 1), (200, 33, 211, 9),
                                                                 (64, 40, 576, 128)] {
                let rows = (0..<(count * rowStride)).map { Float(($0 * 37) % 101) / 50 - 1 }
                let coefficients = (0..<(count * coefficientStride)).map { Float(($0 * 13) % 29) / 14 - 1 }
                let start = (0..<width).map { Float($0 % 7) - 3 }
                for accumulate in [false, true] {
                    var out = start
                    rows.withUnsafeBufferPointer { r in
                        coefficients.withUnsafeBufferPointer { c in
                            out.withUnsafeMutableBufferPointer {
                                let sum = generic ? Vector.genericWeightedRowSum : Vector.weightedRowSum
                                sum($0.baseAddress!, r.baseAddress!, rowStride, c.baseAddress!, coefficientStride, count, width,
                                    accumulate)
                            }
                        }
                    }
                    for column in 0..<width {
                        var exact = accumulate ? Double(start[column]) : 0
                        for i in 0..<count { exact += Double(coefficients[i * coefficientStride]) * Double(rows[i * rowStride + column]) }
                        XCTAssertEqual(Double(out[column]), exact, accuracy: 1e-5,
                                       "generic \(generic), width \(width), column \(column), accumulate \(accumulate)")
                    }
                }
            }
        }
    }
}
