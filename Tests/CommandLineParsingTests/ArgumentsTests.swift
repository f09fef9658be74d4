import XCTest
@testable import CommandLineParsing

final class ArgumentsTests: XCTestCase {
    func testOptionsFlagsAndEqualsForm() throws {
        var arguments = Arguments(["--model", "m.gguf", "--json", "--top-k=40", "--temperature", "0.7"])
        XCTAssertEqual(try arguments.required("--model"), "m.gguf")
        XCTAssertTrue(arguments.flag("--json"))
        XCTAssertEqual(try arguments.int("--top-k"), 40)
        XCTAssertEqual(try arguments.double("--temperature"), 0.7)
        XCTAssertNoThrow(try arguments.finish())
    }

    func testErrorsNameTheFlag() {
        var missing = Arguments([])
        XCTAssertThrowsError(try missing.required("--model")) { XCTAssertTrue("\($0)".contains("--model")) }
        var notNumber = Arguments(["--steps", "ten"])
        XCTAssertThrowsError(try notNumber.int("--steps")) { XCTAssertTrue("\($0)".contains("--steps")) }
        var outOfRange = Arguments(["--top-p", "1.5"])
        XCTAssertThrowsError(try outOfRange.double("--top-p", in: 0...1)) { XCTAssertTrue("\($0)".contains("--top-p")) }
        var dangling = Arguments(["--model"])
        XCTAssertThrowsError(try dangling.option("--model"))
        var twice = Arguments(["--seed", "1", "--seed", "2"])
        XCTAssertThrowsError(try twice.option("--seed"))
        var nan = Arguments(["--lr", "nan"])
        XCTAssertThrowsError(try nan.double("--lr"))
    }

    func testLeftoverArgumentsAreRefused() {
        var arguments = Arguments(["--model", "m", "--bogus"])
        _ = try? arguments.option("--model")
        XCTAssertThrowsError(try arguments.finish()) { XCTAssertTrue("\($0)".contains("--bogus")) }
    }

    func testRepeatedValuesAndHelp() throws {
        var arguments = Arguments(["--targets", "q_proj", "--help", "--targets", "v_proj"])
        XCTAssertTrue(arguments.helpRequested)
        XCTAssertEqual(try arguments.values("--targets"), ["q_proj", "v_proj"])
        XCTAssertNoThrow(try arguments.finish())
    }

    func testJSONSanitisesNonFiniteNumbers() {
        let cleaned = JSONOutput.sanitized(["a": Double.nan, "b": [1.5, Double.infinity]]) as! [String: Any]
        XCTAssertTrue(cleaned["a"] is NSNull)
        XCTAssertTrue((cleaned["b"] as! [Any])[1] is NSNull)
    }

    /// Booleans read back by JSONSerialization (as `encoded` values are) print as true/false, not 1/0.
    func testJSONKeepsDecodedBooleans() throws {
        let decoded = try JSONSerialization.jsonObject(with: Data(#"{"exact": true, "count": 1, "off": false}"#.utf8))
        let cleaned = JSONOutput.sanitized(decoded)
        let text = String(decoding: try JSONSerialization.data(withJSONObject: cleaned, options: [.sortedKeys]), as: UTF8.self)
        XCTAssertEqual(text, #"{"count":1,"exact":true,"off":false}"#)
    }
}
