import Foundation
import Kernels
import SecureCrypto
import Transport

/// The checks `conclave-coordinator doctor` and `conclave-client doctor` make on a machine: the CPU's
/// kernel tier, the model file's checksum, a TLS identity (validity, expiry, key, CA, clock) and the
/// coordinator's port. Each returns findings with what to fix; none changes anything.
public enum Doctor {
    /// Certificates expiring within this many days are a WARN.
    public static let expiryWarningDays = 30

    /// Models whose published SHA-256 is known, by file name (SmolLM2's: Tests/Fixtures/smollm2/source.json, the Makefile).
    public static let knownModelChecksums = [
        "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ]

    /// Which kernels `KernelBackend.selected` runs here.
    public static func kernelTier() -> HealthCheck {
        let forced = ProcessInfo.processInfo.environment["CONCLAVE_KERNELS"].map { " (CONCLAVE_KERNELS=\($0))" } ?? ""
        switch KernelBackend.selected {
        case .avx512vnni:
            return HealthCheck("cpu kernels", .ok, "avx512vnni: AVX-512 VNNI int8 products and AVX2 kernels\(forced)")
        case .avx2:
            return HealthCheck("cpu kernels", .ok, "avx2: AVX2, FMA and F16C kernels\(forced)")
        case .neondot:
            return HealthCheck("cpu kernels", .ok, "neondot: NEON kernels, sdot int8 products\(forced)")
        case .neon:
            return HealthCheck("cpu kernels", .ok, "neon: NEON kernels, int8 products without the dot-product extension\(forced)")
        case .generic:
            let fix = forced.isEmpty ? "this CPU has neither AVX2 nor NEON; expect inference and training several times slower than on an x86-64 CPU from 2015 on"
                : "unset CONCLAVE_KERNELS to use this CPU's fastest kernels"
            return HealthCheck("cpu kernels", .warn, "generic: portable Swift kernels\(forced); \(fix)")
        }
    }

    /// The model's SHA-256 (of a GGUF file, or of each safetensors file in an HF directory), compared
    /// with the published one where it is known.
    public static func model(path: String) -> HealthCheck {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return HealthCheck("model", .fail, "\(path) does not exist; give the configuration's \"model\" a GGUF file or "
                               + "an HF directory (for SmolLM2: make model)")
        }
        do {
            guard isDirectory.boolValue else {
                let digest = try sha256(of: url)
                guard let known = knownModelChecksums[url.lastPathComponent] else {
                    return HealthCheck("model", .ok, "\(path): sha256 \(digest) (no published checksum known for this file name)")
                }
                guard known == digest else {
                    return HealthCheck("model", .fail, "\(path): sha256 \(digest), but \(url.lastPathComponent) is published as "
                                       + "\(known): the file is damaged or another file; download it again (make model)")
                }
                return HealthCheck("model", .ok, "\(path): sha256 \(digest) matches the published checksum")
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".safetensors") }.sorted()
            guard !files.isEmpty else {
                return HealthCheck("model", .fail, "\(path) is a directory without .safetensors weights; give an HF model "
                                   + "directory (config.json, model.safetensors, tokenizer.json) or a GGUF file")
            }
            let digests = try files.map { "\($0) sha256 \(try sha256(of: url.appendingPathComponent($0)))" }
            return HealthCheck("model", .ok, "\(path): \(digests.joined(separator: "; ")) (no published checksum to compare)")
        } catch {
            return HealthCheck("model", .fail, "\(path): cannot read it (\(error)); check its permissions")
        }
    }

    private static func sha256(of url: URL) throws -> String {
        let data = try Data(contentsOf: url, options: .alwaysMapped)
        return data.withUnsafeBytes { Hash.sha256($0) }.map { String(format: "%02x", $0) }.joined()
    }

    /// A certificate's validity: readable, started (the clock against its notBefore), and days left
    /// before its notAfter (WARN under `expiryWarningDays`, FAIL when past). `label` names it, `renew`
    /// says how to get a new one.
    public static func certificate(_ label: String, path: String, renew: String, now: Date = Date()) -> [HealthCheck] {
        let validity: (notBefore: Date, notAfter: Date)
        do {
            validity = try IdentityChecks.validity(certificatePEM: try PEMFile.readCertificate(at: path), what: path)
        } catch {
            return [HealthCheck(label, .fail, "\(path): \(error); \(renew)")]
        }
        let stamp = ISO8601DateFormatter()
        let ahead = validity.notBefore.timeIntervalSince(now)
        let clock = ahead > 0
            ? HealthCheck("clock", .fail, "this machine's clock (\(stamp.string(from: now))) is \(duration(ahead)) before \(path)'s "
                          + "notBefore (\(stamp.string(from: validity.notBefore))): TLS peers refuse it as not yet valid; set the "
                          + "clock right (NTP: timedatectl set-ntp true)")
            : HealthCheck("clock", .ok, "\(stamp.string(from: now)), \(duration(-ahead)) after \(path)'s notBefore")
        let daysLeft = Int((validity.notAfter.timeIntervalSince(now) / 86_400).rounded(.down))
        let expiry: HealthCheck
        if validity.notAfter <= now {
            expiry = HealthCheck(label, .fail, "\(path) expired on \(stamp.string(from: validity.notAfter)); \(renew)")
        } else if daysLeft < expiryWarningDays {
            expiry = HealthCheck(label, .warn, "\(path) expires in \(daysLeft) days (\(stamp.string(from: validity.notAfter))); \(renew)")
        } else {
            expiry = HealthCheck(label, .ok, "\(path) valid until \(stamp.string(from: validity.notAfter)) (\(daysLeft) days left)")
        }
        return [expiry, clock]
    }

    /// The key is the certificate's, and the certificate is issued by the CA.
    public static func identity(_ label: String, keyPath: String, certificatePath: String, caPath: String, fix: String)
        -> HealthCheck
    {
        do {
            let certificate = try PEMFile.readCertificate(at: certificatePath)
            let ca = try PEMFile.readCertificate(at: caPath)
            guard try IdentityChecks.keyMatches(certificatePEM: certificate, keyPEM: try PEMFile.readPrivateKey(at: keyPath)) else {
                return HealthCheck(label, .fail, "\(keyPath) is not the key of \(certificatePath): \(fix)")
            }
            guard try IdentityChecks.isIssued(certificatePEM: certificate, byAnyOf: ca) else {
                let issuer = try IdentityChecks.names(certificatePEM: certificate, what: certificatePath).issuer
                let caName = try IdentityChecks.names(certificatePEM: ca, what: caPath).subject
                return HealthCheck(label, .fail, "\(certificatePath) is issued by '\(issuer)', but \(caPath) is '\(caName)': \(fix)")
            }
            let subject = try IdentityChecks.names(certificatePEM: certificate, what: certificatePath).subject
            return HealthCheck(label, .ok, "\(keyPath) matches \(certificatePath) ('\(subject)'), issued by \(caPath)")
        } catch {
            return HealthCheck(label, .fail, "\(error); \(fix)")
        }
    }

    /// The coordinator's port can be listened on here.
    public static func portBindable(host: String, port: UInt16) -> HealthCheck {
        do {
            try PortProbe.listen(host: host, port: port)
            return HealthCheck("port", .ok, "\(host):\(port) can be listened on")
        } catch {
            return HealthCheck("port", .fail, "cannot listen on \(host):\(port) (\(error)): if 'serve' already runs there, "
                               + "that is expected (see 'status'); else free the port, or set \"listen\" in the configuration "
                               + "to an address of this machine")
        }
    }

    /// The coordinator's port answers a TCP connection from here.
    public static func portReachable(host: String, port: UInt16, timeout: TimeInterval = 5) -> HealthCheck {
        do {
            try PortProbe.connect(host: host, port: port, timeout: timeout)
            return HealthCheck("coordinator", .ok, "\(host):\(port) accepts TCP connections")
        } catch {
            return HealthCheck("coordinator", .fail, "cannot reach \(host):\(port) (\(error)): check that 'serve' runs there, "
                               + "the address and port, and that no firewall blocks it")
        }
    }

    static func duration(_ seconds: TimeInterval) -> String {
        let value = abs(seconds).rounded()
        if value < 120 { return "\(Int(value)) s" }
        if value < 7_200 { return "\(Int((value / 60).rounded())) min" }
        if value < 172_800 { return "\(Int((value / 3_600).rounded())) h" }
        return "\(Int((value / 86_400).rounded())) days"
    }
}
