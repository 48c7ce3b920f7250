import Foundation
import Security

/// `SecretStore` on the iOS Keychain: the device key and token as generic
/// passwords, readable only on this device after the first unlock (a
/// courier's phone syncs in the background after a reboot).
public final class KeychainSecretStore: SecretStore, @unchecked Sendable {
    private let service: String

    public init(service: String = "dev.doorcode.secrets") {
        self.service = service
    }

    private func query(_ name: String) -> [String: Any] {
        [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: name,
        ]
    }

    public func get(name: String) throws -> Data? {
        var q = query(name)
        q[kSecReturnData as String] = true
        q[kSecMatchLimit as String] = kSecMatchLimitOne
        var out: AnyObject?
        let status = SecItemCopyMatching(q as CFDictionary, &out)
        switch status {
        case errSecSuccess:
            guard let data = out as? Data else {
                throw SecretStoreError.Failed(reason: "Keychain item \(name) holds no data")
            }
            return data
        case errSecItemNotFound:
            return nil
        default:
            throw SecretStoreError.Failed(reason: "Keychain read of \(name) failed: OSStatus \(status)")
        }
    }

    public func put(name: String, value: Data) throws {
        let attrs: [String: Any] = [
            kSecValueData as String: value,
            kSecAttrAccessible as String: kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
        ]
        var status = SecItemUpdate(query(name) as CFDictionary, attrs as CFDictionary)
        if status == errSecItemNotFound {
            var add = query(name)
            add.merge(attrs) { _, new in new }
            status = SecItemAdd(add as CFDictionary, nil)
        }
        guard status == errSecSuccess else {
            throw SecretStoreError.Failed(reason: "Keychain write of \(name) failed: OSStatus \(status)")
        }
    }

    public func delete(name: String) throws {
        let status = SecItemDelete(query(name) as CFDictionary)
        guard status == errSecSuccess || status == errSecItemNotFound else {
            throw SecretStoreError.Failed(reason: "Keychain delete of \(name) failed: OSStatus \(status)")
        }
    }
}
