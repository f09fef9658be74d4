import Foundation
import ModelFormats
import SystemIO

// Fictional clinic notes for the demo and the quality checks: realistic in shape, fake in every detail.
// Names come from generic first- and last-name lists, record numbers and dates are random, and the
// clinical content is assembled from templates; no note describes a real person.

/// A medical specialty whose clinic writes the notes; each has its own complaints, diagnoses, drugs,
/// examination vocabulary and section phrasing.
public enum Specialty: String, CaseIterable, Sendable {
    case cardiology, dermatology, pediatrics, psychiatry, orthopedics, endocrinology
}

/// A synthetic-data problem: bad parameters, naming the value at fault.
public struct SyntheticNotesError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The generator of fake clinic notes, their JSONL record forms and their held-out split.
///
/// Everything is reproducible: the same kind, specialty, record count and seed give the same notes, byte
/// for byte, on every platform (the generator uses its own PRNG and its own date arithmetic).
public struct SyntheticNotes {
    /// What to generate; clinic notes are the only kind so far.
    public enum Kind: String, CaseIterable, Sendable {
        case clinicNotes = "clinic-notes"
    }

    /// How a note becomes one JSONL record.
    public enum Form: String, CaseIterable, Sendable {
        /// `{"text": note}`: loss on every token.
        case text
        /// `{"prompt": note without its assessment + "\nAssessment:", "completion": " " + assessment}`.
        case task
    }

    /// Vital signs as measured at the visit.
    public struct Vitals: Sendable, Equatable, Hashable {
        public var systolic: Int
        public var diastolic: Int
        /// Beats per minute.
        public var heartRate: Int
        /// Degrees Celsius, one decimal.
        public var temperature: Double
        /// Oxygen saturation in percent.
        public var oxygenSaturation: Int
        /// Kilograms, one decimal.
        public var weight: Double
        /// Centimetres.
        public var height: Int

        /// Body-mass index, kg/m², one decimal.
        public var bodyMassIndex: Double {
            let metres = Double(height) / 100
            return (weight / (metres * metres) * 10).rounded() / 10
        }
    }

    /// One fake clinic note, its fields and its rendered forms.
    public struct Note: Sendable, Equatable, Hashable {
        public let specialty: Specialty
        public let firstName: String
        public let lastName: String
        /// "female" or "male".
        public let sex: String
        /// ISO 8601 calendar date, e.g. "1958-03-14".
        public let dateOfBirth: String
        /// "MRN-" followed by 7 digits; one per patient, unique within a generated set.
        public let medicalRecordNumber: String
        /// ISO 8601 calendar date of the visit.
        public let visitDate: String
        /// Whole years at the visit.
        public let ageYears: Int
        public let chiefComplaint: String
        /// History of present illness: two to four sentences.
        public let history: String
        public let vitals: Vitals
        public let exam: String
        /// Diagnosis and a short reasoning.
        public let assessment: String
        /// Two to four items: medications with doses, tests, follow-up.
        public let plan: [String]
        /// The condition the note was written about (one label per condition, for accuracy checks).
        public let diagnosisLabel: String
        /// The whole note.
        public let text: String
        /// The note without its assessment section, ending "\nAssessment:".
        public let prompt: String
        /// " " followed by the assessment.
        public var completion: String { " " + assessment }

        /// The condition and the phrasings that count as naming it (`SyntheticNotes.conditionNames`), for the
        /// condition accuracy of an assessment the model writes.
        public var condition: ConditionLabel {
            ConditionLabel(condition: diagnosisLabel, names: SyntheticNotes.conditionNames(specialty: specialty, label: diagnosisLabel))
        }

        /// The JSONL record of this note in `form`: a task record carries its `condition` and `condition_names`.
        public func record(_ form: Form) -> [String: Any] {
            switch form {
            case .text: return ["text": text]
            case .task:
                let label = condition
                return ["prompt": prompt, "completion": completion, "condition": label.condition,
                        "condition_names": Array(label.names.dropFirst())]
            }
        }
    }

    /// Record counts the generator accepts.
    public static let recordRange = 1...1_000_000
    /// Held-out fractions the split accepts.
    public static let heldOutRange = 0.0...0.9

    /// Generates `records` notes of one specialty, patient by patient (a patient may have up to three
    /// visits, which share name, date of birth and record number).
    ///
    /// - Precondition: `records` lies in `recordRange`.
    public static func generate(kind: Kind = .clinicNotes, specialty: Specialty, records: Int, seed: UInt64) -> [Note] {
        let visits = visitPlan(specialty: specialty, records: records, seed: seed)
        var generator = NoteGenerator(specialty: specialty, seed: seed)
        var notes: [Note] = []
        notes.reserveCapacity(records)
        for count in visits { notes += generator.patient(visits: Int(count)) }
        return notes
    }

    /// The same notes as `generate`, split into training and held-out sets that share no patient.
    ///
    /// The held-out set holds `fraction` of the records, rounded, as nearly as whole patients allow
    /// (at least one record when `fraction` > 0, never all of them); which patients go there is fixed
    /// by the seed.
    /// - Throws: `SyntheticNotesError` when `fraction` is outside `heldOutRange` or selects no patient.
    public static func generateSplit(kind: Kind = .clinicNotes, specialty: Specialty, records: Int, seed: UInt64,
                                     heldOutFraction fraction: Double) throws -> (training: [Note], heldOut: [Note]) {
        let visits = visitPlan(specialty: specialty, records: records, seed: seed)
        let heldOut = try heldOutPatients(visits: visits, fraction: fraction, seed: seed)
        var generator = NoteGenerator(specialty: specialty, seed: seed)
        var training: [Note] = [], held: [Note] = []
        for (patient, count) in visits.enumerated() {
            let notes = generator.patient(visits: Int(count))
            if heldOut[patient] { held += notes } else { training += notes }
        }
        return (training, held)
    }

    /// What `write` produced.
    public struct Summary: Sendable, Equatable {
        /// All records generated.
        public let records: Int
        /// Records written to the training file.
        public let training: Int
        /// Records written to the held-out file.
        public let heldOut: Int
        public let out: URL
        /// Nil when the held-out fraction was 0 and no held-out file was written.
        public let heldOutOut: URL?
    }

    /// Generates notes and writes them as JSONL, the training records to `url` and the held-out ones to
    /// `heldOutURL(for: url)` (skipped when `heldOutFraction` is 0), each file atomically.
    ///
    /// Notes are serialised as they are generated, so memory grows with the output, not with the notes.
    /// - Throws: `SyntheticNotesError` for a bad count or fraction; file errors naming the file.
    @discardableResult
    public static func write(kind: Kind = .clinicNotes, specialty: Specialty, records: Int, seed: UInt64, form: Form,
                             heldOutFraction fraction: Double, to url: URL) throws -> Summary {
        guard recordRange.contains(records) else {
            throw SyntheticNotesError("record count must be in \(recordRange.lowerBound)...\(recordRange.upperBound), got \(records)")
        }
        let visits = visitPlan(specialty: specialty, records: records, seed: seed)
        let heldOut = try heldOutPatients(visits: visits, fraction: fraction, seed: seed)
        var generator = NoteGenerator(specialty: specialty, seed: seed)
        var trainingData = Data(), heldOutData = Data()
        var training = 0, held = 0
        for (patient, count) in visits.enumerated() {
            for note in generator.patient(visits: Int(count)) {
                let line = try jsonLine(note.record(form))
                if heldOut[patient] {
                    heldOutData.append(line)
                    held += 1
                } else {
                    trainingData.append(line)
                    training += 1
                }
            }
        }
        try writeFileAtomically(trainingData, to: url)
        var heldOutOut: URL?
        if fraction > 0 {
            let second = heldOutURL(for: url)
            try writeFileAtomically(heldOutData, to: second)
            heldOutOut = second
        }
        return Summary(records: records, training: training, heldOut: held, out: url, heldOutOut: heldOutOut)
    }

    /// The held-out file beside a training file: `notes.jsonl` → `notes.heldout.jsonl`
    /// (`notes` → `notes.heldout.jsonl`).
    public static func heldOutURL(for url: URL) -> URL {
        let directory = url.deletingLastPathComponent()
        let name = url.lastPathComponent
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else {
            return directory.appendingPathComponent(name + ".heldout.jsonl")
        }
        return directory.appendingPathComponent(name[..<dot] + ".heldout" + name[dot...])
    }

    /// The phrasings that name a condition of the generator's, from its diagnosis templates: every expansion of
    /// each, cut at its first ", ", " (" or " - " (the qualifier that follows a diagnosis: "Aortic stenosis, severe"
    /// names "aortic stenosis"); empty for a label the specialty does not have.
    public static func conditionNames(specialty: Specialty, label: String) -> [String] {
        guard let condition = ClinicStyle.of(specialty).conditions.first(where: { $0.label == label }) else { return [] }
        var seen = Set<String>(), names: [String] = []
        for expansion in condition.diagnoses.flatMap(TemplateExpander.expansions) {
            var name = expansion
            for separator in [", ", " (", " - "] {
                if let range = name.range(of: separator) { name = String(name[..<range.lowerBound]) }
            }
            if seen.insert(name).inserted { names.append(name) }
        }
        return names
    }

    /// One JSONL line (sorted keys, newline-terminated).
    static func jsonLine(_ record: [String: Any]) throws -> Data {
        var data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes])
        data.append(UInt8(ascii: "\n"))
        return data
    }

    // MARK: Patients and the split

    /// Visits per patient, in generation order, summing to `records`: one visit for most patients, two or
    /// three for some (follow-ups).
    static func visitPlan(specialty: Specialty, records: Int, seed: UInt64) -> [UInt8] {
        precondition(recordRange.contains(records), "record count \(records) outside \(recordRange)")
        var random = SplitMix64(seed: seed, stream: 1, specialty: specialty)
        var visits: [UInt8] = []
        var remaining = records
        while remaining > 0 {
            let roll = random.below(20)
            let count = min(remaining, roll < 13 ? 1 : roll < 18 ? 2 : 3)
            visits.append(UInt8(count))
            remaining -= count
        }
        return visits
    }

    /// Which patients go to the held-out set: patients in a seeded random order, each taken while it fits
    /// in the target record count.
    static func heldOutPatients(visits: [UInt8], fraction: Double, seed: UInt64) throws -> [Bool] {
        guard fraction.isFinite, heldOutRange.contains(fraction) else {
            throw SyntheticNotesError("held-out fraction must be between \(heldOutRange.lowerBound) and \(heldOutRange.upperBound), got \(fraction)")
        }
        var selected = [Bool](repeating: false, count: visits.count)
        guard fraction > 0 else { return selected }
        let records = visits.reduce(0) { $0 + Int($1) }
        guard records >= 2 else {
            throw SyntheticNotesError("a held-out fraction of \(fraction) needs at least 2 records, got \(records)")
        }
        var needed = min(records - 1, max(1, Int((fraction * Double(records)).rounded())))
        // The split has its own stream, so the notes themselves do not depend on the fraction.
        var random = SplitMix64(seed: seed, stream: 2, specialty: nil)
        var order = Array(visits.indices)
        random.shuffle(&order)
        for patient in order where needed > 0 && Int(visits[patient]) <= needed {
            selected[patient] = true
            needed -= Int(visits[patient])
        }
        guard selected.contains(true) else {
            throw SyntheticNotesError("a held-out fraction of \(fraction) of \(records) records selects no whole patient; "
                                      + "generate more records or use a held-out fraction of 0")
        }
        return selected
    }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014): a small,
/// fast, seedable generator so that a seed reproduces a synthetic file exactly.
///
/// NOT for security, privacy noise or anything secret: synthetic data is not a secret. DP noise and keys
/// use `SecureRandom`. Deliberately not a `RandomNumberGenerator`, so that the standard library's
/// sampling algorithms (which may change between releases) never touch the output.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// A stream derived from a seed, a purpose and a specialty, so that streams never overlap in practice.
    init(seed: UInt64, stream: UInt64, specialty: Specialty?) {
        let index = specialty.flatMap { Specialty.allCases.firstIndex(of: $0) }.map { UInt64($0) + 1 } ?? 0
        var mixer = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03) ^ (index &* 0x8CB9_2BA7_2F3D_8DD7))
        state = mixer.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound, without modulo bias (values below 2⁶⁴ mod bound are redrawn).
    mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0, "empty range")
        let range = UInt64(bound)
        let threshold = (0 &- range) % range
        while true {
            let value = next()
            if value >= threshold { return Int(value % range) }
        }
    }

    mutating func int(in range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    /// Uniform in [0, 1), 53 bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    mutating func double(in range: ClosedRange<Double>) -> Double {
        range.lowerBound + unit() * (range.upperBound - range.lowerBound)
    }

    mutating func chance(_ probability: Double) -> Bool { unit() < probability }

    mutating func pick<T>(_ items: [T]) -> T {
        precondition(!items.isEmpty, "pick from an empty list")
        return items[below(items.count)]
    }

    /// `count` different elements in random order (all of them when there are fewer).
    mutating func pick<T>(distinct count: Int, from items: [T]) -> [T] {
        var indices = Array(items.indices)
        let taken = min(count, indices.count)
        for i in 0..<taken { indices.swapAt(i, i + below(indices.count - i)) }
        return indices.prefix(taken).map { items[$0] }
    }

    /// Fisher–Yates.
    mutating func shuffle<T>(_ items: inout [T]) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, to: 0, by: -1) { items.swapAt(i, below(i + 1)) }
    }
}

/// Expands note templates: `{a|b|c}` picks one alternative, `{3-9}` an integer, `{1.5-3.0}` a number with
/// as many decimals as the bounds, and `{name}` a slot value (itself a template). Braces nest.
struct TemplateExpander {
    var slots: [String: String] = [:]

    func expand(_ template: String, _ random: inout SplitMix64) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(template.utf8.count + 32)
        expand(Array(template.utf8)[...], into: &output, &random, depth: 0)
        return String(decoding: output, as: UTF8.self)
    }

    private func expand(_ bytes: ArraySlice<UInt8>, into output: inout [UInt8], _ random: inout SplitMix64, depth: Int) {
        precondition(depth < 16, "template nests too deeply: \(String(decoding: bytes, as: UTF8.self))")
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let byte = bytes[i]
            guard byte == UInt8(ascii: "{") else {
                output.append(byte)
                i += 1
                continue
            }
            var level = 0, j = i
            while j < bytes.endIndex {
                if bytes[j] == UInt8(ascii: "{") { level += 1 }
                if bytes[j] == UInt8(ascii: "}") { level -= 1; if level == 0 { break } }
                j += 1
            }
            precondition(j < bytes.endIndex, "unclosed brace in template: \(String(decoding: bytes, as: UTF8.self))")
            substitute(bytes[(i + 1)..<j], into: &output, &random, depth: depth)
            i = j + 1
        }
    }

    private func substitute(_ inner: ArraySlice<UInt8>, into output: inout [UInt8], _ random: inout SplitMix64, depth: Int) {
        // Alternatives: split at top-level bars.
        var alternatives: [ArraySlice<UInt8>] = []
        var level = 0, start = inner.startIndex
        for k in inner.indices {
            switch inner[k] {
            case UInt8(ascii: "{"): level += 1
            case UInt8(ascii: "}"): level -= 1
            case UInt8(ascii: "|") where level == 0:
                alternatives.append(inner[start..<k])
                start = k + 1
            default: break
            }
        }
        if !alternatives.isEmpty {
            alternatives.append(inner[start..<inner.endIndex])
            expand(random.pick(alternatives), into: &output, &random, depth: depth + 1)
            return
        }
        let text = String(decoding: inner, as: UTF8.self)
        if let number = Self.number(in: text, &random) {
            output += Array(number.utf8)
            return
        }
        guard let value = slots[text] else { preconditionFailure("template slot {\(text)} has no value") }
        expand(Array(value.utf8)[...], into: &output, &random, depth: depth + 1)
    }

    /// Every text `template` can expand to, for templates of alternatives and integer ranges only (no slots):
    /// the diagnoses, whose expansions are the names of their condition.
    static func expansions(_ template: String) -> [String] {
        guard let open = template.firstIndex(of: "{") else { return [template] }
        var level = 0, close = open
        for index in template[open...].indices {
            if template[index] == "{" { level += 1 }
            if template[index] == "}" { level -= 1; if level == 0 { close = index; break } }
        }
        precondition(level == 0, "unclosed brace in template: \(template)")
        let inner = String(template[template.index(after: open)..<close])
        var alternatives: [String] = [], depth = 0, current = ""
        for character in inner {
            if character == "{" { depth += 1 }
            if character == "}" { depth -= 1 }
            if character == "|" && depth == 0 { alternatives.append(current); current = ""; continue }
            current.append(character)
        }
        alternatives.append(current)
        if alternatives.count == 1 {
            alternatives = rangeOrSlot(inner, in: template)
        }
        let prefix = String(template[..<open]), rest = expansions(String(template[template.index(after: close)...]))
        return alternatives.flatMap(expansions).flatMap { middle in rest.map { prefix + middle + $0 } }
    }

    /// `{lo-hi}` as every value of the range (integers, or decimals in steps of the bounds' last digit), or the one
    /// slot diagnoses use, `{side}` (`{Side}` capitalised), as its values.
    private static func rangeOrSlot(_ inner: String, in template: String) -> [String] {
        if inner == "side" || inner == "Side" { return inner == "side" ? ["left", "right"] : ["Left", "Right"] }
        let parts = inner.split(separator: "-").map(String.init)
        precondition(parts.count == 2, "template \(template): {\(inner)} is neither a range nor {side}")
        let decimals = parts[0].split(separator: ".").dropFirst().first?.count ?? 0
        let scale = pow(10.0, Double(decimals))
        guard let low = Double(parts[0]), let high = Double(parts[1]), low <= high else {
            preconditionFailure("template \(template): {\(inner)} is not a range")
        }
        return (Int((low * scale).rounded())...Int((high * scale).rounded())).map {
            String(format: "%.\(decimals)f", Double($0) / scale)
        }
    }

    /// `{lo-hi}` as a uniform integer, or a decimal with the bounds' number of decimals.
    private static func number(in text: String, _ random: inout SplitMix64) -> String? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isNumber || $0 == "." } }) else {
            return nil
        }
        let decimals = parts[0].split(separator: ".").dropFirst().first?.count ?? 0
        if decimals == 0 {
            guard let low = Int(parts[0]), let high = Int(parts[1]), low <= high else { return nil }
            return String(random.int(in: low...high))
        }
        guard let low = Double(parts[0]), let high = Double(parts[1]), low <= high else { return nil }
        let scale = pow(10.0, Double(decimals))
        let steps = Int(((high - low) * scale).rounded())
        let value = low + Double(random.int(in: 0...steps)) / scale
        return String(format: "%.\(decimals)f", value)
    }
}

/// Proleptic Gregorian calendar dates as day numbers (days since 1970-01-01), from the civil-calendar
/// formulas in Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms".
struct CivilDate: Equatable {
    var year: Int, month: Int, day: Int

    init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    init(dayNumber: Int) {
        let z = dayNumber + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }

    var dayNumber: Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    var iso: String { String(format: "%04d-%02d-%02d", year, month, day) }

    /// Completed months from `birth` to this date.
    func months(since birth: CivilDate) -> Int {
        (year - birth.year) * 12 + (month - birth.month) - (day < birth.day ? 1 : 0)
    }
}

/// The written sections of one note, before they are laid out under their headings.
private struct NoteSections {
    let complaint: String
    let history: String
    let vitalsLine: String
    let exam: String
    let assessment: String
    let plan: [String]
}

/// What the top of a note says about the patient and the visit.
private struct NoteHeader {
    let first: String
    let last: String
    let birth: CivilDate
    let date: CivilDate
    let recordNumber: String
    let followUp: Bool
}

extension TemplateExpander {
    /// Sets a slot; a lower-case key also sets its capitalized twin (`he` -> `He`) to the capitalized value.
    mutating func set(_ key: String, _ value: String) {
        slots[key] = value
        if let head = key.first, head.isLowercase {
            slots[head.uppercased() + key.dropFirst()] = ClinicVocabulary.capitalizedFirst(value)
        }
    }

    /// Picks one template from `list`, expands it and sets the slot to the result.
    mutating func draw(_ key: String, from list: [String], _ random: inout SplitMix64) {
        let value = expand(random.pick(list), &random)
        set(key, value)
    }

    /// Picks two different templates from `list` (the same one twice if it has one) into `key1` and `key2`.
    mutating func drawTwo(_ key: String, from list: [String], _ random: inout SplitMix64) {
        let two = random.pick(distinct: 2, from: list)
        let firstValue = expand(two[0], &random)
        set(key + "1", firstValue)
        let secondValue = expand(two.count > 1 ? two[1] : two[0], &random)
        set(key + "2", secondValue)
    }

    /// The vital-sign slots, formatted as the notes print them.
    mutating func setVitals(_ vitals: SyntheticNotes.Vitals) {
        set("sbp", String(vitals.systolic))
        set("dbp", String(vitals.diastolic))
        set("hr", String(vitals.heartRate))
        set("temp", String(format: "%.1f", vitals.temperature))
        set("spo2", String(vitals.oxygenSaturation))
        set("weight", String(format: "%.1f", vitals.weight))
        set("height", String(vitals.height))
        set("bmi", String(format: "%.1f", vitals.bodyMassIndex))
    }
}

/// Turns patients into notes for one specialty, drawing everything from one seeded stream.
struct NoteGenerator {
    let specialty: Specialty
    let style: ClinicStyle
    private var random: SplitMix64
    private var usedRecordNumbers: Set<Int> = []

    /// First visits fall in 2022-01-03...2025-04-30; follow-ups come 14 to 120 days apart, at most two.
    private static let firstVisitDays = CivilDate(year: 2022, month: 1, day: 3).dayNumber...CivilDate(year: 2025, month: 4, day: 30).dayNumber
    private static let followUpGap = 14...120
    private static let latestFollowUp = 2 * 120

    init(specialty: Specialty, seed: UInt64) {
        self.specialty = specialty
        style = ClinicStyle.of(specialty)
        random = SplitMix64(seed: seed, stream: 3, specialty: specialty)
    }

    /// One patient's visits, in date order.
    mutating func patient(visits: Int) -> [SyntheticNotes.Note] {
        precondition((1...3).contains(visits), "a patient has 1 to 3 visits, not \(visits)")
        let female = random.chance(0.5)
        let first = random.pick(female ? ClinicVocabulary.femaleFirstNames : ClinicVocabulary.maleFirstNames)
        let last = random.pick(ClinicVocabulary.lastNames)
        var number = random.below(10_000_000)
        while usedRecordNumbers.contains(number) { number = random.below(10_000_000) }
        usedRecordNumbers.insert(number)
        let recordNumber = String(format: "MRN-%07d", number)

        // Age at the first visit such that every visit stays inside the specialty's ages.
        let ages = style.ages
        let youngest = Int(Double(ages.lowerBound) * 365.25) + (ages.lowerBound == 0 ? 14 : 2)
        let oldest = Int(Double(ages.upperBound + 1) * 365.25) - Self.latestFollowUp - 2
        var day = random.int(in: Self.firstVisitDays)
        let birth = CivilDate(dayNumber: day - random.int(in: youngest...oldest))
        // Height is fixed per patient for adults; children grow, so theirs follows their age.
        let adultHeight = female ? random.int(in: 152...178) : random.int(in: 164...193)

        var notes: [SyntheticNotes.Note] = []
        var condition: ClinicCondition?
        for visit in 0..<visits {
            if visit > 0 { day += random.int(in: Self.followUpGap) }
            let date = CivilDate(dayNumber: day)
            let months = date.months(since: birth)
            let eligible = style.conditions.filter { $0.ages.contains(months / 12) && (!$0.femaleOnly || female) }
            precondition(!eligible.isEmpty, "\(specialty) has no condition for age \(months / 12)")
            if let previous = condition, eligible.contains(where: { $0.label == previous.label }), random.chance(0.7) {
                condition = previous
            } else {
                condition = random.pick(eligible)
            }
            guard let condition else { preconditionFailure("no condition chosen") }
            notes.append(note(condition: condition, female: female, first: first, last: last, birth: birth, date: date,
                              ageMonths: months, height: adultHeight, recordNumber: recordNumber, followUp: visit > 0))
        }
        return notes
    }

    /// One visit's note. The slots are filled, then the sections written, then laid out; each step draws
    /// from `random` in a fixed order, so the same seed always writes the same bytes.
    private mutating func note(condition: ClinicCondition, female: Bool, first: String, last: String, birth: CivilDate,
                               date: CivilDate, ageMonths: Int, height adultHeight: Int, recordNumber: String,
                               followUp: Bool) -> SyntheticNotes.Note {
        var expander = TemplateExpander()
        setPatientSlots(&expander, female: female, first: first, last: last, birth: birth, date: date,
                        ageMonths: ageMonths)
        let vitals = makeVitals(condition.vitals, female: female, ageMonths: ageMonths, adultHeight: adultHeight)
        expander.setVitals(vitals)
        drawClinicalSlots(&expander, condition: condition)
        let sections = writeSections(&expander, condition: condition)
        let header = NoteHeader(first: first, last: last, birth: birth, date: date, recordNumber: recordNumber,
                                followUp: followUp)
        let (text, prompt) = layOut(sections, header: header, &expander)
        return SyntheticNotes.Note(
            specialty: specialty, firstName: first, lastName: last, sex: female ? "female" : "male",
            dateOfBirth: birth.iso, medicalRecordNumber: recordNumber, visitDate: date.iso, ageYears: ageMonths / 12,
            chiefComplaint: sections.complaint, history: sections.history, vitals: vitals, exam: sections.exam,
            assessment: sections.assessment, plan: sections.plan, diagnosisLabel: condition.label, text: text,
            prompt: prompt)
    }

    /// Who the patient is: name, pronouns, age and sex in words, and the per-note details (guardian, side,
    /// occupation) that templates refer to.
    private mutating func setPatientSlots(_ expander: inout TemplateExpander, female: Bool, first: String,
                                          last: String, birth: CivilDate, date: CivilDate, ageMonths: Int) {
        let years = ageMonths / 12
        let child = years < 18
        expander.set("first", first)
        expander.set("last", last)
        expander.set("title", female ? "Ms." : "Mr.")
        expander.set("he", female ? "she" : "he")
        expander.set("his", female ? "her" : "his")
        expander.set("him", female ? "her" : "him")
        if years >= 2 {
            expander.set("age", "\(years)-year-old")
            expander.set("ageShort", "\(years) y/o")
        } else if ageMonths >= 1 {
            expander.set("age", "\(ageMonths)-month-old")
            expander.set("ageShort", "\(ageMonths) mo")
        } else {
            let weeks = max(1, (date.dayNumber - birth.dayNumber) / 7)
            expander.set("age", "\(weeks)-week-old")
            expander.set("ageShort", "\(weeks) wk")
        }
        expander.set("sex", child ? (years < 1 ? (female ? "infant girl" : "infant boy") : (female ? "girl" : "boy"))
                                  : (female ? "woman" : "man"))
        expander.set("sexShort", female ? "F" : "M")
        expander.set("guardian", random.pick(ClinicVocabulary.guardians))
        expander.set("side", random.chance(0.5) ? "left" : "right")
        expander.set("occupation", random.pick(ClinicVocabulary.occupations))
    }

    /// The condition's complaint, symptoms, findings and diagnosis, and the specialty's normals and comorbidities.
    /// Each is picked and expanded once so that a slot means the same thing everywhere in the note.
    private mutating func drawClinicalSlots(_ expander: inout TemplateExpander, condition: ClinicCondition) {
        expander.draw("complaint", from: condition.complaints, &random)
        expander.draw("duration", from: condition.durations, &random)
        expander.drawTwo("symptom", from: condition.symptoms, &random)
        expander.drawTwo("neg", from: condition.negatives + style.negatives, &random)
        expander.drawTwo("finding", from: condition.findings, &random)
        expander.drawTwo("normal", from: style.examNormals, &random)
        expander.drawTwo("comorbidity", from: style.comorbidities, &random)
        expander.draw("general", from: style.examGeneral, &random)
        expander.draw("dx", from: condition.diagnoses, &random)
        let lab = condition.labs.isEmpty ? "" : expander.expand(random.pick(condition.labs), &random)
        expander.set("lab", lab)
        expander.draw("reason", from: condition.reasoning, &random)
    }

    /// The note's sections, written from the filled slots.
    private mutating func writeSections(_ expander: inout TemplateExpander, condition: ClinicCondition) -> NoteSections {
        let complaint = ClinicVocabulary.polish(expander.expand(random.pick(style.chiefComplaintFrames), &random))
        // History: an opening sentence, then one to three of the detail kinds, in their usual order.
        var sentences = [expander.expand(random.pick(style.openers), &random)]
        let kinds = [style.symptomSentences, style.detailSentences, style.negativeSentences, style.contextSentences]
        let chosen = Set(random.pick(distinct: random.int(in: 1...3), from: Array(kinds.indices)))
        for index in kinds.indices where chosen.contains(index) {
            sentences.append(expander.expand(random.pick(kinds[index]), &random))
        }
        let history = ClinicVocabulary.polish(sentences.joined(separator: " "))
        let vitalsLine = expander.expand(random.pick(style.vitalsFrames), &random)
        let exam = ClinicVocabulary.polish(expander.expand(random.pick(style.examFrames), &random))
        let assessment = ClinicVocabulary.polish(expander.expand(random.pick(style.assessmentFrames), &random))

        var plan = random.pick(distinct: random.int(in: 1...2), from: condition.medications)
        if random.chance(0.65) { plan += random.pick(distinct: 1, from: condition.tests) }
        if plan.count < 3 && random.chance(0.4) { plan.append(random.pick(style.planExtras)) }
        plan.append(random.pick(style.followUps))
        let planItems = plan.map { ClinicVocabulary.polish(ClinicVocabulary.capitalizedFirst(expander.expand($0, &random))) }
        return NoteSections(complaint: complaint, history: history, vitalsLine: vitalsLine, exam: exam,
                            assessment: assessment, plan: planItems)
    }

    /// The whole note and its prompt (the note without its assessment, ending "\nAssessment:"): a title, the
    /// patient's identity, the visit line, then the headed sections.
    private mutating func layOut(_ sections: NoteSections, header: NoteHeader,
                                 _ expander: inout TemplateExpander) -> (text: String, prompt: String) {
        let title = expander.expand(random.pick(style.titles), &random)
        let visitType = header.followUp ? random.pick(["Follow-up", "Return visit", "Follow-up visit"])
                                        : random.pick(["New patient", "New consult", "Initial visit"])
        let (first, last, birth, mrn) = (header.first, header.last, header.birth.iso, header.recordNumber)
        let identity = random.pick([
            "Patient: \(last), \(first)    DOB: \(birth)    MRN: \(mrn)",
            "Name: \(first) \(last) | DOB: \(birth) | \(mrn)",
            "Patient name: \(first) \(last), DOB \(birth), \(mrn)",
        ])
        let date = header.date.iso
        let visitLine = random.pick(["Visit date: \(date) (\(visitType))", "Date of service: \(date) - \(visitType)",
                                     "\(visitType), seen \(date)"])
        func heading(_ list: [String]) -> String { expander.expand(random.pick(list), &random) }
        let before = [
            title, identity, visitLine,
            heading(style.chiefComplaintHeadings) + " " + sections.complaint,
            heading(style.historyHeadings) + " " + sections.history,
            heading(style.vitalsHeadings) + " " + sections.vitalsLine,
            heading(style.examHeadings) + " " + sections.exam,
        ]
        let planLines = [heading(style.planHeadings)]
            + sections.plan.enumerated().map { style.bullet($0.offset + 1) + $0.element }
        let text = (before + ["Assessment: " + sections.assessment] + planLines).joined(separator: "\n")
        let prompt = (before + planLines).joined(separator: "\n") + "\nAssessment:"
        return (text, prompt)
    }

    /// Vital signs from the specialty's adult ranges (blood pressure rising with age) or, for children,
    /// from age-band ranges, adjusted by the condition.
    private mutating func makeVitals(_ profile: VitalsProfile, female: Bool, ageMonths: Int, adultHeight: Int)
        -> SyntheticNotes.Vitals {
        let years = ageMonths / 12
        var systolic: Int, diastolic: Int, heartRate: Int, height: Int, weight: Double
        if years < 18 {
            // Paediatric bands: infants, toddlers, preschool, school age, adolescents.
            let band = ageMonths < 12 ? 0 : years < 3 ? 1 : years < 6 ? 2 : years < 12 ? 3 : 4
            systolic = random.int(in: [72...95, 84...104, 88...108, 94...116, 104...126][band])
            diastolic = random.int(in: [40...60, 48...64, 50...68, 55...75, 60...80][band])
            heartRate = random.int(in: [110...160, 95...140, 80...120, 70...110, 60...100][band])
            let base: Double = ageMonths < 12 ? 3.4 + 0.55 * Double(ageMonths)
                : years < 11 ? 2.2 * Double(years) + 8 : 3.6 * Double(years) + 2
            weight = base * random.double(in: 0.85...1.18)
            let growth: Double = ageMonths < 12 ? 50 + 2.1 * Double(ageMonths)
                : years < 13 ? 76 + 6.1 * Double(years - 1) : Double(female ? 150 : 156) + 3 * Double(min(years, 17) - 13)
            height = Int((growth * random.double(in: 0.95...1.05)).rounded())
            if let bmi = profile.bodyMassIndex, years >= 6 {
                let metres = Double(height) / 100
                weight = random.double(in: bmi) * 0.92 * metres * metres
            }
        } else {
            let ageRise = max(0, years - 40) * 2 / 5
            systolic = random.int(in: profile.systolic ?? 106...134) + ageRise
            diastolic = random.int(in: profile.diastolic ?? 62...86)
            heartRate = random.int(in: profile.heartRate ?? 58...90)
            height = adultHeight
            let metres = Double(height) / 100
            weight = random.double(in: profile.bodyMassIndex ?? 19.5...31) * metres * metres
        }
        if let shift = profile.heartRateShift { heartRate += random.int(in: shift) }
        diastolic = min(diastolic, systolic - 25)
        let temperature = (random.double(in: profile.temperature ?? 36.3...37.2) * 10).rounded() / 10
        return SyntheticNotes.Vitals(systolic: systolic, diastolic: diastolic, heartRate: heartRate, temperature: temperature,
                                     oxygenSaturation: random.int(in: profile.oxygenSaturation ?? 96...100),
                                     weight: (weight * 10).rounded() / 10, height: height)
    }
}
