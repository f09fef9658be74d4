import Foundation

/// One line of `doctor`: what was checked, how it stands, and (unless OK) what to do about it.
public struct HealthCheck: Sendable, Equatable {
    public enum Status: String, Sendable, Comparable {
        case ok = "OK", warn = "WARN", fail = "FAIL"

        private var rank: Int { self == .ok ? 0 : self == .warn ? 1 : 2 }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    /// A short name: "cpu kernels", "model", "server certificate", "port".
    public var name: String
    public var status: Status
    /// The finding and, for WARN and FAIL, the fix, in sentences.
    public var detail: String

    public init(_ name: String, _ status: Status, _ detail: String) {
        self.name = name
        self.status = status
        self.detail = detail
    }

    /// `OK    cpu kernels: ...`.
    public var line: String { "\(status.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0)) \(name): \(detail)" }
}

/// A doctor's findings, in the order checked.
public struct HealthReport: Sendable {
    public var checks: [HealthCheck]

    public init(_ checks: [HealthCheck]) { self.checks = checks }

    /// The worst status found (OK for no checks).
    public var worst: HealthCheck.Status { checks.map(\.status).max() ?? .ok }

    /// One line a check, then a summary line.
    public var text: String {
        let counts = [HealthCheck.Status.fail, .warn].map { status in (status, checks.filter { $0.status == status }.count) }
        let summary = worst == .ok ? "all \(checks.count) checks passed"
            : counts.filter { $0.1 > 0 }.map { "\($0.1) \($0.0.rawValue)" }.joined(separator: ", ") + " of \(checks.count) checks"
        return checks.map(\.line).joined(separator: "\n") + "\n" + summary + "\n"
    }

    /// `{"ok": Bool (nothing failed), "worst": "OK"|"WARN"|"FAIL", "checks": [{"name", "status", "detail"}]}`.
    public var json: [String: Any] {
        ["ok": worst != .fail, "worst": worst.rawValue,
         "checks": checks.map { ["name": $0.name, "status": $0.status.rawValue, "detail": $0.detail] }]
    }
}
