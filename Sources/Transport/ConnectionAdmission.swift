import Foundation

/// Which connections a server holds before they have logged in (TLS handshake and hello done), as a
/// pure state machine the accept loop consults: connections not logged in are bounded in total and
/// per source address, and each identity (certificate common name) holds a bounded number at once.
/// Before login a peer costs a thread and a socket but has proved nothing, so the bounds are small;
/// when the total is reached the oldest waiting connection makes room, so a flood of slow peers cannot
/// keep a real client out (it logs in within milliseconds; a trickler is evicted within its deadline).
public struct ConnectionAdmission: Sendable {
    /// The bounds.
    public struct Limits: Sendable, Equatable {
        /// Connections not logged in, all addresses together.
        public var waiting: Int
        /// Connections not logged in from one source address.
        public var waitingPerAddress: Int
        /// Connections holding one identity's certificate at once (its live one and a replacement).
        public var perIdentity: Int
        /// Seconds from accept to the end of the hello, the TLS handshake included.
        public var loginSeconds: TimeInterval
        /// Largest hello payload, in bytes (a real one is under 400).
        public var helloBytes: Int

        public init(waiting: Int = 256, waitingPerAddress: Int = 64, perIdentity: Int = 2, loginSeconds: TimeInterval = 10,
                    helloBytes: Int = 4096) {
            precondition(waiting >= 1 && waitingPerAddress >= 1 && perIdentity >= 1 && loginSeconds > 0 && helloBytes >= 1,
                         "connection limits must be positive")
            self.waiting = waiting
            self.waitingPerAddress = waitingPerAddress
            self.perIdentity = perIdentity
            self.loginSeconds = loginSeconds
            self.helloBytes = helloBytes
        }
    }

    /// What to do with a connection just accepted.
    public enum Arrival: Equatable, Sendable {
        /// Serve it under `ticket`.
        case admit(ticket: UInt64)
        /// Serve it under `ticket`, and close the connection holding `evicted` (the oldest waiting).
        case admitEvicting(ticket: UInt64, evicted: UInt64)
        /// Close it at once: its address already holds `waitingPerAddress` connections.
        case refuse(reason: String)
    }

    private struct Entry {
        var address: String
        var identity: String?
        var loggedIn = false
    }

    public let limits: Limits
    private var entries: [UInt64: Entry] = [:]
    /// Tickets not logged in, oldest first.
    private var queue: [UInt64] = []
    private var nextTicket: UInt64 = 1

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Connections admitted and not yet logged in.
    public var waitingCount: Int { queue.count }

    /// A connection from `peerAddress` ("host:port" or "[v6]:port") was accepted.
    public mutating func arrive(peerAddress: String) -> Arrival {
        let address = Self.host(of: peerAddress)
        let fromAddress = queue.reduce(0) { $0 + (entries[$1]?.address == address ? 1 : 0) }
        guard fromAddress < limits.waitingPerAddress else {
            return .refuse(reason: "\(address) already has \(fromAddress) connections that have not logged in "
                           + "(limit \(limits.waitingPerAddress))")
        }
        let ticket = nextTicket
        nextTicket += 1
        var evicted: UInt64?
        if queue.count >= limits.waiting {
            evicted = queue.removeFirst()
            entries[evicted!] = nil
        }
        entries[ticket] = Entry(address: address)
        queue.append(ticket)
        return evicted.map { .admitEvicting(ticket: ticket, evicted: $0) } ?? .admit(ticket: ticket)
    }

    /// The handshake of `ticket` named `identity`. False (refuse the connection) when that identity
    /// already holds `perIdentity` connections, or the ticket was evicted meanwhile.
    public mutating func identified(_ ticket: UInt64, as identity: String) -> Bool {
        guard entries[ticket] != nil else { return false }
        let holding = entries.values.reduce(0) { $0 + ($1.identity == identity ? 1 : 0) }
        guard holding < limits.perIdentity else { return false }
        entries[ticket]?.identity = identity
        return true
    }

    /// `ticket`'s hello was accepted: it no longer counts against the waiting bounds (nor can it be
    /// evicted). False when it had been evicted meanwhile.
    public mutating func loggedIn(_ ticket: UInt64) -> Bool {
        guard entries[ticket] != nil else { return false }
        entries[ticket]?.loggedIn = true
        queue.removeAll { $0 == ticket }
        return true
    }

    /// `ticket`'s connection closed (a no-op for one evicted earlier).
    public mutating func leave(_ ticket: UInt64) {
        entries[ticket] = nil
        queue.removeAll { $0 == ticket }
    }

    /// The host part of "host:port" or "[v6]:port".
    static func host(of peerAddress: String) -> String {
        guard let colon = peerAddress.lastIndex(of: ":") else { return peerAddress }
        return String(peerAddress[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    }
}
