package dev.doorcode.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/** The shared protocol vectors, through the binding: what the handset computes. */
class VectorsTest {
    private val vectors: Map<*, *> by lazy {
        val path = System.getProperty("doorcode.vectors") ?: error("set -Ddoorcode.vectors=<protocol-v1.json>")
        Json.parse(File(path).readText()) as Map<*, *>
    }

    /** The vectors of one kind; an empty set fails, so a renamed key cannot pass unseen. */
    private fun cases(kind: String): List<Map<*, *>> {
        val list = (vectors[kind] as List<*>).map { it as Map<*, *> }
        assertTrue("no \"$kind\" vectors", list.isNotEmpty())
        return list
    }

    @Test
    fun offlineTags() {
        for (t in cases("tags")) {
            val got = offlineTag(
                t["salt"] as String, t["parcel_id"] as String, t["delivery_date"] as String,
                t["code"] as String, (t["bits"] as Long).toUByte(),
            )
            assertEquals("$t", (t["tag"] as Long).toUInt(), got)
        }
    }

    @Test
    fun spokenAndTypedInput() {
        for (s in cases("spoken")) {
            val code = s["code"] as String
            assertEquals("${s["input"]}", code, readCodeInput(s["input"] as String, code.length.toUByte()))
        }
    }

    @Test
    fun codesHaveTheirDeclaredLength() {
        // Codes are derived on the server; the handset only reads them back.
        for (c in cases("codes")) {
            val code = c["code"] as String
            assertEquals(code, readCodeInput(code, (c["digits"] as Long).toUByte()))
        }
    }
}
