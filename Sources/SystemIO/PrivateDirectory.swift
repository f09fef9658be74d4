import Foundation

/// Creates `url` as a directory readable only by its owner (0700), or checks an existing one.
public func createPrivateDirectory(_ url: URL) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
        guard isDirectory.boolValue else { throw SystemIOError(path: url.path, "exists and is not a directory") }
        chmod(url.path, 0o700)
        return
    }
    do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    } catch {
        throw SystemIOError(path: url.path, "cannot create directory: \(error.localizedDescription)")
    }
}
