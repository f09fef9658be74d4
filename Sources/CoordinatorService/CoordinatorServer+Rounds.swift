import Audit
import FederationProtocol
import Foundation
import SystemIO
import Wire

extension CoordinatorServer {
    // MARK: Actions

    /// Carries out the engine's actions, in order.
    func perform(_ actions: [RoundEngine.Action]) {
        // Client-level rounds whose charge could not be persisted: none of their invitations leave.
        var unpersisted: Set<UInt64> = []
        for action in actions {
            switch action {
            case let .log(message):
                log.write(message)
            case let .chargeFederation(round, accountant):
                if !persistClientLevelState(ClientLevelAccountantState(accountant), round: round) { unpersisted.insert(round) }
            case let .beginRound(round, started, cohort, clientLevel):
                events?.emit("round_started", round: round, ["cohort": .strings(cohort)])
                do {
                    try InFlightMark(round: round, started: started, cohort: cohort,
                                     clientLevel: clientLevel.map { Self.clientLevelRecord($0) }).write(paths)
                    FaultPoint.reach("coordinator-after-in-flight-mark")
                } catch {
                    log.write("round \(round): cannot mark the round in flight: \(error)")
                }
            case let .invite(client, round):
                guard !unpersisted.contains(round) else { continue }
                events?.emit("invited", round: round, ["client": .string(client)])
                let invite = engine.withLock { $0.invitation(round: round) }
                send(invite, setup: nil, to: client)
            case let .inviteSecurely(client, invite, setup):
                guard !unpersisted.contains(invite.round) else { continue }
                events?.emit("invited", round: invite.round, ["client": .string(client), "secure": .bool(true)])
                send(invite, setup: setup, to: client)
            case let .secure(client, message):
                do {
                    connections.withLock { $0[client] }?.enqueue([try message.frame()])
                } catch {
                    log.write("cannot send a secure-aggregation message to '\(client)': \(error)")
                }
            case let .dismiss(client, round, reason):
                log.write("round \(round): client '\(client)' dropped: \(reason)")
                events?.emit("dropped", round: round, ["client": .string(client), "reason": .string(reason)])
                let frame = try? Abort(round: round, code: .dropped, detail: reason).frame()
                connections.withLock { $0[client] }?.enqueue([frame].compactMap { $0 })
            case .tellResult(let client, var result):
                result.auditHead = auditHead.withLock { $0 }
                var frames = [try? result.frame().encoded()].compactMap { $0 }
                if result.committed { frames += globalAdapterFrames(round: result.round) }
                connections.withLock { $0[client] }?.enqueue(encoded: frames)
            case let .finish(outcome):
                let thread = Thread { [self] in finish(outcome) }
                thread.start()
            }
        }
    }

    /// An invitation (with the secure round's setup, if any), then the global adapter it names.
    private func send(_ invite: Invite, setup: SecureRoundSetup?, to client: String) {
        do {
            guard global.withLock({ $0.digest }) == invite.adapterSHA256 else {
                throw FederationError.round(invite.round, "the global adapter changed under the invitation")
            }
            let connection = connections.withLock { $0[client] }
            connection?.enqueue([try invite.frame()] + (try setup.map { [try $0.frame()] } ?? []))
            connection?.enqueue(encoded: globalAdapterFrames(round: invite.round))
        } catch {
            log.write("round \(invite.round): cannot invite '\(client)': \(error)")
        }
    }

    /// The global adapter's frames labelled with `round`, encoded once and shared by every client
    /// they go to (an invitation or a result to a whole cohort would otherwise encode and hold one
    /// copy of the adapter per client).
    func globalAdapterFrames(round: UInt64) -> [[UInt8]] {
        let current = global.withLock { $0 }
        let key = "\(round) \(current.digest)"
        if let cached = adapterFrames.withLock({ $0?.key == key ? $0?.frames : nil }) { return cached }
        let frames = ((try? TensorSetFrames.frames(round: round, kind: .globalAdapter, tensors: current.tensors)) ?? [])
            .compactMap { try? $0.encoded() }
        adapterFrames.withLock { $0 = (key, frames) }
        return frames
    }

    /// Signs the audit log's head as it now stands, for the round results that follow; a log that
    /// cannot be read leaves the results without a head (and says so), never with a stale one.
    func refreshAuditHead() {
        do {
            let head = try AuditLog(paths: paths).signedHead(signer: signer)
            auditHead.withLock { $0 = head }
        } catch {
            auditHead.withLock { $0 = nil }
            log.write("cannot sign the audit log's head: \(error); round results go without it")
        }
    }

    // MARK: Finishing a round

    /// Aggregates a committed round into the next global adapter, appends the round's audit record,
    /// and hands the verdict to the engine, which tells the cohort and may start the next round.
    /// An aborted round only gets its record. Without its record a round did not happen: a failed
    /// append aborts it and keeps the old adapter.
    func finish(_ outcome: RoundOutcome) {
        let current = global.withLock { $0 }
        var (verdict, next, step) = outcome.isCommitted ? commit(outcome, onto: current)
                                                        : (.aborted(reason: outcome.abortReason ?? ""), current, nil)
        let record = auditRecord(outcome, verdict: verdict, adapterSHA256: next.fileSHA256, step: step)
        do {
            try AuditLog(paths: paths).append(record, signer: signer)
            FaultPoint.reach("coordinator-after-audit-append")
        } catch {
            log.write("round \(outcome.round): cannot append the audit record: \(error); the round is not committed")
            verdict = .aborted(reason: "the audit record could not be written")
            next = current
            try? FileManager.default.removeItem(at: paths.adapter(round: outcome.round))
        }
        try? FileManager.default.removeItem(at: paths.roundInFlight)
        FaultPoint.reach("coordinator-after-in-flight-removal")
        refreshAuditHead()
        emitVerdict(outcome.round, verdict: verdict, record: record)
        if verdict.isCommitted {
            log.write(String(format: "round %llu committed: %d participants, held-out loss (DP-released) %@ → %@ ± %@, max ε %@, "
                             + "adapter %@", outcome.round, record.participants.count, format(record.evalLossBefore),
                             format(record.evalLossAfter), format(record.evalLossStandardError), format(record.maxEpsilon),
                             String(next.fileSHA256.prefix(12))))
        } else {
            log.write("round \(outcome.round) aborted: \(verdict.reason)")
        }
        // One step under the engine's lock, so a client reconnecting meanwhile hears of the adapter it can fetch.
        perform(stepWithAdmittedClients { engine in
            global.withLock { $0 = next }
            engine.setGlobalAdapter(digest: next.digest, parameterCount: next.parameterCount)
            if verdict.isCommitted, let step { engine.setClientClipNorm(step.nextClipNorm) }
            return engine.roundFinished(round: outcome.round, verdict: verdict, now: Date())
        })
    }

    /// Aggregates `outcome`'s updates (or its unmasked secure sum) onto `current` and writes the new
    /// adapter and the strategy's state; a failure aborts the round and removes what was written.
    /// - Returns: also adaptive clipping's step (client-level rounds with it), which the audit record keeps and the
    ///   engine takes once the record is written.
    private func commit(_ outcome: RoundOutcome, onto current: GlobalAdapter) -> (RoundVerdict, GlobalAdapter, AdaptiveClipStep?) {
        do {
            // Equal weights (a client's record count is private and never travels, issue 13); plain updates
            // clipped and combined by the policy's aggregator, a secure round's decoded mean as one update.
            let (updates, lines) = try RoundAggregation.updates(of: outcome, policy: configuration.rounds,
                                                                 global: current.tensors, layout: layout)
            for line in lines { log.write(line) }
            let step = try RoundAggregation.adaptiveClipStep(of: outcome, policy: configuration.rounds)
            if let step, let adaptive = configuration.rounds.adaptiveClipping {
                log.write(String(format: "round %llu: adaptive clipping: noised unclipped fraction %.4f (target %g), S %.6g → %.6g "
                                 + "(update noise z_Δ %.4f, count noise %.4f)", outcome.round, step.unclippedFraction,
                                 adaptive.targetQuantile, step.clipNorm, step.nextClipNorm, step.updateNoiseMultiplier, step.countNoise))
            }
            let tensors = try aggregator.aggregate(global: current.tensors, updates: updates)
            let directory = paths.adapter(round: outcome.round)
            try layout.write(tensors, to: directory, baseModel: baseModel)
            try aggregator.writeState(into: directory)
            let fileSHA256 = try AdapterMath.fileSHA256(directory.appendingPathComponent("adapter_model.safetensors"))
            FaultPoint.reach("coordinator-after-adapter-write")
            return (.committed, GlobalAdapter(round: outcome.round, tensors: tensors, digest: AdapterMath.digest(tensors),
                                              fileSHA256: fileSHA256), step)
        } catch {
            try? FileManager.default.removeItem(at: paths.adapter(round: outcome.round))
            return (.aborted(reason: "aggregation failed: \(error)"), current, nil)
        }
    }

    /// The round's audit record: its participants' figures only when it committed.
    private func auditRecord(_ outcome: RoundOutcome, verdict: RoundVerdict, adapterSHA256: String, step: AdaptiveClipStep?) -> AuditRecord {
        let policy = configuration.rounds
        let combiner = policy.plainCombiner(parameterCount: SecureUpdate.vectorLength(layout: layout) - 1)
        let metrics = verdict.isCommitted ? outcome.participantMetrics : []
        let figures = RoundFigures(participants: metrics)
        var record = AuditRecord(status: verdict.isCommitted ? "committed" : "aborted", round: outcome.round,
                           started: outcome.started, finished: Date(), cohort: outcome.cohort,
                           participants: metrics.map(\.client), declines: outcome.declines, dropouts: outcome.dropouts,
                           aggregation: policy.aggregation.rawValue, secureAggregation: policy.secureAggregation,
                           plan: policy.plan(round: outcome.round, clientLevel: outcome.clientLevel), clients: metrics,
                           maxEpsilon: figures.maxEpsilon,
                           evalLossBefore: figures.evalLossBefore, evalLossAfter: figures.evalLossAfter,
                           evalLossStandardError: figures.evalLossStandardError, adapterSHA256: adapterSHA256, abortReason: verdict.isCommitted ? nil : verdict.reason,
                           previousHash: "", aggregator: policy.aggregator.rawValue,
                           trimFraction: policy.aggregator == .trimmedMean ? combiner.trimFraction : nil,
                           updateNormClip: policy.secureAggregation ? nil : combiner.normClip)
        record.conditionAccuracyBefore = figures.conditionAccuracy?.before
        record.conditionAccuracyAfter = figures.conditionAccuracy?.after
        record.conditionAccuracyStandardError = figures.conditionAccuracy?.standardError
        if verdict.isCommitted, let secure = outcome.secure, policy.plan.isDistributed {
            record.distributed = distributedNoise(secure, plan: policy.plan(round: outcome.round, clientLevel: outcome.clientLevel),
                                                  expectedCohort: outcome.clientLevel?.expectedCohort)
        }
        // Charged before the sample, so recorded whether the round committed, aborted or was skipped.
        record.clientLevel = outcome.clientLevel.map { Self.clientLevelRecord($0, step: verdict.isCommitted ? step : nil) }
        return record
    }

    /// The noise a distributed round's sum carried, from the plan and the secure round (nil, and a log line,
    /// if the parameters cannot be recomputed, which the commit would already have failed on).
    private func distributedNoise(_ secure: SecureRoundResult, plan: TrainingPlan, expectedCohort: Double?) -> DistributedNoiseRecord? {
        do {
            let parameters = try SecureUpdate.distributedParameters(plan: plan, setup: secure.setup, assumeHonest: 1)
            return DistributedNoiseRecord(
                unit: plan.privacyUnit.rawValue, cohort: parameters.trust.cohort, threshold: parameters.trust.threshold,
                survivors: secure.survivors.count, fractionalBits: parameters.fractionalBits, shareSigma: parameters.shareSigma,
                plannedNoiseMultiplier: plan.noiseMultiplier,
                survivingNoiseMultiplier: parameters.survivingNoiseMultiplier(survivors: secure.survivors.count),
                wrapProbability: parameters.preview.wrapProbability, expectedBatch: plan.expectedBatch ?? expectedCohort ?? .nan)
        } catch {
            log.write("round \(secure.setup.round): cannot recompute the distributed noise for the audit record: \(error)")
            return nil
        }
    }

    /// The round's end as a monitoring event: `committed` with its figures, or `aborted` with why.
    private func emitVerdict(_ round: UInt64, verdict: RoundVerdict, record: AuditRecord) {
        guard let events else { return }
        guard verdict.isCommitted else {
            events.emit("aborted", round: round, ["reason": .string(verdict.reason)])
            return
        }
        var fields: [String: EventValue] = ["participants": .strings(record.participants),
                                            "adapter_sha256": .string(record.adapterSHA256)]
        if let value = record.maxEpsilon { fields["max_epsilon"] = .double(value) }
        if let value = record.evalLossBefore { fields["eval_loss_before"] = .double(value) }
        if let value = record.evalLossAfter { fields["eval_loss_after"] = .double(value) }
        events.emit("committed", round: round, fields)
    }

    private func format(_ value: Double?) -> String { value.map { String(format: "%.4f", $0) } ?? "-" }
}
