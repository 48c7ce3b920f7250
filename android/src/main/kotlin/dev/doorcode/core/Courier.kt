package dev.doorcode.core

import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.withContext

/**
 * Coroutine-friendly front of the generated [Handset]. The generated blocking
 * calls (stops, deliver, fail, ...) commit to SQLite with an fsync, so here
 * they run on [io] and the UI may call everything from the main thread.
 * Platform-neutral: compiled and tested on the JVM.
 */
class Courier(val handset: Handset, private val io: CoroutineDispatcher = Dispatchers.IO) : AutoCloseable {
    companion object {
        /** Opens (or creates) the handset database at [dbPath]. */
        suspend fun open(
            dbPath: String,
            secrets: SecretStore,
            io: CoroutineDispatcher = Dispatchers.IO,
        ): Courier = withContext(io) { Courier(Handset.open(dbPath, secrets), io) }
    }

    suspend fun enroll(serverUrl: String, enrollmentCode: String, deviceName: String): Enrollment =
        handset.enroll(serverUrl, enrollmentCode, deviceName)

    /** One sync of [date] (`YYYY-MM-DD`, default today). */
    suspend fun sync(date: String? = null): SyncReport = handset.sync(date)

    /**
     * Syncs until nothing waits for upload and nothing failed, or [maxRounds]
     * ran, waiting the report's `nextRetryMs` (at most [maxWaitMs]) between
     * rounds. Returns the last report; the app shows its `errors` if any.
     */
    suspend fun syncUntilDone(date: String? = null, maxRounds: Int = 3, maxWaitMs: Long = 30_000): SyncReport {
        require(maxRounds >= 1) { "maxRounds must be at least 1" }
        var report = handset.sync(date)
        var round = 1
        while (round < maxRounds && (report.pending > 0u || report.errors.isNotEmpty())) {
            val wait = report.nextRetryMs?.toLong() ?: 0L
            delay(wait.coerceIn(0L, maxWaitMs))
            report = handset.sync(date)
            round++
        }
        return report
    }

    suspend fun stops(): List<Stop> = withContext(io) { handset.stops() }

    /** Online first (a few seconds at most), else the offline tag. */
    suspend fun verify(parcelId: String, input: String): VerifyResult = handset.verify(parcelId, input)

    suspend fun verifyOffline(parcelId: String, input: String): VerifyResult =
        withContext(io) { handset.verifyOffline(parcelId, input) }

    suspend fun deliver(parcelId: String): RecordedOutcome = withContext(io) { handset.deliver(parcelId) }

    suspend fun fail(parcelId: String, reason: FailReason): RecordedOutcome =
        withContext(io) { handset.fail(parcelId, reason) }

    suspend fun status(): HandsetStatus = withContext(io) { handset.status() }

    /** Deletes the device key and token and wipes the database; see [Handset.signOut]. */
    suspend fun signOut(force: Boolean = false) = withContext(io) { handset.signOut(force) }

    override fun close() = handset.close()
}
