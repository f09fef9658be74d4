import CommandLineParsing
import Foundation
import SecureAggregation
import SecureCrypto

// Secure-aggregation benchmark: one mask stream's throughput (ChaCha20 keystream added into a vector,
// parameters per second on one core), then whole rounds of the protocol in memory (no network) for
// n clients of d parameters with a fraction dropping after the share stage: each client's time
// (advertise, share, mask, unmask; median) and the coordinator's unmasking time, which grows with
// the survivors' self masks and the dropped clients' pairwise masks. Never run by the tests.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-secagg [--parameters D] [--clients N,...] [--dropout F,...] [--json]
      --parameters D   words per client update (default 1000000)
      --clients N,...  cohort sizes (default 10,50)
      --dropout F,...  fractions dropping after the share stage (default 0,0.1,0.3)
      --json           print {"mask_stream_parameters_per_second", "rounds": [{"clients", "dropped",
                       "parameters", "client_seconds_median", "coordinator_unmask_seconds", "graph",
                       "threshold"}]}
    """)
    exit(0)
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

do {
    let d = try arguments.int("--parameters", in: 1...(1 << 26)) ?? 1_000_000
    let cohorts = try (arguments.option("--clients") ?? "10,50").split(separator: ",").map { text -> Int in
        guard let n = Int(text), (2...1000).contains(n) else { throw UsageError("--clients: '\(text)' is not 2...1000") }
        return n
    }
    let dropouts = try (arguments.option("--dropout") ?? "0,0.1,0.3").split(separator: ",").map { text -> Double in
        guard let f = Double(text), (0..<1).contains(f) else { throw UsageError("--dropout: '\(text)' is not in [0, 1)") }
        return f
    }
    let json = arguments.flag("--json")
    try arguments.finish()
    func say(_ line: String) { if !json { print(line) } else { FileHandle.standardError.write(Data((line + "\n").utf8)) } }

    // One mask stream added into a d-word vector, best of 20 (the machine is shared).
    let stream = try MaskStream(seed: SecretBytes(randomCount: MaskStream.seedByteCount))
    var vector = [UInt32](repeating: 7, count: d)
    var scratch = [UInt32](repeating: 0, count: 8192)
    var best = Double.infinity
    for _ in 0..<20 {
        best = min(best, seconds {
            vector.withUnsafeMutableBufferPointer { target in
                scratch.withUnsafeMutableBufferPointer { chunk in
                    var start = 0
                    while start < d {
                        let length = min(chunk.count, d - start)
                        let part = UnsafeMutableBufferPointer(rebasing: chunk[0..<length])
                        stream.fill(part, startingAtWord: start)
                        for i in 0..<length { target[start + i] &+= part[i] }
                        start += length
                    }
                }
            }
        })
    }
    let throughput = Double(d) / best
    say(String(format: "mask stream: %.0f M parameters/s (one core, %d parameters in %.4f s)", throughput / 1e6, d, best))

    var rounds: [[String: Any]] = []
    for n in cohorts {
        for fraction in dropouts {
            let identities = (1...n).map { _ in SigningKeyPair() }
            let participants = identities.enumerated().map { Participant(id: ParticipantID($0.offset + 1), signingKey: $0.element.publicKey) }
            let degree = NeighbourGraph.defaultDegree(cohortSize: n)
            let graph: NeighbourGraph = degree >= n - 1 ? .complete : .harary(degree: degree)
            let hash = Hash.blake2b(Array("benchmark adapter".utf8))
            let session = try SecureAggregationSession(roundID: 1, plan: Array("benchmark".utf8), globalAdapterHash: hash,
                                                       participants: participants, vectorLength: d, graph: graph)
            var clients = try participants.map {
                try SecureAggregationClient(session: session, id: $0.id, identity: identities[Int($0.id) - 1], localAdapterHash: hash)
            }
            var server = SecureAggregationServer(session: session)
            var clientTime = [Double](repeating: 0, count: n)
            // Dropped after sharing: their pairwise masks must be recovered (the costly case).
            let droppedCount = Int((Double(n) * fraction).rounded())
            let dropped = Set((0..<n).shuffled().prefix(droppedCount))

            var broadcasts: [ParticipantID: AdvertisementBroadcast] = [:]
            for i in 0..<n {
                var advertisement: KeyAdvertisement?
                clientTime[i] += try seconds { advertisement = try clients[i].advertiseKeys() }
                try server.receive(advertisement!)
            }
            for broadcast in try server.finishAdvertising() { broadcasts[broadcast.recipient] = broadcast }
            for i in 0..<n {
                var message: ShareKeysMessage?
                clientTime[i] += try seconds { message = try clients[i].shareKeys(broadcasts[ParticipantID(i + 1)]!) }
                try server.receive(message!)
            }
            var bundles: [ParticipantID: ShareBundle] = [:]
            for bundle in try server.finishSharing() { bundles[bundle.recipient] = bundle }
            let input = (0..<d).map { UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) }
            for i in 0..<n where !dropped.contains(i) {
                var masked: MaskedInput?
                clientTime[i] += try seconds { masked = try clients[i].maskInput(bundles[ParticipantID(i + 1)]!, input: input) }
                try server.receive(masked!)
            }
            let requests: [UnmaskRequest]
            do {
                requests = try server.finishMaskedInput()
            } catch let error as SecureAggregationError {
                // Random dropouts can leave a sparse neighbourhood below t: the round aborts, as it must.
                say("n = \(n), d = \(d), \(droppedCount) dropped (\(graph), t = \(session.threshold)): \(error)")
                rounds.append(["clients": n, "dropped": droppedCount, "parameters": d, "graph": "\(graph)",
                               "threshold": session.threshold, "aborted": "\(error)"])
                continue
            }
            for request in requests {
                let i = Int(request.recipient) - 1
                var response: UnmaskResponse?
                clientTime[i] += try seconds { response = try clients[i].unmask(request) }
                try server.receive(response!)
            }
            var result: AggregationResult?
            let unmaskTime = try seconds { result = try server.finishUnmasking() }
            // Correctness: every survivor sent the same input, so the sum is survivors × input.
            let survivors = UInt32(n - droppedCount)
            guard let result, result.sum.count == d, result.sum[d - 1] == survivors &* input[d - 1], result.sum[0] == survivors &* input[0] else {
                throw UsageError("n = \(n): the unmasked sum is wrong")
            }
            let survivorTimes = (0..<n).filter { !dropped.contains($0) }.map { clientTime[$0] }
            say(String(format: "n = %d, d = %d, %d dropped (%@, t = %d): client %.3f s (median), coordinator unmasking %.3f s",
                       n, d, droppedCount, "\(graph)", session.threshold, median(survivorTimes), unmaskTime))
            rounds.append(["clients": n, "dropped": droppedCount, "parameters": d, "graph": "\(graph)",
                           "threshold": session.threshold, "client_seconds_median": median(survivorTimes),
                           "coordinator_unmask_seconds": unmaskTime])
        }
    }
    if json {
        let object: [String: Any] = ["mask_stream_parameters_per_second": throughput, "rounds": rounds]
        print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    }
} catch {
    FileHandle.standardError.write(Data("conclave-bench-secagg: \(error)\n".utf8))
    exit(1)
}
