import FederationProtocol
import Foundation

extension CoordinatorServer {
    /// Answers `rounds start`, `status` and `clients`: one JSON request, one JSON response.
    func control(_ request: [UInt8]) -> [UInt8] {
        func reply(_ object: [String: Any]) -> [UInt8] {
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map(Array.init)
                ?? Array(#"{"error":"cannot encode the response"}"#.utf8)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(request)) as? [String: Any],
              let command = object["command"] as? String else {
            return reply(["error": "the request is not a JSON object with a 'command'"])
        }
        switch command {
        case "start":
            guard let count = object["count"] as? Int, (1...10_000).contains(count) else {
                return reply(["error": "'count' must be an integer in 1...10000"])
            }
            let (actions, first) = engine.withLock { engine -> ([RoundEngine.Action], UInt64) in
                let first = engine.firstUnrequestedRound
                return (engine.requestRounds(count, now: Date()), first)
            }
            perform(actions)
            return reply(["queued": count, "first_round": first])
        case "status":
            var status = engine.withLock { $0.status }
            let current = global.withLock { $0 }
            status["global_round"] = current.round
            status["adapter_sha256"] = current.fileSHA256
            status["adapter"] = paths.adapter(round: current.round).path
            status["name"] = settings.name
            status["port"] = Int(port)
            status["aggregation"] = configuration.rounds.aggregation.rawValue
            status["secure_aggregation"] = configuration.rounds.secureAggregation
            return reply(status)
        case "clients":
            let connected = engine.withLock { $0.connected }
            let peers = connections.withLock { table in table.mapValues { $0.tls.peerAddress } }
            let registry = (try? ClientRegistry(paths: paths))
            let records = registry?.jsonRecords() ?? []
            let rows: [[String: Any]] = records.map { record in
                var row = record
                if let id = record["id"] as? String {
                    row["connected"] = connected[id] != nil
                    if let since = connected[id] { row["connected_since"] = since.timeIntervalSince1970 }
                    if let address = peers[id] { row["address"] = address }
                }
                return row
            }
            return reply(["clients": rows])
        case "stop":
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { [self] in stop() }
            return reply(["stopping": true])
        default:
            return reply(["error": "unknown command '\(command)'"])
        }
    }
}
