import CommandLineParsing
import FineTuning
import Foundation

/// `synth`: fake clinic notes for demos and quality checks, with a held-out split and a task form.
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
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
                              ending "\\nAssessment:", "completion": " " + assessment, "condition": its label,
                              "condition_names": the phrasings that name it (for condition accuracy)}
          --json              print {"records", "training", "held_out", "out", "held_out_out", "specialty", "form"}
        A patient may have up to three visits; the notes of one patient share name, birth date and MRN.

        examples:
          conclave-client synth --kind clinic-notes --specialty cardiology --records 800 --seed 1 \\
              --out cardio.jsonl   # also writes cardio.heldout.jsonl
          conclave-client synth --kind clinic-notes --specialty dermatology --records 100 --seed 2 \\
              --form task --held-out 0 --out derm.jsonl --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--kind", .choice, \.kind), .required("--specialty", .converted(Self.specialty), \.specialty),
            .required("--records", .int(in: SyntheticNotes.recordRange), \.records), .required("--seed", .unsigned, \.seed),
            .required("--out", \.out), .option("--held-out", .double(in: SyntheticNotes.heldOutRange), \.heldOutFraction),
            .option("--form", .choice, \.form), .flag("--json", \.json),
        ]
    }

    // Required: parsing always replaces these initial values.
    var kind = SyntheticNotes.Kind.clinicNotes
    var specialty = Specialty.cardiology
    var records = 0
    var seed: UInt64 = 0
    var out = ""
    // Optional, with their defaults.
    var heldOutFraction = 0.2
    var form = SyntheticNotes.Form.text
    var json = false

    /// `--specialty`, in any case.
    static func specialty(_ text: String) throws -> Specialty {
        guard let specialty = Specialty(rawValue: text.lowercased()) else {
            throw UsageError("--specialty must be one of \(Specialty.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
        }
        return specialty
    }

    /// `--out` names a file in an existing directory, distinct from the held-out file beside it.
    func validate() throws {
        let url = URL(fileURLWithPath: out)
        try PathCheck.outputFile("--out", out, expected: "the JSONL file to write, such as notes.jsonl")
        if heldOutFraction > 0, SyntheticNotes.heldOutURL(for: url).path == url.path {
            throw UsageError("--out '\(out)' would be its own held-out file")
        }
    }

    func run() throws -> Int32 {
        let url = URL(fileURLWithPath: out)
        let summary: SyntheticNotes.Summary
        do {
            summary = try SyntheticNotes.write(kind: kind, specialty: specialty, records: records, seed: seed, form: form,
                                               heldOutFraction: heldOutFraction, to: url)
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
