package dev.doorcode.core

import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.ClassRule
import org.junit.Test

/**
 * At the door and on the doorstep, through `Courier.kt` on the JVM against a
 * real `doorcode serve`: the sync progress flow, codes read in the chosen
 * languages, and resend's refusals.
 */
class DoorstepTest {
    companion object {
        /** Started before the class's first test, stopped after its last. */
        @ClassRule @JvmField val server = TestServer()
    }

    @Test
    fun syncProgressFlowReportsThePhasesAndNOfMUploaded() = runBlocking<Unit> {
        val enrollment = server.setUpDay("C-FLOW", listOf("F-1" to true, "F-2" to true, "F-3" to false, "F-4" to true))
        Courier.open(tempDb(), MapSecretStore()).use { courier ->
            courier.enroll(server.url, enrollment, "flow test")

            // Morning: the manifest, nothing to upload.
            val morning = courier.syncProgress(today()).toList()
            assertEquals(morning.toString(), 3, morning.size)
            assertEquals(today(), (morning[0] as SyncProgress.Started).date)
            val pulled = (morning[1] as SyncProgress.ManifestPulled).manifest as ManifestUpdate.Pulled
            assertEquals(4u, pulled.parcels)
            assertEquals(0u, (morning[2] as SyncProgress.Done).report.uploaded)

            // Three outcomes wait: uploading 0 of 3, then 3 of 3, then done.
            courier.fail("F-1", FailReason.CUSTOMER_ABSENT)
            courier.fail("F-2", FailReason.ADDRESS_NOT_FOUND)
            courier.deliver("F-3")
            val noon = courier.syncProgress(today()).toList()
            assertTrue(noon.toString(), noon[0] is SyncProgress.Started)
            assertTrue(noon.toString(), (noon[1] as SyncProgress.ManifestPulled).manifest is ManifestUpdate.Unchanged)
            assertEquals(
                listOf(0u to 3u, 3u to 3u),
                noon.filterIsInstance<SyncProgress.Uploading>().map { it.done to it.total },
            )
            val report = (noon.last() as SyncProgress.Done).report
            assertEquals(3u, report.uploaded)
            assertEquals(0u, report.pending)
            assertEquals("failed", server.parcelStatus("F-1"))

            // No signal: the flow still ends with Done, whose report says what failed.
            courier.fail("F-4", FailReason.DAMAGED)
            server.stop()
            try {
                val offline = courier.syncProgress(today()).toList()
                assertTrue(offline.toString(), (offline[1] as SyncProgress.ManifestPulled).manifest is ManifestUpdate.Failed)
                assertEquals(listOf(0u to 1u), offline.filterIsInstance<SyncProgress.Uploading>().map { it.done to it.total })
                val last = (offline.last() as SyncProgress.Done).report
                assertFalse(last.online)
                assertEquals(1u, last.pending)
                assertTrue(last.errors.isNotEmpty())
            } finally {
                server.restart()
            }
            val back = courier.syncProgress(today()).toList()
            assertEquals(1u, (back.last() as SyncProgress.Done).report.uploaded)
        }
    }

    @Test
    fun aSyncThatCannotRunEndsTheFlowWithFailedAndNeverThrows() = runBlocking<Unit> {
        Courier.open(tempDb(), MapSecretStore()).use { courier ->
            val steps = courier.syncProgress().toList()
            assertEquals(steps.toString(), 1, steps.size)
            val failed = steps[0] as SyncProgress.Failed
            assertTrue(failed.error, failed.error.contains("enroll"))
            val bad = courier.syncProgress("23/11/2026").toList()
            assertTrue(bad.toString(), (bad.single() as SyncProgress.Failed).error.contains("YYYY-MM-DD"))
        }
    }

    @Test
    fun aListenerThatThrowsDoesNotBreakTheSyncAndCancellingStopsIt() = runBlocking<Unit> {
        val enrollment = server.setUpDay("C-CANCEL", listOf("X-1" to true, "X-2" to true))
        Courier.open(tempDb(), MapSecretStore()).use { courier ->
            courier.enroll(server.url, enrollment, "cancel test")
            var calls = 0
            val report = courier.handset.syncWithProgress(today(), object : SyncListener {
                override fun onProgress(progress: SyncProgress) { calls++; throw IllegalStateException("a UI bug") }
            })
            assertTrue(report.manifest is ManifestUpdate.Pulled)
            assertEquals(3, calls)

            // Taking only the first step cancels the sync; the next one carries on.
            courier.fail("X-1", FailReason.CUSTOMER_ABSENT)
            assertTrue(courier.syncProgress(today()).first() is SyncProgress.Started)
            val after = courier.syncProgress(today()).toList()
            val done = after.last() as SyncProgress.Done
            assertEquals(0u, done.report.pending)
            assertEquals(0u, courier.status().outboxPending)
        }
    }

    private fun say(code: String, words: List<String>) = code.map { words[it - '0'] }.joinToString(" ")

    @Test
    fun codesAreReadInTheLanguagesTheAppChose() = runBlocking<Unit> {
        val spanish = listOf("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")
        val enrollment = server.setUpDay("C-LANG", listOf("L-1" to true, "L-2" to true))
        Courier.open(tempDb(), MapSecretStore()).use { courier ->
            courier.enroll(server.url, enrollment, "language test")
            courier.sync(today())
            assertEquals(listOf(Language.ENGLISH), courier.languages)
            val code = server.codeFor("L-1")

            // Spanish words on an English-only handset: unreadable, named, not a try.
            try {
                courier.verify("L-1", say(code, spanish)); fail("Spanish read without Spanish chosen")
            } catch (e: DoorcodeException.InvalidCode) {
                assertTrue(e.message!!, e.message!!.contains("Spanish"))
                assertFalse(e.message!!, e.message!!.contains(code))
            }
            assertEquals(0u, courier.stops().flatMap { it.parcels }.first { it.parcelId == "L-1" }.failedTries)

            courier.languages = listOf(Language.SPANISH, Language.ENGLISH)
            assertEquals(listOf(Language.SPANISH, Language.ENGLISH), courier.languages)
            val ok = courier.verify("L-1", say(code, spanish)) as VerifyResult.Accepted
            assertEquals(CheckedBy.ONLINE, ok.checkedBy)

            assertEquals("427710", readCodeInput("quatre deux sept sept un zéro", 6u, listOf(Language.FRENCH)))
            assertEquals("427710", readCodeInput("char do saat saat ek shunya", 6u, listOf(Language.HINDI)))
            assertEquals("427710", readCodeInput("four two double seven one oh", 6u))
            assertEquals(Language.PORTUGUESE, languageFromTag("pt-BR"))
            assertEquals(null, languageFromTag("nl"))

            // Resend: refused on the handset where it cannot help.
            try {
                courier.resend("L-1"); fail("resend for a delivered parcel")
            } catch (e: DoorcodeException.AlreadyRecorded) {
                assertTrue(e.message!!, e.message!!.contains("L-1"))
            }
            try {
                courier.resend("NOPE"); fail("resend for an unknown parcel")
            } catch (_: DoorcodeException.UnknownParcel) {}
        }
    }
}
