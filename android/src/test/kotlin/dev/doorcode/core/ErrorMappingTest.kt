package dev.doorcode.core

import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.ClassRule
import org.junit.Test
import java.net.InetAddress
import java.net.ServerSocket

/** Each failure reaches Kotlin as the right subclass with a message that helps. */
class ErrorMappingTest {
    companion object {
        /** Started before the class's first test, stopped after its last. */
        @ClassRule @JvmField val server = TestServer()
    }

    private inline fun <reified E : Throwable> thrown(block: () -> Unit): E {
        try {
            block()
        } catch (e: Throwable) {
            if (e is E) return e
            throw AssertionError("expected ${E::class.simpleName}, got $e", e)
        }
        throw AssertionError("expected ${E::class.simpleName}, nothing was thrown")
    }

    @Test
    fun notEnrolledHandset() = runBlocking<Unit> {
        Handset.open(tempDb(), MapSecretStore()).use { h ->
            val e = thrown<DoorcodeException.NotEnrolled> { runBlocking { h.sync(null) } }
            assertTrue(e.message!!, e.message!!.contains("enroll"))
            assertTrue(h.stops().isEmpty())
            assertEquals(0u, h.status().manifests)
            thrown<DoorcodeException.UnknownParcel> { h.verifyOffline("NOPE", "123456") }
            thrown<DoorcodeException.InvalidArgument> { runBlocking { h.sync("22/11/2026") } }
        }
    }

    @Test
    fun unreadableInputIsInvalidCodeAndNeverEchoesDigits() {
        val e = thrown<DoorcodeException.InvalidCode> { readCodeInput("12345", 6u) }
        assertTrue(e.message!!, e.message!!.contains("6 digits"))
        assertFalse(e.message!!, e.message!!.contains("12345"))
        thrown<DoorcodeException.InvalidCode> { readCodeInput("", 6u) }
        thrown<DoorcodeException.InvalidCode> { readCodeInput("four two banana", 6u) }
        thrown<DoorcodeException.InvalidArgument> { offlineTag("short", "P", "2026-11-23", "123456", 12u) }
    }

    @Test
    fun enrollmentRefusedAndServerUnreachable() = runBlocking<Unit> {
        Handset.open(tempDb(), MapSecretStore()).use { h ->
            val refused = thrown<DoorcodeException.Server> { runBlocking { h.enroll(server.url, "NOT-A-CODE", "x") } }
            assertTrue(refused.message!!, refused.message!!.contains("403"))
            val dead = ServerSocket(0, 0, InetAddress.getLoopbackAddress()).use { it.localPort }
            val off = thrown<DoorcodeException.Offline> { runBlocking { h.enroll("http://127.0.0.1:$dead", "X", "x") } }
            assertTrue(off.message!!, off.message!!.contains("offline"))
        }
    }

    @Test
    fun failingSecretStoreSurfacesAsSecretStore() = runBlocking<Unit> {
        val broken = object : SecretStore {
            override fun get(name: String): ByteArray? = throw SecretStoreException.Failed("keystore locked")
            override fun put(name: String, value: ByteArray) = throw SecretStoreException.Failed("keystore locked")
            override fun delete(name: String) = throw IllegalStateException("unexpected")
        }
        Handset.open(tempDb(), broken).use { h ->
            val e = thrown<DoorcodeException.SecretStore> { runBlocking { h.enroll(server.url, "X", "x") } }
            assertTrue(e.message!!, e.message!!.contains("keystore locked"))
            // An unexpected Kotlin exception from the store is mapped too, not a crash.
            val u = thrown<DoorcodeException.SecretStore> { h.signOut(true) }
            assertTrue(u.message!!, u.message!!.contains("unexpected"))
        }
    }

    @Test
    fun pendingUploadsBlockSignOutAndReenrollment() = runBlocking<Unit> {
        val code = server.setUpDay("C-ERR", listOf("E-1" to true, "E-2" to false))
        Handset.open(tempDb(), MapSecretStore()).use { h ->
            h.enroll(server.url, code, "x")
            h.sync(today())
            h.fail("E-1", FailReason.CUSTOMER_ABSENT)
            thrown<DoorcodeException.AlreadyRecorded> { h.fail("E-1", FailReason.REFUSED) }
            thrown<DoorcodeException.NotAllowed> { h.deliver("E-1") }
            thrown<DoorcodeException.NotAllowed> { h.verifyOffline("E-2", "123456") }
            val p = thrown<DoorcodeException.PendingUploads> { h.signOut(false) }
            assertTrue(p.message!!, p.message!!.contains("sync"))
            thrown<DoorcodeException.PendingUploads> { runBlocking { h.enroll(server.url, "X", "x") } }
            h.signOut(true)
            thrown<DoorcodeException.NotEnrolled> { runBlocking { h.sync(null) } }
        }
    }
}
