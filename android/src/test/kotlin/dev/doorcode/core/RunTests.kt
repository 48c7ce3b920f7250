package dev.doorcode.core

import org.junit.runner.JUnitCore
import org.junit.runner.Result
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import kotlin.system.exitProcess

/**
 * Runs every JVM test class and prints the closing line CI reads,
 * `N passed, N failed`. Ignored or assumption-skipped tests count as failed:
 * a check that did not run is not a pass. Exits non-zero on any failure or
 * when no test ran.
 */
fun main() {
    val classes = arrayOf(
        VectorsTest::class.java, ErrorMappingTest::class.java,
        CourierDayTest::class.java, ConcurrencyTest::class.java, DoorstepTest::class.java,
    )
    val core = JUnitCore()
    core.addListener(object : RunListener() {
        override fun testStarted(d: org.junit.runner.Description) = println("RUN  ${d.className}.${d.methodName}")
        override fun testFailure(f: Failure) { println("FAIL ${f.testHeader}: ${f.message}"); println(f.trace) }
        override fun testAssumptionFailure(f: Failure) = println("SKIP ${f.testHeader}: ${f.message}")
        override fun testIgnored(d: org.junit.runner.Description) = println("SKIP ${d.className}.${d.methodName}")
    })
    val r: Result = core.run(*classes)
    val notRun = r.ignoreCount + r.assumptionFailureCount
    val failed = r.failureCount + notRun
    val passed = r.runCount - r.failureCount - r.assumptionFailureCount
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
