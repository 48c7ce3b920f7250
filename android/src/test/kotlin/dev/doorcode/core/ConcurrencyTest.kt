package dev.doorcode.core

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.ClassRule
import org.junit.Test
import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.CountDownLatch
import kotlin.concurrent.thread

/** One handset shared by many threads and coroutines, as an app does. */
class ConcurrencyTest {
    companion object {
        /** Started before the class's first test, stopped after its last. */
        @ClassRule @JvmField val server = TestServer()
    }

    @Test
    fun threadsAndCoroutinesOnOneHandset() = runBlocking<Unit> {
        val ids = (1..8).map { "K-$it" }
        val code = server.setUpDay("C-CONC", ids.map { it to true })
        Handset.open(tempDb(), MapSecretStore()).use { h ->
            h.enroll(server.url, code, "x")
            h.sync(today())
            val codes = ids.associateWith { server.codeFor(it) }
            val errors = ConcurrentLinkedQueue<Throwable>()
            val start = CountDownLatch(1)
            // Four threads verify offline (each its own parcels), four read.
            val writers = ids.take(4).chunked(1).map { mine ->
                thread {
                    start.await()
                    try {
                        for (p in mine) assertTrue(h.verifyOffline(p, codes.getValue(p)) is VerifyResult.Accepted)
                    } catch (e: Throwable) { errors.add(e) }
                }
            }
            val readers = (1..4).map {
                thread {
                    start.await()
                    try {
                        repeat(25) {
                            assertEquals(8, h.stops().sumOf { s -> s.parcels.size })
                            h.status()
                            assertEquals("427710", readCodeInput("four two double seven one oh", 6u))
                        }
                    } catch (e: Throwable) { errors.add(e) }
                }
            }
            start.countDown()
            (writers + readers).forEach { it.join() }
            assertTrue("$errors", errors.isEmpty())

            // Online verifies from coroutines on several threads at once.
            val online = ids.drop(4).map { p -> async(Dispatchers.Default) { h.verify(p, codes.getValue(p)) } }.awaitAll()
            assertTrue("$online", online.all { it is VerifyResult.Accepted && it.checkedBy == CheckedBy.ONLINE })

            val s = h.status()
            assertEquals(8u, s.parcelsDelivered)
            assertEquals(8u, s.outboxPending)
            // Seqs are unique: no two threads recorded the same confirmation number.
            val report = h.sync(today())
            assertEquals(8u, report.uploaded)
        }
    }
}
