import Foundation

/// What long-running library code (training, evaluation) reports its progress to; libraries take
/// this interface and never know whether a terminal, a log or nothing is behind it.
public protocol ProgressSink: AnyObject, Sendable {
    /// Step `done` of the work, with extra fields such as "loss 2.31"; throttled unless `force`.
    func update(_ done: Int, _ fields: String, force: Bool)
}

extension ProgressSink {
    public func update(_ done: Int, _ fields: String = "") { update(done, fields, force: false) }
}

/// Progress of long work on standard error: step, rate and ETA, at most a few lines a second.
public final class ProgressReporter: ProgressSink, @unchecked Sendable {
    private let label: String
    private let total: Int
    private let start = Date()
    private var lastPrint = Date.distantPast
    private let enabled: Bool

    /// - Parameters:
    ///   - label: what is being done ("train", "eval").
    ///   - total: the number of steps expected (0 when unknown).
    ///   - enabled: false silences it (for example under `--quiet`).
    public init(label: String, total: Int, enabled: Bool = true) {
        self.label = label
        self.total = total
        self.enabled = enabled
    }

    /// Seconds since the reporter was created.
    public var elapsed: Double { Date().timeIntervalSince(start) }

    /// Reports step `done` of `total` with extra fields such as "loss 2.31"; throttled unless `force`.
    public func update(_ done: Int, _ fields: String, force: Bool) {
        guard enabled else { return }
        let now = Date()
        guard force || done == total || now.timeIntervalSince(lastPrint) >= 0.5 else { return }
        lastPrint = now
        let seconds = now.timeIntervalSince(start)
        var line = "\(label): \(done)"
        if total > 0 { line += "/\(total)" }
        if !fields.isEmpty { line += "  " + fields }
        if total > 0, done > 0, done < total {
            let eta = seconds / Double(done) * Double(total - done)
            line += String(format: "  eta %.0fs", eta)
        } else {
            line += String(format: "  %.1fs", seconds)
        }
        StandardError.write(line + "\n")
    }
}
