#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The fault-injection seam (issue 14): a process started with `CONCLAVE_FAULT_POINT=NAME` in its
/// environment kills itself with SIGKILL when it first reaches the point `NAME`, so that a test can
/// stop a coordinator or a client at an exact place of a real round (between the ledger's charge and
/// the upload, between the audit append and the mark's removal, ...) and check what a restart makes
/// of it. Unset (the only way a deployment runs), `reach` compares with nil and returns: the seam is
/// inert. Only the environment the process was started with arms it; no peer, file or frame can.
/// The points are listed in `names`; `Tests/FaultInjection` arms them one at a time.
public enum FaultPoint {
    /// The environment variable that arms a point.
    public static let variable = "CONCLAVE_FAULT_POINT"

    /// Every point the code reaches, in the order a round meets them.
    public static let names = [
        "coordinator-after-in-flight-mark", "client-after-charge", "client-after-train", "client-after-upload",
        "coordinator-after-adapter-write", "coordinator-after-audit-append", "coordinator-after-in-flight-removal",
        "client-after-keep-global", "coordinator-recovery-after-abort-append",
    ]

    /// The point this process was started to die at (nil: none, the seam is inert).
    static let armed: String? = ProcessInfo.processInfo.environment[variable]

    /// Kills this process with SIGKILL (no handler, no flush, no cleanup: as `kill -9` from outside)
    /// when it was started with `CONCLAVE_FAULT_POINT` equal to `name`; otherwise returns at once.
    public static func reach(_ name: String) {
        precondition(names.contains(name), "unknown fault point \(name)")
        guard let armed, armed == name else { return }
        kill(getpid(), SIGKILL)
        // SIGKILL cannot be caught; it is delivered before kill(2) returns to a single-threaded caller and
        // at the latest on return to user space otherwise. Never go on past an armed point.
        while true { pause() }
    }
}
