import CommandLineParsing
import Foundation
import SecureAggregation
import SecureCrypto

import CommandLineParsing
import FederationProtocol
import SystemIO
import Foundation
import SecureAggregation
import SecureCrypto
import Wire

// Secure-aggregation benchmark: one mask stream's throughput (ChaCha20 keystream added into a vector,
// parameters per second on one core; median and best of several runs), then whole rounds of the
// protocol in memory (no network) for n clients of d parameters plus the weight word, with a
// fraction dropping after the share stage: each client's time (advertise, share, mask, unmask;
// median), the coordinator's unmasking time and its total time, and the bytes each client sends,
// measured from the encoded wire frames of its four messages. Never run by the tests.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-secagg [--parameters D] [--clients N,...] [--dropout F,...] [--tolerance F|default]
                                 [--failure-probability P] [--stream-runs R] [--json]
      --parameters D            parameters per client update (default 1000000); the masked vector has D + 1
                                words, the last for the update's weight, as in a federated round
      --clients N,...           cohort sizes (default 100)
      --dropout F,...           fractions dropping after the share stage (default 0,0.1,0.3)
      --tolerance F|default     the dropout rate the graph and threshold are chosen to survive
                                (DropoutTolerance; default 0.3); "default" takes the default degree and
                                the two-thirds threshold; a cohort whose policy withstands too few
                                colluders (CollusionResistance) is reported as refused
      --failure-probability P   the probability of aborting allowed at that rate (default 1e-4)
      --stream-runs R           timed runs of the single mask stream (default 15)
      --json                    print {"mask_stream": {"median", "best", "runs"}, "rounds": [{"clients", "dropped",
                                "parameters", "graph", "threshold", "failure_bound", "client_seconds_median",
                                "coordinator_unmask_seconds", "coordinator_total_seconds", "bytes_sent": {...}}]}
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

/// Bytes of a message's encoded frame (header and payload), as it goes on the wire.
func frameBytes<Message: WireMessage>(_ message: Message) throws -> Int { try message.frame().encoded().count }

do {
    let d = try arguments.int("--parameters", in: 1...(1 << 26)) ?? 1_000_000
    let cohorts = try (arguments.option("--clients") ?? "100").split(separator: ",").map { text -> Int in
        guard let n = Int(text), (2...1000).contains(n) else { throw UsageError("--clients: '\(text)' is not 2...1000") }
        return n
    }
    let dropouts = try (arguments.option("--dropout") ?? "0,0.1,0.3").split(separator: ",").map { text -> Double in
        guard let f = Double(text), (0..<1).contains(f) else { throw UsageError("--dropout: '\(text)' is not in [0, 1)") }
        return f
    }
    let toleranceText = try arguments.option("--tolerance") ?? "0.3"
    let failureText = try arguments.option("--failure-probability") ?? "1e-4"
    let tolerance: DropoutTolerance?
    if toleranceText == "default" {
        tolerance = nil
    } else {
        guard let rate = Double(toleranceText), let failure = Double(failureText) else {
            throw UsageError("--tolerance '\(toleranceText)' / --failure-probability '\(failureText)' are not numbers")
        }
        tolerance = try DropoutTolerance(dropoutRate: rate, failureProbability: failure)
    }
    let streamRuns = try arguments.int("--stream-runs", in: 1...1000) ?? 15
    let json = arguments.flag("--json")
    try arguments.finish()
    func say(_ line: String) { if !json { print(line) } else { FileHandle.standardError.write(Data((line + "\n").utf8)) } }

    // One mask stream added into a d-word vector, 32 KiB of keystream at a time (as `Masking` does).
    let stream = try MaskStream(seed: SecretBytes(randomCount: MaskStream.seedByteCount))
    var vector = [UInt32](repeating: 7, count: d)
    var scratch = [UInt32](repeating: 0, count: 8192)
    var streamTimes = [Double]()
    for _ in 0..<streamRuns {
        streamTimes.append(seconds {
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
    let streamMedian = Double(d) / median(streamTimes), streamBest = Double(d) / (streamTimes.min() ?? 1)
    say(String(format: "mask stream: median %.0f M parameters/s, best %.0f M/s (one core, %d parameters, %d runs)",
               streamMedian / 1e6, streamBest / 1e6, d, streamRuns))

    var rounds: [[String: Any]] = []
    let words = d + 1  // the parameters, then the weight word
    let rawBytes = 4 * d  // the update as float32
    for n in cohorts {
        // The graph and threshold for this cohort, fixed before any dropout is drawn.
        let graph: NeighbourGraph, threshold: Int?
        if let tolerance {
            do {
                (graph, threshold) = try tolerance.graphAndThreshold(cohortSize: n)
            } catch let error as SecureAggregationError {
                // A tolerance that leaves too little collusion resistance is refused, as a plan would be.
                say("n = \(n): \(tolerance) is refused: \(error)")
                rounds.append(["clients": n, "refused": "\(error)"])
                continue
            }
        } else {
            let degree = NeighbourGraph.defaultDegree(cohortSize: n)
            graph = degree >= n - 1 ? .complete : .harary(degree: degree)
            threshold = nil
        }
        for fraction in dropouts {
            let identities = (1...n).map { _ in SigningKeyPair() }
            let participants = identities.enumerated().map { Participant(id: ParticipantID($0.offset + 1), signingKey: $0.element.publicKey) }
            let hash = Hash.blake2b(Array("benchmark adapter".utf8))
            let session = try SecureAggregationSession(roundID: 1, plan: Array("benchmark".utf8), globalAdapterHash: hash,
                                                       participants: participants, vectorLength: words, graph: graph,
                                                       threshold: threshold)
            let bound = tolerance?.failureBound(cohortSize: n, graph: graph, threshold: session.threshold)
            let policyText = tolerance.map { "tolerance \($0.dropoutRate), bound \(String(format: "%.1e", bound ?? 1))" } ?? "default"
            var clients = try participants.map {
                try SecureAggregationClient(session: session, id: $0.id, identity: identities[Int($0.id) - 1], localAdapterHash: hash)
            }
            var server = SecureAggregationServer(session: session)
            var clientTime = [Double](repeating: 0, count: n)
            var serverTime = 0.0
            // Bytes of each client's frames: advertise, shares, masked input, consistency signature, unmask response.
            var sent = [[Int]](repeating: [0, 0, 0, 0, 0], count: n)
            // The consistency check's own cost: client signing and verifying, coordinator collecting.
            var consistencyClient = [Double](repeating: 0, count: n)
            var consistencyServer = 0.0
            // Dropped after sharing: their pairwise masks must be recovered (the costly case).
            let droppedCount = Int((Double(n) * fraction).rounded())
            let dropped = Set((0..<n).shuffled().prefix(droppedCount))

            var broadcasts: [ParticipantID: AdvertisementBroadcast] = [:]
            for i in 0..<n {
                var advertisement: KeyAdvertisement?
                clientTime[i] += try seconds { advertisement = try clients[i].advertiseKeys() }
                sent[i][0] = try frameBytes(SecureAdvertise(round: 1, advertisement: advertisement!))
                serverTime += try seconds { try server.receive(advertisement!) }
            }
            serverTime += try seconds { for broadcast in try server.finishAdvertising() { broadcasts[broadcast.recipient] = broadcast } }
            for i in 0..<n {
                var message: ShareKeysMessage?
                clientTime[i] += try seconds { message = try clients[i].shareKeys(broadcasts[ParticipantID(i + 1)]!) }
                sent[i][1] = try frameBytes(SecureShares(round: 1, message: message!))
                serverTime += try seconds { try server.receive(message!) }
            }
            var bundles: [ParticipantID: ShareBundle] = [:]
            serverTime += try seconds { for bundle in try server.finishSharing() { bundles[bundle.recipient] = bundle } }
            let input = (0..<words).map { UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) }
            for i in 0..<n where !dropped.contains(i) {
                var masked: MaskedInput?
                clientTime[i] += try seconds { masked = try clients[i].maskInput(bundles[ParticipantID(i + 1)]!, input: input) }
                sent[i][2] = try frameBytes(SecureMaskedInput(round: 1, input: masked!))
                serverTime += try seconds { try server.receive(masked!) }
            }
            var requests: [UnmaskRequest] = []
            do {
                var checks: [ConsistencyRequest] = []
                serverTime += try seconds { checks = try server.finishMaskedInput() }
                for check in checks {
                    let i = Int(check.recipient) - 1
                    var signature: ConsistencySignature?
                    let signing = try seconds { signature = try clients[i].signSurvivors(check) }
                    clientTime[i] += signing
                    consistencyClient[i] += signing
                    sent[i][3] = try frameBytes(SecureConsistencySignature(round: 1, signature: signature!))
                    let receiving = try seconds { try server.receive(signature!) }
                    serverTime += receiving
                    consistencyServer += receiving
                }
                let closing = try seconds { requests = try server.finishConsistencyCheck() }
                serverTime += closing
                consistencyServer += closing
            } catch let error as SecureAggregationError {
                // Random dropouts can leave a sparse neighbourhood below t: the round aborts, as it must.
                say("n = \(n), d = \(d), \(droppedCount) dropped (\(graph), t = \(session.threshold), \(policyText)): \(error)")
                rounds.append(["clients": n, "dropped": droppedCount, "parameters": d, "graph": "\(graph)",
                               "threshold": session.threshold, "aborted": "\(error)"])
                continue
            }
            for request in requests {
                let i = Int(request.recipient) - 1
                var response: UnmaskResponse?
                // Unmasking verifies the forwarded consistency signatures first: timed apart as well.
                let unmasking = try seconds { response = try clients[i].unmask(request) }
                clientTime[i] += unmasking
                consistencyClient[i] += unmasking
                sent[i][4] = try frameBytes(SecureUnmaskResponse(round: 1, response: response!))
                serverTime += try seconds { try server.receive(response!) }
            }
            var result: AggregationResult?
            let unmaskTime = try seconds { result = try server.finishUnmasking() }
            serverTime += unmaskTime
            // Correctness: every survivor sent the same input, so the sum is survivors × input.
            let survivors = UInt32(n - droppedCount)
            guard let result, result.sum.count == words, result.sum[words - 1] == survivors &* input[words - 1],
                  result.sum[0] == survivors &* input[0] else {
                throw UsageError("n = \(n): the unmasked sum is wrong")
            }
            let survivorIndices = (0..<n).filter { !dropped.contains($0) }
            let survivorTimes = survivorIndices.map { clientTime[$0] }
            // Bytes of the survivor sending the most (the masked input is the same size for all).
            let heaviest = survivorIndices.max { sent[$0].reduce(0, +) < sent[$1].reduce(0, +) } ?? 0
            let bytes = sent[heaviest], total = bytes.reduce(0, +)
            say(String(format: "n = %d, d = %d, %d dropped (%@, t = %d, %@): client %.3f s (median), coordinator unmasking %.3f s, "
                           + "coordinator total %.3f s", n, d, droppedCount, "\(graph)", session.threshold, policyText,
                       median(survivorTimes), unmaskTime, serverTime))
            say(String(format: "  consistency check: client signing + unmask (with signature checks) %.4f s (median), coordinator %.4f s",
                       median(survivorIndices.map { consistencyClient[$0] }), consistencyServer))
            say(String(format: "  bytes sent by one client: advertise %d, shares %d, masked input %d, consistency %d, unmask %d; total %d = %.4f × "
                           + "the raw float32 update (%d); masked input alone %.6f ×", bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], total,
                       Double(total) / Double(rawBytes), rawBytes, Double(bytes[2]) / Double(rawBytes)))
            var row: [String: Any] = [
                "clients": n, "dropped": droppedCount, "parameters": d, "graph": "\(graph)", "threshold": session.threshold,
                "client_seconds_median": median(survivorTimes), "coordinator_unmask_seconds": unmaskTime,
                "coordinator_total_seconds": serverTime,
                "consistency_client_seconds_median": median(survivorIndices.map { consistencyClient[$0] }),
                "consistency_coordinator_seconds": consistencyServer,
                "bytes_sent": ["advertise": bytes[0], "shares": bytes[1], "masked_input": bytes[2], "consistency": bytes[3], "unmask": bytes[4],
                               "total": total, "raw_float32": rawBytes,
                               "ratio_total": Double(total) / Double(rawBytes), "ratio_masked_input": Double(bytes[2]) / Double(rawBytes)],
            ]
            if let tolerance, let bound {
                row["dropout_tolerance"] = tolerance.dropoutRate
                row["failure_bound"] = bound
            }
            rounds.append(row)
        }
    }
    if json {
        let object: [String: Any] = ["mask_stream": ["median": streamMedian, "best": streamBest, "runs": streamRuns], "rounds": rounds]
        print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    }
} catch {
    FileHandle.standardError.write(Data("conclave-bench-secagg: \(error)\n".utf8))
    exit(1)
}
