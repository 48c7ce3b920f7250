package dev.doorcode.core

import java.io.File
import java.net.InetAddress
import java.net.ServerSocket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.nio.file.Path
import java.time.LocalDate
import java.time.ZoneOffset
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import org.junit.rules.ExternalResource

/** A [SecretStore] in Kotlin, as an app would write one; counts calls. */
class MapSecretStore : SecretStore {
    val map = ConcurrentHashMap<String, ByteArray>()
    @Volatile var calls = 0

    override fun get(name: String): ByteArray? { calls++; return map[name]?.copyOf() }
    override fun put(name: String, value: ByteArray) { calls++; map[name] = value.copyOf() }
    override fun delete(name: String) { calls++; map.remove(name) }
}

/** Today as the test server (time zone UTC) sees it. */
fun today(): String = LocalDate.now(ZoneOffset.UTC).toString()

fun tempDb(): String = Files.createTempDirectory("doorcode-handset").resolve("handset.db").toString()

/**
 * A real `doorcode serve` on a free loopback port, with its own data dir; as
 * a JUnit class rule it runs for one test class.
 */
class TestServer : ExternalResource(), AutoCloseable {
    private val bin: String = System.getProperty("doorcode.server")
        ?: error("set -Ddoorcode.server=<path to the doorcode binary>")
    val dataDir: Path = Files.createTempDirectory("doorcode-server")
    val port: Int = ServerSocket(0, 0, InetAddress.getLoopbackAddress()).use { it.localPort }
    val url = "http://127.0.0.1:$port"
    var adminToken: String = ""
        private set
    private var proc: Process? = null
    private val http = HttpClient.newHttpClient()

    /** Stops the server; the port stays ours to restart on. */
    fun stop() {
        proc?.let { it.destroy(); if (!it.waitFor(10, TimeUnit.SECONDS)) it.destroyForcibly().waitFor() }
        proc = null
    }

    /** Starts `doorcode serve` and waits until it listens, keeping the admin token it prints. */
    fun start() {
        val tokenLine = Regex("dispatch admin token \\(shown once, stored hashed\\): (\\S+)")
        launch { line -> tokenLine.find(line)?.let { adminToken = it.groupValues[1] } }
        check(adminToken.isNotEmpty()) { "the server printed no admin token" }
    }

    /** Starts it again on the same data dir and port (the token stays). */
    fun restart() = launch { }

    /**
     * Runs `doorcode serve` and reads its output until it listens, each line
     * to [onLine]; a server that does not come up in 30 s is killed. The rest
     * of its output is drained so it never blocks on a full pipe.
     */
    private fun launch(onLine: (String) -> Unit) {
        val p = ProcessBuilder(
            bin, "serve", "--data-dir", dataDir.toString(), "--listen", "127.0.0.1:$port",
            // Every day is a working day so the test runs on Sundays too; 32-bit
            // tags make offline wrong codes deterministic; 3 tries lock quickly.
            "--working-days", "mon,tue,wed,thu,fri,sat,sun", "--tag-bits", "32", "--max-attempts", "3",
        ).redirectErrorStream(true).start()
        proc = p
        val watchdog = thread(isDaemon = true) {
            try { Thread.sleep(30_000); p.destroyForcibly() } catch (_: InterruptedException) {}
        }
        val reader = p.inputStream.bufferedReader()
        while (true) {
            val line = reader.readLine() ?: error("doorcode serve exited before listening (exit ${p.waitFor()})")
            onLine(line)
            if (line.contains("doorcode listening on")) break
        }
        watchdog.interrupt()
        thread(isDaemon = true) { try { reader.forEachLine { } } catch (_: java.io.IOException) {} }
    }

    override fun before() = start()
    override fun after() = stop()

    /** A dispatch call; returns (status, parsed JSON body). */
    fun admin(method: String, path: String, body: String? = null): Pair<Int, Any?> {
        val b = HttpRequest.newBuilder(URI.create(url + path))
            .header("Authorization", "Bearer $adminToken")
            .header("Content-Type", "application/json")
            .method(method, if (body == null) HttpRequest.BodyPublishers.noBody() else HttpRequest.BodyPublishers.ofString(body))
            .build()
        val r = http.send(b, HttpResponse.BodyHandlers.ofString())
        return r.statusCode() to (if (r.body().isBlank()) null else Json.parse(r.body()))
    }

    /** Creates parcels, a route for today and an enrollment code for [courier]. */
    fun setUpDay(courier: String, parcels: List<Pair<String, Boolean>>): String {
        val items = parcels.joinToString(",") { (id, code) ->
            """{"parcel_id":"$id","recipient":{"name":"R $id","email":"r@example.invalid"},"address":"1 Test St","value":100,"currency":"EUR","requires_code":$code}"""
        }
        val (s1, _) = admin("POST", "/v1/parcels", """{"parcels":[$items]}""")
        check(s1 == 200 || s1 == 201) { "POST /v1/parcels answered $s1" }
        val stops = parcels.chunked(2).mapIndexed { i, chunk ->
            """{"stop_id":"S-${courier}-$i","address":"${i + 1} Test St","recipient":"R$i","parcel_ids":[${chunk.joinToString(",") { "\"${it.first}\"" }}]}"""
        }.joinToString(",")
        val (s2, b2) = admin("POST", "/v1/routes",
            """{"route_id":"R-$courier","courier_id":"$courier","delivery_date":"${today()}","stops":[$stops]}""")
        check(s2 == 200 || s2 == 201) { "POST /v1/routes answered $s2: $b2" }
        val (s3, b3) = admin("POST", "/v1/enrollments", """{"courier_id":"$courier"}""")
        check(s3 == 200 || s3 == 201) { "POST /v1/enrollments answered $s3" }
        return (b3 as Map<*, *>)["enrollment_code"] as String
    }

    /** The customer's code, read from the `file:` notice as a customer gets it. */
    fun codeFor(parcelId: String): String {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (System.nanoTime() < deadline) {
            val files = File(dataDir.toFile(), "notices").listFiles().orEmpty()
            val codes = files.filter { it.name.endsWith(".json") }
                .map { Json.parse(it.readText()) as Map<*, *> }
                .filter { it["parcel_id"] == parcelId && it["code"] is String }
            if (codes.isNotEmpty()) return codes.last()["code"] as String
            Thread.sleep(100)
        }
        error("no notice for $parcelId within 20 s")
    }

    fun parcelStatus(parcelId: String): String {
        val (s, b) = admin("GET", "/v1/parcels/$parcelId")
        check(s == 200) { "GET /v1/parcels/$parcelId answered $s" }
        return (b as Map<*, *>)["status"] as String
    }

    override fun close() = stop()
}

/** Just enough JSON for notices, API answers and the vectors file. */
object Json {
    fun parse(text: String): Any? {
        val p = P(text)
        val v = p.value()
        p.ws()
        require(p.i == text.length) { "trailing characters in JSON at ${p.i}" }
        return v
    }

    private class P(val s: String) {
        var i = 0
        fun ws() { while (i < s.length && s[i].isWhitespace()) i++ }
        fun value(): Any? {
            ws()
            require(i < s.length) { "unexpected end of JSON" }
            return when (s[i]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> { expect("true"); true }
                'f' -> { expect("false"); false }
                'n' -> { expect("null"); null }
                else -> num()
            }
        }
        fun expect(w: String) { require(s.startsWith(w, i)) { "bad JSON at $i" }; i += w.length }
        fun obj(): Map<String, Any?> {
            val m = LinkedHashMap<String, Any?>()
            i++; ws()
            if (s[i] == '}') { i++; return m }
            while (true) {
                ws(); val k = str(); ws(); expect(":"); m[k] = value(); ws()
                if (s[i] == ',') { i++; continue }
                expect("}"); return m
            }
        }
        fun arr(): List<Any?> {
            val l = ArrayList<Any?>()
            i++; ws()
            if (s[i] == ']') { i++; return l }
            while (true) {
                l.add(value()); ws()
                if (s[i] == ',') { i++; continue }
                expect("]"); return l
            }
        }
        fun str(): String {
            expect("\"")
            val b = StringBuilder()
            while (s[i] != '"') {
                if (s[i] == '\\') {
                    i++
                    when (val c = s[i]) {
                        'n' -> b.append('\n'); 't' -> b.append('\t'); 'r' -> b.append('\r')
                        'b' -> b.append('\b'); 'f' -> b.append('\u000c')
                        'u' -> { b.append(s.substring(i + 1, i + 5).toInt(16).toChar()); i += 4 }
                        else -> b.append(c)
                    }
                    i++
                } else b.append(s[i++])
            }
            i++
            return b.toString()
        }
        fun num(): Any {
            val start = i
            while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++
            val t = s.substring(start, i)
            require(t.isNotEmpty()) { "bad JSON at $start" }
            return t.toLongOrNull() ?: t.toDouble()
        }
    }
}
