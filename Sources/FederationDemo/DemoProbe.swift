import FineTuning
import Foundation
import Reports
import SystemIO

/// The demo's public probe (issue 17): a few fictional clinic notes that anyone may read, held by the coordinator,
/// whose assessment the model writes (greedy) with the base model before the rounds and with the final global
/// adapter after them. They come from the synthetic-notes generator at public seeds no client uses (clients take
/// seeds 1...N), one per specialty of the first clients, so they read like the clients' notes without being any.
public enum DemoProbe {
    /// The first probe note's seed; note `i` uses `firstSeed + i`.
    public static let firstSeed: UInt64 = 9001
    /// At most this many notes (one per specialty of the first clients).
    public static let maximumNotes = 3
    /// Tokens generated per assessment: one line is about 30.
    public static let maximumTokens = 40
    /// The notes as the coordinator keeps them (`prompt`, `completion`, `title`), beside its state directory.
    public static let fileName = "public-probe.jsonl"
    /// The public held-out set's first seed: specialty `i` of the probe's uses `heldOutSeed + i`.
    public static let heldOutSeed: UInt64 = 9101
    /// Public held-out notes per specialty of the probe's.
    public static let heldOutPerSpecialty = 10
    /// The public held-out set as the coordinator keeps it (`prompt`, `completion`), beside its state directory.
    public static let heldOutFileName = "public-heldout.jsonl"

    /// The public notes for a demo of `clients` clients: the note at `firstSeed + i` of client i's specialty.
    public static func notes(clients: Int) -> [SyntheticNotes.Note] {
        (0..<min(maximumNotes, max(1, clients))).map { index in
            let specialty = Specialty.allCases[index % Specialty.allCases.count]
            return SyntheticNotes.generate(specialty: specialty, records: 1, seed: firstSeed + UInt64(index))[0]
        }
    }

    /// The public held-out set: `heldOutPerSpecialty` notes of each specialty of the probe's notes, at public seeds no
    /// client uses, scored exactly (no noise: no client holds them) with the base model and with the final adapter.
    public static func heldOutNotes(clients: Int) -> [SyntheticNotes.Note] {
        notes(clients: clients).enumerated().flatMap { index, note in
            SyntheticNotes.generate(specialty: note.specialty, records: heldOutPerSpecialty, seed: heldOutSeed + UInt64(index))
        }
    }

    /// The loss `conclave-client eval` gives the set in `data` (with `adapter`, or the base model when nil), records cut
    /// at `maxLength` tokens as the clients' are: the mean over the assessments' tokens, and how many notes and tokens.
    static func heldOutLoss(data: URL, model: String, adapter: URL?, maxLength: Int, client: URL,
                            in federation: LocalFederation) throws -> (loss: Double, notes: Int, tokens: Int) {
        var arguments = ["eval", "--model", model, "--data", data.path, "--max-length", "\(maxLength)", "--threads", "2", "--json"]
        if let adapter { arguments += ["--adapter", adapter.path] }
        let output = try federation.run(client, arguments)
        guard let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let loss = object["loss"] as? Double, let notes = object["examples"] as? Int, let tokens = object["tokens"] as? Int,
              loss.isFinite else {
            throw LocalFederationError.setup("conclave-client eval printed no finite \"loss\": \(output.prefix(200))")
        }
        return (loss, notes, tokens)
    }

    /// A note's title in the report: its first line (the clinic's heading) and its specialty.
    static func title(_ note: SyntheticNotes.Note) -> String {
        let heading = note.prompt.split(separator: "\n", maxSplits: 1).first.map(String.init) ?? note.specialty.rawValue
        return "\(heading) (\(note.specialty.rawValue), public)"
    }

    /// The assessment the model writes after `prompt`: the greedy continuation by `conclave-client generate`
    /// (with `adapter`, or the base model alone when nil), up to its first line break.
    static func assessment(prompt: String, model: String, adapter: URL?, client: URL, in federation: LocalFederation) throws -> String {
        var arguments = ["generate", "--model", model, "--prompt", prompt, "--temperature", "0",
                         "--max-tokens", "\(maximumTokens)", "--threads", "2", "--json"]
        if let adapter { arguments += ["--adapter", adapter.path] }
        let output = try federation.run(client, arguments)
        guard let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let text = object["text"] as? String else {
            throw LocalFederationError.setup("conclave-client generate printed no \"text\": \(output.prefix(200))")
        }
        return firstLine(text)
    }

    /// The text's first line that is not blank, trimmed: an assessment is one line ("(nothing)" when all is blank).
    public static func firstLine(_ text: String) -> String {
        let line = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty }
        return line ?? "(nothing)"
    }

    /// Writes the notes (JSONL: title, prompt, completion; no title when `titled` is false) to `url`, durably.
    static func write(_ notes: [SyntheticNotes.Note], to url: URL, titled: Bool = true) throws {
        var lines = ""
        for note in notes {
            var record: [String: String] = ["prompt": note.prompt, "completion": note.completion]
            if titled { record["title"] = title(note) }
            let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
            lines += String(decoding: data, as: UTF8.self) + "\n"
        }
        try writeFileAtomically(Data(lines.utf8), to: url)
    }
}
