import Foundation
import SecureCrypto
import SystemIO
import Wire

/// The coordinator's settings (`coordinator.json`): its name, where clients reach it, and the serial
/// number the next certificate gets.
public struct CoordinatorSettings: Codable, Sendable, Equatable {
    /// The federation's name (the CA's common name).
    public var name: String
    /// The DNS name or IP address clients connect to (in the server certificate).
    public var host: String
    /// The TCP port `serve` listens on.
    public var port: Int
    /// The serial number of the next certificate signed (the CA is 1, the server certificate 2).
    public var nextSerial: UInt64
    /// When `init` created the federation.
    public var created: Date

    /// The port used when `init` is given none.
    public static let defaultPort = 7443
    /// Largest settings file read.
    public static let maximumFileBytes = 64 << 10

    public init(name: String, host: String, port: Int = CoordinatorSettings.defaultPort, nextSerial: UInt64,
                created: Date = Date()) {
        self.name = name
        self.host = host
        self.port = port
        self.nextSerial = nextSerial
        self.created = StateFile.wholeSeconds(created)
    }

    /// Reads and checks the settings file.
    /// - Throws: `FederationError.state` for a missing, oversized or unparsable file;
    ///   `.configuration` naming the field for a value out of range.
    public static func load(from file: URL) throws -> CoordinatorSettings {
        guard let (data, _) = try StateFile.read(file, maximumBytes: maximumFileBytes) else {
            throw FederationError.state(path: file.path,
                                        "missing: not an initialised coordinator state directory (run 'conclave-coordinator init')")
        }
        let settings = try StateFile.decode(CoordinatorSettings.self, from: data, path: file.path)
        try settings.validate(path: file.path)
        return settings
    }

    /// Reads `coordinator.json` in a coordinator's state directory.
    public static func load(paths: CoordinatorPaths) throws -> CoordinatorSettings {
        try load(from: paths.settings)
    }

    /// Writes the settings atomically.
    public func save(to file: URL) throws {
        try validate(path: file.path)
        try StateFile.write(self, to: file)
    }

    /// Checks each field's range.
    /// - Throws: `FederationError.configuration` naming the file and the field.
    public func validate(path: String) throws {
        guard !name.isEmpty, name.utf8.count <= 64,
              !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw FederationError.configuration(path: path, field: "name",
                                                "must be 1 to 64 bytes without control characters")
        }
        guard !host.isEmpty, host.utf8.count <= 253,
              host.unicodeScalars.allSatisfy({ $0.isASCII && $0.properties.generalCategory != .control && $0 != " " })
        else {
            throw FederationError.configuration(path: path, field: "host",
                                                "'\(PeerText.printable(host))' is not a host name or address")
        }
        guard (1...65_535).contains(port) else {
            throw FederationError.configuration(path: path, field: "port", "\(port) is outside 1...65535")
        }
        guard nextSerial >= 1 else {
            throw FederationError.configuration(path: path, field: "next_serial", "must be at least 1")
        }
    }
}
