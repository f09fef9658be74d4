import FederationProtocol
import XCTest

/// The decline codes `--events` reports are the agent's reason categories, and never the free text.
final class DeclineCodeTests: XCTestCase {
    func testCodesAreTheReasonsCategories() {
        XCTAssertEqual(DeclineCode.code(of: "policy: the plan asks 9 steps, this client trains at most 1 per round"), "policy")
        XCTAssertEqual(DeclineCode.code(of: "privacy budget: this round would bring ε to 9.000, over the policy's 8.000"),
                       "privacy_budget")
        XCTAssertEqual(DeclineCode.code(of: PreparationFailure.data("train.jsonl: line 3").description), "data")
        XCTAssertEqual(DeclineCode.code(of: PreparationFailure.trainer("rank 0").description), "cannot_train_on_this_plan")
        XCTAssertEqual(DeclineCode.code(of: "secure aggregation: this client is not in the announced cohort"), "secure_aggregation")
        XCTAssertEqual(DeclineCode.code(of: "no reason given"), "other")
        XCTAssertEqual(DeclineCode.code(of: "/tmp/x.jsonl: cannot read"), "other")
    }
}
