import Foundation
import LanguageModel
import Privacy
import TestSupport
import Tokenizer
import XCTest
@testable import FineTuning

/// The condition accuracy release (`ConditionAccuracy`, `ConditionMatcher`, the records' `condition` fields): what
/// "names the right condition" means, checked on the generator's own notes, which units are scored, the sums, the
/// noise's σ and the L2 sensitivity the ledger's charge assumes.
final class ConditionAccuracyTests: XCTestCase {
    /// Every note the generator writes, of every specialty: its own assessment (the reference) names its condition;
    /// the assessment of a note of another condition does not (the positive control: the matcher is not so loose that
    /// anything counts). Both over every condition the notes of a specialty reach.
    func testTheReferenceAssessmentNamesItsConditionAndNoOther() throws {
        var checked = 0, controls = 0
        for specialty in Specialty.allCases {
            let notes = SyntheticNotes.generate(specialty: specialty, records: 600, seed: 11)
            let labels = Dictionary(notes.map { ($0.diagnosisLabel, $0.condition) }, uniquingKeysWith: { a, _ in a })
            XCTAssertGreaterThanOrEqual(labels.count, 5, "\(specialty): the notes reach most conditions")
            for note in notes {
                XCTAssertTrue(ConditionMatcher.names(note.condition, in: note.assessment),
                              "\(specialty): '\(note.assessment)' does not name \(note.condition.names)")
                checked += 1
                for (label, other) in labels where label != note.diagnosisLabel {
                    XCTAssertFalse(ConditionMatcher.names(other, in: note.assessment),
                                   "\(specialty): '\(note.assessment)' (\(note.diagnosisLabel)) names \(label) by \(other.names)")
                    controls += 1
                }
            }
        }
        XCTAssertEqual(checked, 3600)
        XCTAssertGreaterThan(controls, 20_000)
    }

    /// Names come from every expansion of the diagnosis templates, cut before the qualifier; a label the specialty does
    /// not have has none.
    func testConditionNamesExpandTheDiagnosisTemplates() {
        let names = SyntheticNotes.conditionNames(specialty: .cardiology, label: "hypertension")
        XCTAssertEqual(Set(names), ["Essential hypertension", "Stage 1 hypertension", "Stage 2 hypertension", "Primary hypertension"])
        XCTAssertTrue(SyntheticNotes.conditionNames(specialty: .cardiology, label: "heart failure").contains("HFrEF"))
        XCTAssertEqual(SyntheticNotes.conditionNames(specialty: .dermatology, label: "hypertension"), [])
        XCTAssertEqual(TemplateExpander.expansions("A{| (class {I|II})}"), ["A", "A (class I)", "A (class II)"])
        XCTAssertEqual(TemplateExpander.expansions("x {2-4}"), ["x 2", "x 3", "x 4"])
    }

    /// Whole words, any case and punctuation, on the first line that is not blank only.
    func testTheMatcherReadsWholeWordsOfTheFirstLine() {
        let label = ConditionLabel(condition: "hypertension", names: ["Stage 2 hypertension"])
        XCTAssertEqual(label.names, ["hypertension", "Stage 2 hypertension"])
        XCTAssertTrue(ConditionMatcher.names(label, in: "\n  STAGE-2 hypertension, above goal."))
        XCTAssertTrue(ConditionMatcher.names(label, in: "Hypertension."))
        XCTAssertFalse(ConditionMatcher.names(label, in: "Hypertensive urgency."), "another word")
        XCTAssertFalse(ConditionMatcher.names(ConditionLabel(condition: "acne"), in: "Acneiform eruption."),
                       "a word that only starts with the name")
        XCTAssertTrue(ConditionMatcher.names(ConditionLabel(condition: "acne"), in: "Acne, mild."))
        XCTAssertFalse(ConditionMatcher.names(label, in: "Chest pain.\nHypertension."), "the second line does not count")
        XCTAssertFalse(ConditionMatcher.names(label, in: ""))
        XCTAssertEqual(ConditionMatcher.firstLine("\n \n  a b \nc"), "a b")
    }

    /// A prompt record may carry a condition and its names; anything else about them is an error naming the field.
    func testRecordsCarryConditionsOrSayWhatIsWrong() throws {
        let tokenizer = try XCTUnwrap(DatasetTests.tokenizer)
        func parse(_ json: String) throws -> TokenizedExample {
            try Dataset.parse(Data(json.utf8), file: "h.jsonl", line: 3, tokenizer: tokenizer, vocabularySize: 49152)
        }
        let record = try parse(#"{"prompt": "ab", "completion": "c", "condition": "asthma", "condition_names": ["reactive airway"]}"#)
        XCTAssertEqual(record.condition, ConditionLabel(condition: "asthma", names: ["reactive airway"]))
        XCTAssertEqual(Array(record.promptIds), Array(record.ids.prefix(record.promptIds.count)))
        XCTAssertTrue(record.labels[record.promptIds.count] != -100 && record.labels[..<record.promptIds.count].allSatisfy { $0 == -100 })
        XCTAssertNil(try parse(#"{"prompt": "ab", "completion": "c"}"#).condition)
        for (json, field) in [(#"{"text": "ab", "condition": "asthma"}"#, "\"condition\" applies"),
                              (#"{"prompt": "ab", "completion": "c", "condition": 3}"#, "\"condition\" must be"),
                              (#"{"prompt": "ab", "completion": "c", "condition": " ,"}"#, "\"condition\" must be"),
                              (#"{"prompt": "ab", "completion": "c", "condition_names": ["x"]}"#, "needs a \"condition\""),
                              (#"{"prompt": "ab", "completion": "c", "condition": "a", "condition_names": "x"}"#, "must be an array"),
                              (#"{"prompt": "ab", "completion": "c", "condition": "a", "condition_names": ["x", 1]}"#,
                               "condition_names[1]")] {
            XCTAssertThrowsError(try parse(json), json) { error in
                XCTAssertTrue("\(error)".contains("h.jsonl:3") && "\(error)".contains(field), "\(error)")
            }
        }
        let long = String(repeating: "a", count: ConditionLabel.maximumBytes + 1)
        XCTAssertThrowsError(try parse(#"{"prompt": "ab", "completion": "c", "condition": "\#(long)"}"#))
    }

    func example(_ line: Int, labelled: Bool) -> TokenizedExample {
        TokenizedExample(ids: [1, 2, 3], labels: [-100, 2, 3], line: line,
                         condition: labelled ? ConditionLabel(condition: "c\(line)") : nil)
    }

    /// The first `limit` units with a labelled record, each by its first one; at unit user a person once.
    func testScoredUnitsAreTheFirstLabelledOnesUpToTheBound() {
        let examples = [example(1, labelled: false), example(2, labelled: true), example(3, labelled: true),
                        example(4, labelled: true), example(5, labelled: true)]
        XCTAssertEqual(ConditionAccuracy.scored(examples, limit: 3), [1, 2, 3])
        XCTAssertEqual(ConditionAccuracy.scored(examples, limit: 10), [1, 2, 3, 4])
        XCTAssertEqual(ConditionAccuracy.scored(examples, limit: 3, users: ["a", "a", "a", "b", "b"]), [1, 3])
        XCTAssertEqual(ConditionAccuracy.scored(examples, limit: 3, users: [nil, "a", nil, "b", "c"]), [1, 3, 4])
    }

    /// Adding or removing any one unit (anywhere in the file, labelled or not, right or wrong before and after) moves
    /// the exact sums by at most √3 in L2, with the bound binding or not: the sensitivity σ = z·√3 and the charge
    /// assume. At unit user a person with several records is one unit; the control: at unit record the same person's
    /// three records move the sums by more than √3.
    func testOneUnitMovesTheSumsByAtMostRootThree() {
        var random = SystemRandomNumberGenerator()
        var worst = 0.0, control = 0.0
        for _ in 0..<400 {
            let count = Int.random(in: 0...12, using: &random)
            var examples = (0..<count).map { example($0, labelled: Bool.random(using: &random)) }
            var users: [String?] = (0..<count).map { "u\($0)" }
            var right = (0..<count).map { _ in (Bool.random(using: &random), Bool.random(using: &random)) }
            func sums(_ e: [TokenizedExample], _ u: [String?]?, _ r: [(Bool, Bool)], limit: Int) -> [Int64] {
                let indices = ConditionAccuracy.scored(e, limit: limit, users: u)
                return ConditionAccuracy.exactSums(before: indices.map { r[$0].0 }, after: indices.map { r[$0].1 })
            }
            func distance(_ a: [Int64], _ b: [Int64]) -> Double { zip(a, b).reduce(0.0) { $0 + pow(Double($1.0 - $1.1), 2) }.squareRoot() }
            let limit = Int.random(in: 1...6, using: &random)
            let at = Int.random(in: 0...count, using: &random)
            // One person, three records (the first labelled or not), inserted at `at`.
            let person = (0..<3).map { example(100 + $0, labelled: $0 > 0 || Bool.random(using: &random)) }
            let personRight = (0..<3).map { _ in (Bool.random(using: &random), Bool.random(using: &random)) }
            let baseRecord = sums(examples, nil, right, limit: limit), baseUser = sums(examples, users, right, limit: limit)
            // Unit record: one record added.
            var e1 = examples, r1 = right
            e1.insert(person[1], at: at)
            r1.insert(personRight[1], at: at)
            worst = max(worst, distance(baseRecord, sums(e1, nil, r1, limit: limit)))
            // Unit user: the person's three records added.
            examples.insert(contentsOf: person, at: at)
            users.insert(contentsOf: ["p", "p", "p"], at: at)
            right.insert(contentsOf: personRight, at: at)
            worst = max(worst, distance(baseUser, sums(examples, users, right, limit: limit)))
            control = max(control, distance(baseRecord, sums(examples, nil, right, limit: limit)))
        }
        XCTAssertLessThanOrEqual(worst, 3.0.squareRoot() + 1e-12)
        XCTAssertEqual(worst, 3.0.squareRoot(), accuracy: 1e-12, "a unit right before and after, under the bound, reaches it")
        XCTAssertGreaterThan(control, 3.0.squareRoot() + 0.1, "three records at unit record move the sums by more")
    }

    /// The real model (the default SmolLM2): the assessment is greedy (the same twice), one line, and `correct` is the
    /// matcher on it; a prompt the model continues by repeating a diagnosis counts for that condition and not for
    /// another (the control that `correct` can say yes, and no).
    func testTheModelsAssessmentIsOneGreedyLineJudgedByTheMatcher() throws {
        let loaded = try ModelLoader.load(path: Fixtures.defaultModel.path, threads: 2)
        let tokenizer = try XCTUnwrap(loaded.tokenizer)
        func record(_ prompt: String, _ label: ConditionLabel) throws -> TokenizedExample {
            let json = try JSONSerialization.data(withJSONObject: ["prompt": prompt, "completion": " x", "condition": label.condition,
                                                                   "condition_names": Array(label.names.dropFirst())])
            return try Dataset.parse(json, file: "h.jsonl", line: 1, tokenizer: tokenizer, vocabularySize: loaded.model.configuration.vocabSize)
        }
        let note = SyntheticNotes.generate(specialty: .cardiology, records: 1, seed: 5)[0]
        let example = try record(note.prompt, note.condition)
        let text = try ConditionAccuracy.assessment(model: loaded.model, tokenizer: tokenizer, example: example)
        XCTAssertEqual(try ConditionAccuracy.assessment(model: loaded.model, tokenizer: tokenizer, example: example), text)
        XCTAssertFalse(text.contains("\n"))
        XCTAssertLessThanOrEqual(tokenizer.encode(text, parseSpecialTokens: false).count, ConditionAccuracy.maximumTokens + 2)
        XCTAssertEqual(try ConditionAccuracy.correct(model: loaded.model, tokenizer: tokenizer, examples: [example], indices: [0]),
                       [ConditionMatcher.names(note.condition, in: text)])
        let repeating = String(repeating: "Assessment: Stage 2 hypertension.\n", count: 4) + "Assessment:"
        let examples = [try record(repeating, ConditionLabel(condition: "hypertension", names: ["Stage 2 hypertension"])),
                        try record(repeating, ConditionLabel(condition: "psoriasis"))]
        let written = try ConditionAccuracy.assessment(model: loaded.model, tokenizer: tokenizer, example: examples[0])
        XCTAssertEqual(try ConditionAccuracy.correct(model: loaded.model, tokenizer: tokenizer, examples: examples, indices: [0, 1]),
                       [true, false], written)
    }

    /// The real model on the demo's notes: evaluating held-out notes while assessing some of them gives each assessed
    /// note the assessment `ConditionAccuracy.assessment` writes (exactly) and every note the loss `evaluate` gives
    /// (within the tolerance of a forward in two pieces; exactly for the notes not assessed).
    func testEvaluationThatAssessesGivesTheSameLossesAndAssessments() throws {
        let loaded = try ModelLoader.load(path: Fixtures.defaultModel.path, threads: 2)
        let tokenizer = try XCTUnwrap(loaded.tokenizer)
        let examples = try SyntheticNotes.generate(specialty: .dermatology, records: 3, seed: 11).enumerated().map { line, note in
            let json = try JSONSerialization.data(withJSONObject: ["prompt": note.prompt, "completion": note.completion,
                                                                   "condition": note.condition.condition])
            return try Dataset.parse(json, file: "h.jsonl", line: line + 1, tokenizer: tokenizer,
                                     vocabularySize: loaded.model.configuration.vocabSize)
        }
        let plain = try Evaluator.evaluate(model: loaded.model, examples: examples)
        let (evaluation, assessments) = try Evaluator.evaluate(model: loaded.model, examples: examples, assessing: [2, 0],
                                                               tokenizer: tokenizer)
        XCTAssertEqual(assessments, [try ConditionAccuracy.assessment(model: loaded.model, tokenizer: tokenizer, example: examples[2]),
                                     try ConditionAccuracy.assessment(model: loaded.model, tokenizer: tokenizer, example: examples[0])])
        XCTAssertFalse(assessments.contains(""), "\(assessments)")
        XCTAssertNotEqual(assessments[0], assessments[1], "two notes, two assessments")
        XCTAssertEqual(evaluation.tokens, plain.tokens)
        for (fused, alone) in zip(evaluation.perExample, plain.perExample) {
            XCTAssertEqual(fused.tokens, alone.tokens)
            XCTAssertEqual(fused.loss, alone.loss, accuracy: 1e-4)
        }
        XCTAssertEqual(evaluation.perExample[1].loss, plain.perExample[1].loss, "a note not assessed is scored as before")
    }

    /// The noise is added at σ = z·√3 once per coordinate, to the exact sums.
    func testReleaseNoisesEachCoordinateAtTheStatedSigma() throws {
        let before = [true, false, true], after = [true, true, true]
        XCTAssertEqual(ConditionAccuracy.exactSums(before: before, after: after), [2, 3, 3])
        var seen: [Double] = []
        let released = try ConditionAccuracy.release(before: before, after: after, noiseMultiplier: 5) { values, sigma in
            seen.append(sigma)
            values = values.map { $0 + 7 }
        }
        XCTAssertEqual(seen, [5 * 3.0.squareRoot()])
        XCTAssertEqual(released, [9, 10, 10])
    }

    /// With the production sampler (discrete Gaussian, libsodium): 400 releases have the exact sums as their mean and
    /// σ as their standard deviation within 5 standard errors, on every coordinate.
    func testProductionNoiseHasTheStatedSpread() throws {
        let before = [true, false, true, false], after = [true, true, true, false]
        let exact = ConditionAccuracy.exactSums(before: before, after: after)
        let sigma = 2 * 3.0.squareRoot()
        let draws = try (0..<400).map { _ in try ConditionAccuracy.release(before: before, after: after, noiseMultiplier: 2) }
        for coordinate in 0..<3 {
            let noise = draws.map { Double($0[coordinate] - exact[coordinate]) }
            let mean = noise.reduce(0, +) / 400
            let sd = (noise.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 399).squareRoot()
            XCTAssertEqual(mean, 0, accuracy: 5 * sigma / 20)
            XCTAssertEqual(sd, sigma, accuracy: 5 * sigma / (2 * 399).squareRoot())
        }
    }
}
