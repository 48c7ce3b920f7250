package dev.doorcode.core

import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.channelFlow
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
     * One sync of [date] as a cold [Flow] of its steps, for a progress bar:
     * [SyncProgress.Started], [SyncProgress.ManifestPulled], then
     * [SyncProgress.Uploading] (`done` of `total`) before the first batch and
     * after each, and last [SyncProgress.Done] with the report or
     * [SyncProgress.Failed]; then the flow completes. It never throws a
     * [DoorcodeException]: a failure is the `Failed` step. Each collection
     * runs one sync; cancelling the collector cancels the sync (whatever was
     * recorded or acknowledged stays; the next sync carries on).
     */
    fun syncProgress(date: String? = null): Flow<SyncProgress> = channelFlow {
        val listener = object : SyncListener {
            // Called on the core's thread; the channel is unbounded, so this never blocks it.
            override fun onProgress(progress: SyncProgress) { trySend(progress) }
        }
        try {
            handset.syncWithProgress(date, listener)
        } catch (_: DoorcodeException) {
            // Already sent as SyncProgress.Failed, the flow's last element.
        }
    }.buffer(Channel.UNLIMITED)

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

    /**
     * The languages spoken codes are read in, first one first (say
     * `listOf(Language.SPANISH, Language.ENGLISH)` for a customer who reads
     * the code in Spanish). Default English; set it each time the app opens
     * the handset. [languageFromTag] maps a locale tag such as `es-MX`.
     */
    var languages: List<Language>
        get() = handset.languages()
        set(value) = handset.setLanguages(value)

    /**
     * Asks the depot to send the customer's notice again (the code never
     * arrived). Throws [DoorcodeException.ResendLimited] within 10 minutes of
     * the last resend.
     */
    suspend fun resend(parcelId: String) = handset.resend(parcelId)

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
