import CommandLineParsing
import FineTuning
import Foundation

/// `synth`: fake clinic notes for demos and quality checks, with a held-out split and a task form.
enum SynthCommand {
    static let command = Command(
        name: "synth", abstract: "Generate fictional clinic notes (JSONL) with a held-out split, for demos and quality checks.",
        help: """
        usage: conclave-client synth --kind clinic-notes --specialty S --records N --seed X --out F.jsonl
                                     [--held-out FRACTION] [--form text|task] [--json]

        Writes realistic but entirely fictional clinic notes: generic names, random dates of birth and record
        numbers (MRN-nnnnnnn), complaint, history, vitals, examination, assessment and plan, in the vocabulary
        and style of one specialty. The same arguments always write the same bytes.
          --kind K            what to generate: \(SyntheticNotes.Kind.allCases.map(\.rawValue).joined(separator: ", "))
          --specialty S       \(Specialty.allCases.map(\.rawValue).joined(separator: ", "))
          --records N         notes to generate, training and held-out together (1...1000000)
          --seed X            a non-negative integer; it fixes every note and the split (not a secret)
          --out F             the training file, written atomically; its directory must exist
          --held-out FRACTION share of the records, as whole patients, written to F's sibling F.heldout.jsonl
                              (default 0.2; 0 writes no held-out file; at most 0.9). No patient is in both files.
          --form FORM         text (default): {"text": note}; task: {"prompt": note without its assessment,
                              ending "\\nAssessment:", "completion": " " + assessment}
          --json              print {"records", "training", "held_out", "out", "held_out_out", "specialty", "form"}
        A patient may have up to three visits; the notes of one patient share name, birth date and MRN.
        """) { arguments in
        let kindName = try arguments.required("--kind")
        let specialtyName = try arguments.required("--specialty")
        let records = try arguments.int("--records", in: SyntheticNotes.recordRange)
        let seedText = try arguments.option("--seed")
        let out = try arguments.required("--out")
        let fraction = try arguments.double("--held-out", in: SyntheticNotes.heldOutRange) ?? 0.2
        let formName = try arguments.choice("--form", among: SyntheticNotes.Form.allCases.map(\.rawValue))
        let json = arguments.flag("--json")
        try arguments.finish()

        guard let kind = SyntheticNotes.Kind(rawValue: kindName) else {
            throw UsageError("--kind must be one of \(SyntheticNotes.Kind.allCases.map(\.rawValue).joined(separator: ", ")), got '\(kindName)'")
        }
        guard let specialty = Specialty(rawValue: specialtyName.lowercased()) else {
            throw UsageError("--specialty must be one of \(Specialty.allCases.map(\.rawValue).joined(separator: ", ")), got '\(specialtyName)'")
        }
        guard let records else { throw UsageError("missing --records") }
        guard let seedText else { throw UsageError("missing --seed") }
        guard let seed = UInt64(seedText) else { throw UsageError("--seed expects a non-negative integer, got '\(seedText)'") }
        let form = formName.flatMap(SyntheticNotes.Form.init(rawValue:)) ?? .text

        let url = URL(fileURLWithPath: out)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw UsageError("--out '\(out)' is a directory; give a file name such as notes.jsonl")
        }
        let directory = url.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UsageError("--out: directory '\(directory)' does not exist")
        }
        if fraction > 0, SyntheticNotes.heldOutURL(for: url).path == url.path {
            throw UsageError("--out '\(out)' would be its own held-out file")
        }
        let summary: SyntheticNotes.Summary
        do {
            summary = try SyntheticNotes.write(kind: kind, specialty: specialty, records: records, seed: seed, form: form,
                                               heldOutFraction: fraction, to: url)
        } catch let error as SyntheticNotesError {
            throw UsageError("--held-out: \(error)")
        }
        if json {
            try JSONOutput.print([
                "records": summary.records, "training": summary.training, "held_out": summary.heldOut,
                "out": summary.out.path, "held_out_out": summary.heldOutOut.map { $0.path as Any } ?? NSNull(),
                "specialty": specialty.rawValue, "form": form.rawValue,
            ])
        } else {
            var line = "wrote \(summary.training) \(specialty.rawValue) notes (\(form.rawValue) form) to \(summary.out.path)"
            if let heldOutOut = summary.heldOutOut { line += " and \(summary.heldOut) held-out notes to \(heldOutOut.path)" }
            print(line)
        }
        return 0
    }
}
