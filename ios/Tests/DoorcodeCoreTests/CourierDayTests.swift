import DoorcodeCore
import Foundation
import XCTest

/// An in-memory `SecretStore`, as the Kotlin tests use (the Keychain needs an
/// entitled host app in CI).
final class MapSecretStore: SecretStore, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var map: [String: Data] = [:]

    func get(name: String) throws -> Data? { lock.lock(); defer { lock.unlock() }; return map[name] }
    func put(name: String, value: Data) throws { lock.lock(); defer { lock.unlock() }; map[name] = value }
    func delete(name: String) throws { lock.lock(); defer { lock.unlock() }; map[name] = nil }
}

struct TestFailure: Error { let what: String }

/// A real `doorcode serve` on loopback: DOORCODE_SERVER is the binary
/// (`cargo build -p doorcode-server`), as in the Kotlin tests.
final class TestServer {
    let dataDir: URL
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }
    private(set) var adminToken = ""
    private var process: Process?

    init() throws {
        dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("doorcode-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        port = Int.random(in: 20000...60000)
    }

    func start() throws {
        guard let bin = ProcessInfo.processInfo.environment["DOORCODE_SERVER"] else {
            throw XCTSkip("set DOORCODE_SERVER to the doorcode binary")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["serve", "--data-dir", dataDir.path, "--listen", "127.0.0.1:\(port)",
                       "--working-days", "mon,tue,wed,thu,fri,sat,sun", "--tag-bits", "32", "--max-attempts", "3"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        process = p
        var text = ""
        let deadline = Date().addingTimeInterval(30)
        while !text.contains("doorcode listening on"), Date() < deadline {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        if adminToken.isEmpty, let r = text.range(of: "stored hashed): ") {
            adminToken = String(text[r.upperBound...].prefix { !$0.isWhitespace })
        }
        XCTAssertTrue(text.contains("doorcode listening on"))
    }

    func stop() {
        process?.terminate()
        process?.waitUntilExit()
        process = nil
    }

    func admin(_ method: String, _ path: String, _ body: String? = nil) async throws -> [String: Any] {
        var req = URLRequest(url: URL(string: url + path)!)
        req.httpMethod = method
        req.setValue("Bearer \(adminToken)", forHTTPHeaderField: "Authorization")
        req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        req.httpBody = body?.data(using: .utf8)
        let (data, _) = try await URLSession.shared.data(for: req)
        return (try JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
    }

    /// The customer's code from the `file:` notice.
    func code(for parcelId: String) throws -> String {
        let dir = dataDir.appendingPathComponent("notices")
        for _ in 0..<200 {
            let files = (try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? []
            for f in files where f.pathExtension == "json" {
                let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: f)) as? [String: Any]
                if obj?["parcel_id"] as? String == parcelId, let c = obj?["code"] as? String { return c }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestFailure(what: "no notice for \(parcelId) within 20 s")
    }
}

/// Mirrors android/src/test/kotlin/dev/doorcode/core/CourierDayTest.kt.
final class CourierDayTests: XCTestCase {
    func today() -> String {
        let f = DateFormatter()
        f.calendar = Calendar(identifier: .iso8601)
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        return f.string(from: Date())
    }

    func wrong(_ code: String) -> String {
        String(code.map { $0 == "9" ? "0" : Character(String(($0.wholeNumberValue ?? 0) + 1)) })
    }

    func testCourierDay() async throws {
        let server = try TestServer()
        try server.start()
        defer { server.stop() }
        _ = try await server.admin("POST", "/v1/parcels", """
            {"parcels":[{"parcel_id":"D-1","recipient":{"name":"R","email":"r@example.invalid"},"address":"1 Test St","value":100,"currency":"EUR","requires_code":true},
                        {"parcel_id":"D-2","recipient":{"name":"R","email":"r@example.invalid"},"address":"1 Test St","value":100,"currency":"EUR","requires_code":true},
                        {"parcel_id":"D-4","recipient":{"name":"R","email":"r@example.invalid"},"address":"2 Test St","value":1,"currency":"EUR","requires_code":false}]}
            """)
        _ = try await server.admin("POST", "/v1/routes", """
            {"route_id":"R-1","courier_id":"C-DAY","delivery_date":"\(today())",
             "stops":[{"stop_id":"S-1","address":"1 Test St","parcel_ids":["D-1","D-2"]},{"stop_id":"S-2","address":"2 Test St","parcel_ids":["D-4"]}]}
            """)
        let enrollment = try await server.admin("POST", "/v1/enrollments", #"{"courier_id":"C-DAY"}"#)
        let code = try XCTUnwrap(enrollment["enrollment_code"] as? String)

        let secrets = MapSecretStore()
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString).db").path
        let handset = try Handset.open(dbPath: db, secrets: secrets)
        let who = try await handset.enroll(serverUrl: server.url, enrollmentCode: code, deviceName: "xctest")
        XCTAssertEqual(who.courierId, "C-DAY")
        XCTAssertEqual(secrets.map["device-key"]?.count, 32)

        let report = try await handset.sync(date: today())
        guard case .pulled(_, let stops, let parcels) = report.manifest else { return XCTFail("\(report)") }
        XCTAssertEqual(stops, 2)
        XCTAssertEqual(parcels, 3)

        // Online, then a wrong code online.
        guard case .accepted(_, _, .online) = try await handset.verify(parcelId: "D-1", input: try server.code(for: "D-1")) else {
            return XCTFail("D-1 not accepted online")
        }
        guard case .rejected(_, 2, .online) = try await handset.verify(parcelId: "D-2", input: wrong(try server.code(for: "D-2"))) else {
            return XCTFail("wrong code not rejected online")
        }
        _ = try handset.deliver(parcelId: "D-4")

        // Offline fallback.
        server.stop()
        guard case .accepted(_, _, .offline) = try await handset.verify(parcelId: "D-2", input: try server.code(for: "D-2")) else {
            return XCTFail("D-2 not accepted offline")
        }
        do {
            _ = try handset.fail(parcelId: "D-2", reason: .customerAbsent)
            XCTFail("failing a delivered parcel")
        } catch DoorcodeError.AlreadyRecorded(let message) {
            XCTAssertFalse(message.isEmpty)
        }
        XCTAssertEqual(try handset.status().outboxPending, 3)

        try handset.signOut(force: true)
        XCTAssertTrue(secrets.map.isEmpty)
    }

    func testVectorsOfInput() throws {
        XCTAssertEqual(try readCodeInput(input: "four two double seven one oh", digits: 6), "427710")
        XCTAssertEqual(try readCodeInput(input: "cuatro dos doble siete uno cero", digits: 6, languages: [.spanish]), "427710")
        XCTAssertEqual(try readCodeInput(input: "char do saat saat ek shunya", digits: 6, languages: [.hindi]), "427710")
        XCTAssertEqual(languageFromTag(tag: "pt-BR"), .portuguese)
        XCTAssertThrowsError(try readCodeInput(input: "12345", digits: 6))
        XCTAssertThrowsError(try readCodeInput(input: "cuatro dos siete siete uno cero", digits: 6))
    }

    /// Mirrors DoorstepTest.kt: the progress stream and the chosen languages.
    func testSyncProgressStreamAndLanguages() async throws {
        let server = try TestServer()
        try server.start()
        defer { server.stop() }
        _ = try await server.admin("POST", "/v1/parcels", """
            {"parcels":[{"parcel_id":"F-1","recipient":{"name":"R","email":"r@example.invalid"},"address":"1 Test St","value":100,"currency":"EUR","requires_code":true},
                        {"parcel_id":"F-2","recipient":{"name":"R","email":"r@example.invalid"},"address":"1 Test St","value":100,"currency":"EUR","requires_code":true}]}
            """)
        _ = try await server.admin("POST", "/v1/routes", """
            {"route_id":"R-F","courier_id":"C-FLOW","delivery_date":"\(today())",
             "stops":[{"stop_id":"S-1","address":"1 Test St","parcel_ids":["F-1","F-2"]}]}
            """)
        let enrollment = try await server.admin("POST", "/v1/enrollments", #"{"courier_id":"C-FLOW"}"#)
        let code = try XCTUnwrap(enrollment["enrollment_code"] as? String)
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString).db").path
        let handset = try Handset.open(dbPath: db, secrets: MapSecretStore())
        _ = try await handset.enroll(serverUrl: server.url, enrollmentCode: code, deviceName: "xctest")

        var steps: [SyncProgress] = []
        for await step in handset.syncProgress(date: today()) { steps.append(step) }
        XCTAssertEqual(steps.count, 3)
        guard case .started = steps[0], case .manifestPulled(.pulled) = steps[1], case .done = steps[2] else {
            return XCTFail("\(steps)")
        }

        _ = try handset.fail(parcelId: "F-2", reason: .customerAbsent)
        var uploads: [(UInt32, UInt32)] = []
        var last: SyncProgress?
        for await step in handset.syncProgress(date: today()) {
            if case .uploading(let done, let total) = step { uploads.append((done, total)) }
            last = step
        }
        XCTAssertEqual(uploads.map { $0.0 }, [0, 1])
        XCTAssertEqual(uploads.map { $0.1 }, [1, 1])
        guard case .done(let report) = last else { return XCTFail("\(String(describing: last))") }
        XCTAssertEqual(report.uploaded, 1)

        // The customer reads the code in Spanish.
        let spanish = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]
        let spoken = try server.code(for: "F-1").map { spanish[$0.wholeNumberValue ?? 0] }.joined(separator: " ")
        try handset.setLanguages(languages: [.spanish, .english])
        guard case .accepted = try await handset.verify(parcelId: "F-1", input: spoken) else {
            return XCTFail("the Spanish code was not accepted")
        }
    }
}
