import Foundation
import XCTest

/// Issue 13: `privacy epsilon --sampling-rate 0.01 --noise-multiplier 1e-9 --steps 1 --delta 1e-5
/// --accountant pld --json` died with signal 11 (the Privacy module was built with -Ounchecked and the
/// PLD loss range overflowed an Int). Every extreme the options accept now exits 0 with a number and
/// says which method answered; out-of-range values are usage errors naming the flag.
final class PrivacyCommandExtremesTests: XCTestCase {
    func run(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.client, arguments) }

    func testExtremesExitCleanly() throws {
        let cases: [[String]] = [
            ["--sampling-rate", "0.01", "--noise-multiplier", "1e-9", "--steps", "1", "--delta", "1e-5"],
            ["--sampling-rate", "1", "--noise-multiplier", "1e9", "--steps", "100000000", "--delta", "1e-5"],
            ["--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "1000", "--delta", "1e-300"],
            ["--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "1000", "--delta", "1e-14"],
        ]
        for arguments in cases {
            for (accountant, noise) in [("rdp", "discrete_gaussian"), ("pld", "discrete_gaussian"), ("pld", "gaussian")] {
                let result = try run(["privacy", "epsilon"] + arguments + ["--accountant", accountant, "--noise", noise, "--json"])
                XCTAssertEqual(result.status, 0, "\(arguments) \(accountant) \(noise): \(result.stderr)")
                let json = try result.json()
                let epsilon = try XCTUnwrap(json["epsilon"] as? Double, "\(json)")
                XCTAssertFalse(epsilon.isNaN)
                XCTAssertNotNil(json["method"] as? String, "\(json)")
            }
        }
        let tiny = try run(["privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1e-9", "--steps", "1",
                            "--delta", "1e-5", "--accountant", "pld", "--noise", "gaussian", "--json"]).json()
        XCTAssertEqual(tiny["method"] as? String, "rdp (tighter than pld here)")
        let discrete = try run(["privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "100",
                                "--delta", "1e-5", "--accountant", "pld", "--json"]).json()
        XCTAssertEqual(discrete["noise"] as? String, "discrete_gaussian")
        XCTAssertEqual(discrete["method"] as? String, "rdp (discrete gaussian steps: pld not applicable)")
        for (flag, value) in [("--noise-multiplier", "0"), ("--delta", "0"), ("--steps", "-1"), ("--sampling-rate", "nan")] {
            var arguments = ["--sampling-rate", "0.01", "--noise-multiplier", "1", "--steps", "1", "--delta", "1e-5"]
            arguments[arguments.firstIndex(of: flag)! + 1] = value
            let result = try run(["privacy", "epsilon"] + arguments)
            XCTAssertEqual(result.status, 64, "\(flag) \(value)")
            XCTAssertTrue(result.stderr.contains(flag), result.stderr)
        }
        let noise = try run(["privacy", "noise", "--target-epsilon", "1e-9", "--sampling-rate", "1", "--steps", "1000",
                             "--delta", "1e-5"])
        XCTAssertNotEqual(noise.status, 0)
        XCTAssertTrue(noise.stderr.contains("no noise multiplier"), noise.stderr)
    }
}
