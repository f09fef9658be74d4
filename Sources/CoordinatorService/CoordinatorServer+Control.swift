import FederationProtocol
import Foundation

extension CoordinatorServer {
    /// Answers `rounds start`, `status`, `clients` and `stop`: one JSON request, one JSON response.
    func control(_ request: [UInt8]) -> [UInt8] {
        switch ControlRequest.read(request) {
        case let .failure(refusal):
            return ControlResponse.refused(refusal).bytes
        case let .success(.start(count)):
            let (closings, (actions, first)) = withAdmittedClients { engine -> ([RoundEngine.Action], UInt64) in
                let first = engine.firstUnrequestedRound
                return (engine.requestRounds(count, now: Date()), first)
            }
            perform(closings + actions)
            return ControlResponse.queued(RoundsQueued(queued: count, firstRound: first)).bytes
        case .success(.status):
            let rounds = engine.withLock { $0.status }
            let current = global.withLock { $0 }
            return ControlResponse.status(CoordinatorStatus(
                rounds: rounds, globalRound: current.round, adapter: paths.adapter(round: current.round).path,
                adapterSHA256: current.fileSHA256, name: settings.name, port: Int(port),
                aggregation: configuration.rounds.aggregation, secureAggregation: configuration.rounds.secureAggregation)).bytes
        case .success(.clients):
            let connected = engine.withLock { $0.connected }
            let peers = connections.withLock { table in table.mapValues { $0.tls.peerAddress } }
            let listing = ((try? ClientRegistry(paths: paths))?.listing() ?? []).map { client in
                var client = client
                client.connected = connected[client.id] != nil
                client.connectedSince = connected[client.id]
                client.address = peers[client.id]
                return client
            }
            return ControlResponse.clients(ClientsListing(clients: listing)).bytes
        case .success(.stop):
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { [self] in stop() }
            return ControlResponse.stopping(Stopping()).bytes
        }
    }
}
