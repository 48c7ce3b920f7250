package dev.doorcode.core.android

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.util.Base64
import dev.doorcode.core.SecretStore
import dev.doorcode.core.SecretStoreException
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * The device key and token, sealed with an AES-GCM key that never leaves the
 * Android Keystore; the ciphertext lives in private SharedPreferences. The
 * Keystore holds keys, not arbitrary bytes, hence the wrap.
 * Android-only: not compiled on the JVM test machine (no android.jar there).
 */
class KeystoreSecretStore(context: Context, private val alias: String = "doorcode-secrets") : SecretStore {
    private val prefs = context.getSharedPreferences("doorcode-secrets", Context.MODE_PRIVATE)

    private fun key(): SecretKey {
        val ks = KeyStore.getInstance("AndroidKeyStore").apply { load(null) }
        (ks.getKey(alias, null) as? SecretKey)?.let { return it }
        val gen = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, "AndroidKeyStore")
        gen.init(
            KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .build(),
        )
        return gen.generateKey()
    }

    private inline fun <T> guarded(what: String, block: () -> T): T =
        try { block() } catch (e: SecretStoreException) { throw e } catch (e: Exception) {
            throw SecretStoreException.Failed("Android Keystore: cannot $what: ${e.javaClass.simpleName}")
        }

    override fun get(name: String): ByteArray? = guarded("read $name") {
        val stored = prefs.getString(name, null) ?: return@guarded null
        val bytes = Base64.decode(stored, Base64.NO_WRAP)
        if (bytes.size < 13) throw SecretStoreException.Failed("stored secret $name is truncated")
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.DECRYPT_MODE, key(), GCMParameterSpec(128, bytes, 0, 12))
        cipher.updateAAD(name.toByteArray())
        cipher.doFinal(bytes, 12, bytes.size - 12)
    }

    override fun put(name: String, value: ByteArray) = guarded("write $name") {
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.ENCRYPT_MODE, key())
        cipher.updateAAD(name.toByteArray())
        val sealed = cipher.iv + cipher.doFinal(value)
        // commit(), not apply(): enrollment must not report success before the token is on disk.
        check(prefs.edit().putString(name, Base64.encodeToString(sealed, Base64.NO_WRAP)).commit()) { "commit failed" }
    }

    override fun delete(name: String) = guarded("delete $name") {
        check(prefs.edit().remove(name).commit()) { "commit failed" }
    }
}
