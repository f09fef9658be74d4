import Foundation
import ModelFormats
import TestSupport
import Tokenizer
import XCTest
@testable import FineTuning

final class SyntheticNotesTests: XCTestCase {
    static let tokenizer: BPETokenizer? = try? BPETokenizer(ggufMetadata: GGUFFile(url: Fixtures.defaultModel).metadata)

    /// Lower-case word set of some notes.
    func words(_ notes: [SyntheticNotes.Note]) -> Set<Substring> {
        var set = Set<Substring>()
        for note in notes {
            for word in note.text.lowercased().split(whereSeparator: { !$0.isLetter }) { set.insert(word) }
        }
        return set
    }

    func jaccard(_ a: Set<Substring>, _ b: Set<Substring>) -> Double {
        Double(a.intersection(b).count) / Double(a.union(b).count)
    }

    func testGeneratorPrimitivesAgainstKnownValues() {
        // SplitMix64 from seed 0 (Steele, Lea, Flood 2014; the values every implementation reproduces).
        var random = SplitMix64(seed: 0)
        XCTAssertEqual(random.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(random.next(), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(random.next(), 0x06C4_5D18_8009_454F)
        var counts = [Int](repeating: 0, count: 3)
        for _ in 0..<3000 { counts[random.below(3)] += 1 }
        XCTAssertTrue(counts.allSatisfy { (850...1150).contains($0) }, "\(counts)")

        XCTAssertEqual(CivilDate(year: 1970, month: 1, day: 1).dayNumber, 0)
        XCTAssertEqual(CivilDate(year: 2000, month: 3, day: 1).dayNumber, 11017)
        XCTAssertEqual(CivilDate(year: 2024, month: 2, day: 29).dayNumber, 19782)
        XCTAssertEqual(CivilDate(dayNumber: 19782).iso, "2024-02-29")
        for day in stride(from: -30000, to: 30000, by: 7) { XCTAssertEqual(CivilDate(dayNumber: day).dayNumber, day) }
        XCTAssertEqual(CivilDate(year: 2024, month: 3, day: 14).months(since: CivilDate(year: 2023, month: 3, day: 15)), 11)

        var expander = TemplateExpander()
        expander.slots["he"] = "she"
        expander.slots["He"] = "She"
        var seen = Set<String>()
        for _ in 0..<200 {
            let text = expander.expand("{He} has {a|b{1|2}} for {3-5} days at {37.5-38.5} C", &random)
            seen.insert(text)
            XCTAssertTrue(text.hasPrefix("She has "), text)
            let parts = text.split(separator: " ")
            XCTAssertTrue(["a", "b1", "b2"].contains(String(parts[2])), text)
            XCTAssertTrue((3...5).contains(Int(parts[4]) ?? 0), text)
            let temperature = String(parts[7])
            XCTAssertEqual(temperature.split(separator: ".").last?.count, 1, text)
            XCTAssertTrue((37.5...38.5).contains(Double(temperature) ?? 0), text)
        }
        XCTAssertGreaterThan(seen.count, 20)
        XCTAssertEqual(ClinicVocabulary.polish("pain for 1 days, a 8-year-old and 11 days"), "pain for 1 day, an 8-year-old and 11 days")
        XCTAssertEqual(ClinicVocabulary.polish("A 18-month-old (1 weeks)"), "An 18-month-old (1 week)")
    }

    func testSameSeedSameNotesOtherSeedsOtherNotes() throws {
        for specialty in Specialty.allCases {
            let first = SyntheticNotes.generate(specialty: specialty, records: 60, seed: 42)
            XCTAssertEqual(first.count, 60)
            XCTAssertEqual(first, SyntheticNotes.generate(specialty: specialty, records: 60, seed: 42), "\(specialty)")
            let other = SyntheticNotes.generate(specialty: specialty, records: 60, seed: 43)
            XCTAssertTrue(Set(first.map(\.text)).isDisjoint(with: other.map(\.text)), "\(specialty): seeds 42 and 43 share notes")
            XCTAssertTrue(Set(first.map(\.history)).intersection(other.map(\.history)).count < 3, "\(specialty)")
        }
        // The files too, byte for byte.
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = directory.appendingPathComponent("a.jsonl"), b = directory.appendingPathComponent("b.jsonl")
        for url in [a, b] {
            try SyntheticNotes.write(specialty: .psychiatry, records: 40, seed: 9, form: .task, heldOutFraction: 0.25, to: url)
        }
        XCTAssertEqual(try Data(contentsOf: a), try Data(contentsOf: b))
        XCTAssertEqual(try Data(contentsOf: SyntheticNotes.heldOutURL(for: a)), try Data(contentsOf: SyntheticNotes.heldOutURL(for: b)))
    }

    /// Word sets of two specialties overlap little; two samples of one specialty overlap a lot, so the bound
    /// separates the two cases (a generator that ignored the specialty would fail it).
    func testSpecialtiesDifferInVocabulary() {
        let samples = Dictionary(uniqueKeysWithValues: Specialty.allCases.map {
            ($0, words(SyntheticNotes.generate(specialty: $0, records: 200, seed: 1)))
        })
        for (i, a) in Specialty.allCases.enumerated() {
            for b in Specialty.allCases.dropFirst(i + 1) {
                let similarity = jaccard(samples[a]!, samples[b]!)
                XCTAssertLessThan(similarity, 0.40, "\(a) and \(b) share too much vocabulary: Jaccard \(similarity)")
            }
            let again = jaccard(samples[a]!, words(SyntheticNotes.generate(specialty: a, records: 200, seed: 2)))
            XCTAssertGreaterThan(again, 0.80, "\(a) against itself with another seed: Jaccard \(again)")
        }
    }

    func testNotesVaryWithinASpecialty() {
        for specialty in Specialty.allCases {
            let notes = SyntheticNotes.generate(specialty: specialty, records: 500, seed: 5)
            func distinct(_ values: [String]) -> Int { Set(values).count }
            XCTAssertGreaterThanOrEqual(distinct(notes.map(\.history)), 450, "\(specialty): histories repeat")
            XCTAssertGreaterThanOrEqual(distinct(notes.map(\.exam)), 400, "\(specialty): examinations repeat")
            XCTAssertGreaterThanOrEqual(distinct(notes.map(\.assessment)), 300, "\(specialty): assessments repeat")
            XCTAssertGreaterThanOrEqual(distinct(notes.map { $0.plan.joined(separator: "|") }), 300, "\(specialty): plans repeat")
            XCTAssertGreaterThanOrEqual(distinct(notes.map(\.diagnosisLabel)), 7, "\(specialty): too few conditions")
            XCTAssertGreaterThanOrEqual(distinct(notes.map(\.lastName)), 50, "\(specialty)")
            for note in notes {
                XCTAssertTrue((2...4).contains(note.plan.count), "\(specialty): \(note.plan)")
                let titles = note.history.components(separatedBy: "Mr. ").count + note.history.components(separatedBy: "Ms. ").count - 2
                let sentences = note.history.components(separatedBy: ". ").count - titles
                XCTAssertTrue((2...4).contains(sentences), "\(specialty): \(note.history)")
                XCTAssertFalse(note.text.contains("{") || note.text.contains("}"), note.text)
                XCTAssertNotNil(note.medicalRecordNumber.wholeMatch(of: /MRN-[0-9]{7}/), note.medicalRecordNumber)
                XCTAssertTrue(note.text.contains(note.medicalRecordNumber) && note.text.contains(note.dateOfBirth))
                XCTAssertLessThan(note.dateOfBirth, note.visitDate)
            }
        }
    }

    func testVitalsArePlausibleForSpecialtyAndAge() {
        for specialty in Specialty.allCases {
            for note in SyntheticNotes.generate(specialty: specialty, records: 400, seed: 11) {
                let v = note.vitals
                if specialty == .pediatrics { XCTAssertTrue((0...17).contains(note.ageYears), "age \(note.ageYears)") }
                if specialty != .pediatrics && specialty != .dermatology { XCTAssertGreaterThanOrEqual(note.ageYears, 18) }
                let pressureOK = (60...200).contains(v.systolic) && v.diastolic < v.systolic - 20
                XCTAssertTrue(pressureOK, "\(specialty) BP \(v.systolic)/\(v.diastolic)")
                XCTAssertTrue((45...190).contains(v.heartRate), "\(specialty) HR \(v.heartRate)")
                XCTAssertTrue((36.0...40.0).contains(v.temperature), "\(specialty) T \(v.temperature)")
                XCTAssertTrue((88...100).contains(v.oxygenSaturation), "\(specialty) SpO2 \(v.oxygenSaturation)")
                XCTAssertTrue((2.0...200.0).contains(v.weight), "\(specialty) weight \(v.weight)")
                if note.ageYears >= 18 { XCTAssertTrue((15.0...45.0).contains(v.bodyMassIndex), "BMI \(v.bodyMassIndex)") }
                if note.ageYears < 1 { XCTAssertTrue(v.weight < 12 && v.heartRate >= 110, "infant \(v)") }
            }
        }
        // The condition shows in the numbers: hypertension raises blood pressure, Graves disease the pulse.
        let cardiology = SyntheticNotes.generate(specialty: .cardiology, records: 600, seed: 3)
        let hypertensive = cardiology.filter { $0.diagnosisLabel == "hypertension" }.map(\.vitals.systolic)
        let others = cardiology.filter { $0.diagnosisLabel == "stable angina" }.map(\.vitals.systolic)
        let hypertensiveMean = hypertensive.reduce(0, +) / max(1, hypertensive.count)
        let othersMean = others.reduce(0, +) / max(1, others.count)
        XCTAssertGreaterThan(hypertensiveMean, othersMean + 15)
    }

    func testTaskFormHoldsBackTheAssessment() throws {
        for specialty in Specialty.allCases {
            for note in SyntheticNotes.generate(specialty: specialty, records: 50, seed: 8) {
                let record = note.record(.task)
                XCTAssertEqual(record.keys.sorted(), ["completion", "condition", "condition_names", "prompt"])
                XCTAssertEqual(record["condition"] as? String, note.diagnosisLabel)
                XCTAssertEqual(record["condition_names"] as? [String], Array(note.condition.names.dropFirst()))
                XCTAssertTrue(note.prompt.hasSuffix("\nAssessment:"))
                XCTAssertEqual(note.prompt.components(separatedBy: "Assessment:").count, 2, "one Assessment heading, at the end")
                XCTAssertFalse(note.prompt.contains(note.assessment), "the prompt gives the assessment away")
                XCTAssertEqual(record["completion"] as? String, " " + note.assessment)
                XCTAssertTrue(note.text.contains("\nAssessment: " + note.assessment + "\n"))
                // The prompt is exactly the note without its assessment line.
                let lines = note.text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("Assessment: ") }
                XCTAssertEqual(lines.joined(separator: "\n") + "\nAssessment:", note.prompt)
                XCTAssertEqual(note.record(.text) as? [String: String], ["text": note.text])
            }
        }
    }

    func testHeldOutSplitSharesNoPatient() throws {
        let all = SyntheticNotes.generate(specialty: .orthopedics, records: 1000, seed: 21)
        let split = try SyntheticNotes.generateSplit(specialty: .orthopedics, records: 1000, seed: 21, heldOutFraction: 0.2)
        XCTAssertEqual(split.heldOut.count, 200)
        XCTAssertEqual(split.training.count, 800)
        XCTAssertEqual(Set(split.training.map(\.text)).union(split.heldOut.map(\.text)), Set(all.map(\.text)),
                       "the split reorders the same notes, it does not change them")
        let trainingPatients = Set(split.training.map(\.medicalRecordNumber))
        XCTAssertTrue(trainingPatients.isDisjoint(with: split.heldOut.map(\.medicalRecordNumber)))
        XCTAssertLessThan(Set(all.map(\.medicalRecordNumber)).count, 1000, "some patients come back for follow-up")

        // The files on disk, read back: disjoint by record and by the MRN printed in each note.
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("ortho.jsonl")
        let summary = try SyntheticNotes.write(specialty: .orthopedics, records: 1000, seed: 21, form: .text, heldOutFraction: 0.2, to: out)
        XCTAssertEqual(summary.heldOutOut?.lastPathComponent, "ortho.heldout.jsonl")
        func notes(_ url: URL) throws -> [String] {
            try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
                return try XCTUnwrap(object?["text"])
            }
        }
        let training = try notes(out), heldOut = try notes(SyntheticNotes.heldOutURL(for: out))
        XCTAssertEqual(training.count, summary.training)
        XCTAssertEqual(heldOut.count, summary.heldOut)
        XCTAssertTrue(Set(training).isDisjoint(with: heldOut))
        func recordNumbers(_ texts: [String]) -> Set<String> {
            Set(texts.compactMap { $0.firstMatch(of: /MRN-[0-9]{7}/).map { String($0.output) } })
        }
        XCTAssertTrue(recordNumbers(training).isDisjoint(with: recordNumbers(heldOut)))
        XCTAssertEqual(recordNumbers(training).count + recordNumbers(heldOut).count, Set(all.map(\.medicalRecordNumber)).count)
    }

    func testSplitParametersAndFileNames() throws {
        XCTAssertEqual(SyntheticNotes.heldOutURL(for: URL(fileURLWithPath: "/d/foo.jsonl")).path, "/d/foo.heldout.jsonl")
        XCTAssertEqual(SyntheticNotes.heldOutURL(for: URL(fileURLWithPath: "/d/foo")).path, "/d/foo.heldout.jsonl")
        XCTAssertEqual(SyntheticNotes.heldOutURL(for: URL(fileURLWithPath: "/d/a.b.txt")).path, "/d/a.b.heldout.txt")
        XCTAssertThrowsError(try SyntheticNotes.generateSplit(specialty: .cardiology, records: 10, seed: 1, heldOutFraction: 0.95)) {
            XCTAssertTrue("\($0)".contains("0.95"), "\($0)")
        }
        XCTAssertThrowsError(try SyntheticNotes.generateSplit(specialty: .cardiology, records: 1, seed: 1, heldOutFraction: 0.2)) {
            XCTAssertTrue("\($0)".contains("at least 2 records"), "\($0)")
        }
        let small = try SyntheticNotes.generateSplit(specialty: .cardiology, records: 3, seed: 1, heldOutFraction: 0.1)
        XCTAssertEqual(small.heldOut.count, 1, "a positive fraction holds out at least one record")
        let none = try SyntheticNotes.generateSplit(specialty: .cardiology, records: 30, seed: 1, heldOutFraction: 0)
        XCTAssertEqual(none.heldOut.count, 0)

        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("all.jsonl")
        let summary = try SyntheticNotes.write(specialty: .dermatology, records: 12, seed: 2, form: .text, heldOutFraction: 0, to: out)
        XCTAssertNil(summary.heldOutOut)
        XCTAssertEqual(summary.training, 12)
        XCTAssertFalse(FileManager.default.fileExists(atPath: SyntheticNotes.heldOutURL(for: out).path))
        XCTAssertThrowsError(try SyntheticNotes.write(specialty: .dermatology, records: 5, seed: 2, form: .text, heldOutFraction: 0.2,
                                                      to: directory.appendingPathComponent("missing/x.jsonl")))
    }

    /// Every specialty in both forms loads through `Dataset.load`, with the loss where the form puts it.
    func testEveryFileLoadsAsADataset() throws {
        let tokenizer = try XCTUnwrap(Self.tokenizer, "the default model's tokenizer is needed: run `make model`")
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var longest = 0
        for specialty in Specialty.allCases {
            for form in SyntheticNotes.Form.allCases {
                let out = directory.appendingPathComponent("\(specialty.rawValue)-\(form.rawValue).jsonl")
                let summary = try SyntheticNotes.write(specialty: specialty, records: 30, seed: 4, form: form, heldOutFraction: 0.2, to: out)
                let training = try Dataset.load(out, tokenizer: tokenizer, maxLength: 512, vocabularySize: 49152)
                let heldOut = try Dataset.load(try XCTUnwrap(summary.heldOutOut), tokenizer: tokenizer, maxLength: 512, vocabularySize: 49152)
                XCTAssertEqual(training.count, summary.training)
                XCTAssertEqual(heldOut.count, summary.heldOut)
                longest = max(longest, (training + heldOut).map(\.ids.count).max() ?? 0)
                let notes = try SyntheticNotes.generateSplit(specialty: specialty, records: 30, seed: 4, heldOutFraction: 0.2).training
                for (example, note) in zip(training, notes) {
                    switch form {
                    case .text:
                        XCTAssertEqual(example.countedTokens, example.ids.count - 1)
                    case .task:
                        let counted = example.labels.filter { $0 != -100 }
                        XCTAssertEqual(tokenizer.decode(Array(counted.dropLast())), note.completion, "loss on the assessment only")
                    }
                }
            }
        }
        XCTAssertLessThan(longest, 512, "notes fit a short context")
    }

    /// What a fine-tuned model can pick up: a word model fitted on one specialty's training notes predicts
    /// that specialty's held-out notes far better than another specialty's.
    func testSpecialtyIsLearnableFromItsTrainingSplit() throws {
        func tokens(_ notes: [SyntheticNotes.Note]) -> [Substring] {
            notes.flatMap { $0.text.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }) }
        }
        var crossEntropy: [Specialty: [Specialty: Double]] = [:]
        var heldOut: [Specialty: [Substring]] = [:]
        var counts: [Specialty: [Substring: Int]] = [:]
        for specialty in Specialty.allCases {
            let split = try SyntheticNotes.generateSplit(specialty: specialty, records: 400, seed: 13, heldOutFraction: 0.2)
            counts[specialty] = tokens(split.training).reduce(into: [:]) { $0[$1, default: 0] += 1 }
            heldOut[specialty] = tokens(split.heldOut)
        }
        let vocabulary = Set(counts.values.flatMap(\.keys)).union(heldOut.values.joined()).count
        for (model, table) in counts {
            let total = Double(table.values.reduce(0, +))
            for (data, words) in heldOut {
                // Add-one smoothed unigram cross-entropy, nats per word.
                let sum = words.reduce(0.0) { $0 - log((Double(table[$1] ?? 0) + 1) / (total + Double(vocabulary))) }
                crossEntropy[model, default: [:]][data] = sum / Double(words.count)
            }
        }
        for model in Specialty.allCases {
            let own = crossEntropy[model]![model]!
            for other in Specialty.allCases where other != model {
                XCTAssertGreaterThan(crossEntropy[other]![model]!, own + 0.8,
                                     "a \(other) model predicts \(model) notes almost as well as a \(model) model")
            }
        }
    }
}
