import Foundation
import XCTest
import TestSupport
import FuzzTargets

/// A short fuzzing run of every target inside `make test`, without libFuzzer (whose sanitizer build CI
/// does not make): each target's committed inputs (seeds and the corpus libFuzzer grew, `Tests/Fuzz/
/// Corpus` and `Tests/Fuzz/Grown`) are mutated the ways libFuzzer mutates (bit flips, boundary bytes,
/// inserted, erased and repeated ranges, truncation, splicing two inputs) and run through the target. A
/// trap is a crash of the test process. `make fuzz` is the long run, under the address sanitizer.
final class FuzzMutationTests: XCTestCase {
    static let mutationsPerTarget = 1_500

    override func tearDown() {
        FuzzTarget.removeScratchFiles()
        super.tearDown()
    }

    func testShortMutationRunOfEveryTarget() throws {
        var random = SystemRandomNumberGenerator()
        for target in FuzzTarget.allCases {
            let inputs = try FuzzCorpusTests.committedInputs(of: target)
            XCTAssertFalse(inputs.isEmpty, "\(target.rawValue): nothing committed to mutate")
            guard !inputs.isEmpty else { continue }
            var refused = 0, accepted = 0
            for _ in 0..<Self.mutationsPerTarget {
                let base = inputs.randomElement(using: &random)!
                let other = inputs.randomElement(using: &random)!
                let input = Mutator.mutate(base, splicingWith: other, using: &random)
                do { try target.parse(input); accepted += 1 } catch { refused += 1 }
            }
            // Power: a run whose mutations never reached the parser's refusals (or never got past them)
            // would test nothing. Every target must refuse some mutants; a mutator that returned its
            // input unchanged would leave the seeds, all accepted, and fail here.
            XCTAssertGreaterThan(refused, Self.mutationsPerTarget / 100,
                                 "\(target.rawValue): \(refused) refused, \(accepted) accepted of \(Self.mutationsPerTarget) mutants")
        }
    }

    /// The mutator changes what it is given (the control for the check above).
    func testMutatorChangesItsInput() {
        var random = SystemRandomNumberGenerator()
        let input = Data((0..<64).map { UInt8($0) })
        var changed = 0
        for _ in 0..<200 where Mutator.mutate(input, splicingWith: input, using: &random) != input { changed += 1 }
        XCTAssertGreaterThan(changed, 180, "the mutator left \(200 - changed) of 200 inputs unchanged")
    }
}

/// libFuzzer's kinds of mutation, one to four per input, capped at its 16 KiB `-max_len`.
enum Mutator {
    static let maxLength = 16_384
    static let boundaryBytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xfe, 0xff, UInt8(ascii: "\""), UInt8(ascii: "{"), UInt8(ascii: "\n")]

    static func mutate(_ input: Data, splicingWith other: Data, using random: inout SystemRandomNumberGenerator) -> Data {
        var bytes = [UInt8](input)
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            mutateOnce(&bytes, other: other, using: &random)
        }
        return Data(bytes.prefix(maxLength))
    }

    static func mutateOnce(_ bytes: inout [UInt8], other: Data, using random: inout SystemRandomNumberGenerator) {
        let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &random)
        switch Int.random(in: 0..<7, using: &random) {
        case 0 where !bytes.isEmpty:
            bytes[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &random)
        case 1 where !bytes.isEmpty:
            bytes[position] = boundaryBytes.randomElement(using: &random)!
        case 2:
            let count = Int.random(in: 1...8, using: &random)
            bytes.insert(contentsOf: (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }, at: position)
        case 3 where !bytes.isEmpty:
            let end = min(bytes.count, position + Int.random(in: 1...32, using: &random))
            bytes.removeSubrange(position..<end)
        case 4 where !bytes.isEmpty:
            let end = min(bytes.count, position + Int.random(in: 1...32, using: &random))
            bytes.insert(contentsOf: bytes[position..<end], at: Int.random(in: 0...bytes.count, using: &random))
        case 5:
            bytes.removeLast(bytes.count - position)
        default:
            let cut = other.isEmpty ? 0 : Int.random(in: 0..<other.count, using: &random)
            bytes = Array(bytes.prefix(position)) + Array(other.dropFirst(cut))
        }
    }
}
