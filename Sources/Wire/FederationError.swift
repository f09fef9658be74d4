import Foundation

/// What went wrong in the federation, naming the file, field, peer or round.
public enum FederationError: Error, CustomStringConvertible, Equatable {
    /// A state file or directory is missing, malformed or unwritable.
    case state(path: String, String)
    /// A configuration file has a bad or missing field.
    case configuration(path: String, field: String, String)
    /// A peer broke the protocol (unexpected message, bad tensor, wrong round).
    case peer(String, String)
    /// A round cannot go on.
    case round(UInt64, String)
    /// The audit log does not verify: the record (1-based line) and why.
    case audit(record: Int, String)
    /// A client id is unknown, revoked, or already enrolled.
    case client(String, String)
    /// An adapter update does not match the global adapter's shape.
    case adapterShape(String)

    public var description: String {
        switch self {
        case let .state(path, reason): return "\(path): \(reason)"
        case let .configuration(path, field, reason): return "\(path): field '\(field)': \(reason)"
        case let .peer(peer, reason): return "peer \(peer): \(reason)"
        case let .round(round, reason): return "round \(round): \(reason)"
        case let .audit(record, reason): return "audit record \(record): \(reason)"
        case let .client(id, reason): return "client '\(id)': \(reason)"
        case let .adapterShape(reason): return "adapter shape: \(reason)"
        }
    }
}
