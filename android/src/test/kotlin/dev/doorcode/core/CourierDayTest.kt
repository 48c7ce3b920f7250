package dev.doorcode.core

import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.ClassRule
import org.junit.Test

/** A whole courier day through the generated Kotlin against a real `doorcode serve`. */
class CourierDayTest {
    companion object {
        /** Started before the class's first test, stopped after its last. */
        @ClassRule @JvmField val server = TestServer()
    }

    private fun wrong(code: String): String =
        code.map { if (it == '9') '0' else it + 1 }.joinToString("")

    @Test
    fun courierDay() = runBlocking<Unit> {
        val enrollment = server.setUpDay("C-DAY", listOf("D-1" to true, "D-2" to true, "D-3" to true, "D-4" to false, "D-5" to true))
        val secrets = MapSecretStore()
        Courier.open(tempDb(), secrets).use { courier ->
            // Enroll: the device key and token land in the Kotlin SecretStore.
            val who = courier.enroll(server.url, enrollment, "jvm test handset")
            assertEquals("C-DAY", who.courierId)
            assertEquals(32, secrets.map["device-key"]?.size)
            assertNotNull(secrets.map["device-token"])

            // Morning sync pulls the signed manifest.
            val first = courier.sync(today())
            val pulled = first.manifest as ManifestUpdate.Pulled
            assertEquals(3u, pulled.stops)
            assertEquals(5u, pulled.parcels)
            assertTrue(first.online)
            assertTrue(first.errors.isEmpty())
            val stops = courier.stops()
            assertEquals(listOf("D-1", "D-2", "D-3", "D-4", "D-5"), stops.flatMap { s -> s.parcels.map { it.parcelId } })
            assertFalse(stops.flatMap { it.parcels }.first { it.parcelId == "D-4" }.requiresCode)

            // Online: the server checks the full code.
            val c1 = server.codeFor("D-1")
            val ok = courier.verify("D-1", c1) as VerifyResult.Accepted
            assertEquals(CheckedBy.ONLINE, ok.checkedBy)
            val bad = courier.verify("D-2", wrong(server.codeFor("D-2"))) as VerifyResult.Rejected
            assertEquals(CheckedBy.ONLINE, bad.checkedBy)
            assertEquals(2u, bad.attemptsLeft)

            // Lock out D-3 online, then fail it as locked out (the only reason allowed).
            val c3 = wrong(server.codeFor("D-3"))
            courier.verify("D-3", c3)
            courier.verify("D-3", c3)
            assertTrue(courier.verify("D-3", c3) is VerifyResult.Locked)
            try {
                courier.fail("D-3", FailReason.CUSTOMER_ABSENT); fail("a locked parcel failed as customer absent")
            } catch (e: DoorcodeException.NotAllowed) {
                assertTrue(e.message!!, e.message!!.contains("locked_out"))
            }
            assertFalse(courier.fail("D-3", FailReason.LOCKED_OUT).delivered)
            assertTrue(courier.deliver("D-4").delivered)

            // Signal lost: verify falls back to the offline tag.
            server.stop()
            val off = courier.verify("D-2", server.codeFor("D-2")) as VerifyResult.Accepted
            assertEquals(CheckedBy.OFFLINE, off.checkedBy)
            val offBad = courier.verify("D-5", wrong(server.codeFor("D-5"))) as VerifyResult.Rejected
            assertEquals(CheckedBy.OFFLINE, offBad.checkedBy)
            assertEquals(2u, offBad.attemptsLeft)
            val offOk = courier.verifyOffline("D-5", server.codeFor("D-5").chunked(3).joinToString(" "))
            assertTrue(offOk is VerifyResult.Accepted)
            val offline = courier.sync(today())
            assertFalse(offline.online)
            assertTrue(offline.errors.isNotEmpty())
            assertNotNull(offline.nextRetryMs)
            val before = courier.status()
            assertEquals(5u, before.outboxPending)
            assertEquals(4u, before.parcelsDelivered)
            assertEquals(1u, before.parcelsFailed)

            // Back in coverage: everything uploads and the server agrees.
            server.restart()
            val up = courier.syncUntilDone(today())
            assertEquals(5u, up.uploaded + up.duplicates)
            assertEquals(0u, up.pending)
            assertNull(up.nextRetryMs)
            assertTrue(up.manifest is ManifestUpdate.Unchanged || up.manifest is ManifestUpdate.Pulled)
            assertEquals(0u, courier.status().outboxPending)
            for (p in listOf("D-1", "D-2", "D-4", "D-5")) assertEquals(p, "delivered", server.parcelStatus(p))
            assertTrue(courier.handset.rejectedUploads().isEmpty())

            // Sign out: secrets and stops gone.
            courier.signOut()
            assertTrue(secrets.map.isEmpty())
            assertTrue(courier.stops().isEmpty())
            try { courier.sync(today()); fail("sync after sign-out") } catch (_: DoorcodeException.NotEnrolled) {}
        }
    }
}
