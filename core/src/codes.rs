//! Code math: the HOTP-style delivery code, the salted offline tag and the
//! constant-time comparison both sides use. DESIGN.md "Codes" and "The offline tag".

use chrono::{Datelike, NaiveDate};
use ring::{digest, hmac, rand::SecureRandom};
use std::fmt;

/// Smallest and largest number of digits a code may have.
pub const MIN_DIGITS: u8 = 6;
/// See [`MIN_DIGITS`].
pub const MAX_DIGITS: u8 = 8;
/// Digits used when a manifest does not say.
pub const DEFAULT_DIGITS: u8 = 6;
/// Tag width used when nothing else is configured: ≈244 candidates per parcel.
pub const DEFAULT_TAG_BITS: u8 = 12;
/// Salt length in bytes; fresh for every parcel in every manifest build.
pub const SALT_LEN: usize = 16;

const CODE_DOMAIN: &[u8] = b"doorcode:code:v1";
const TAG_DOMAIN: &[u8] = b"doorcode:tag:v1";

/// Errors from code math. None of them carries a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("code length must be {MIN_DIGITS}..={MAX_DIGITS} digits, not {0}")]
    BadDigits(u8),
    #[error("tag width must be 1..=32 bits, not {0}")]
    BadTagBits(u8),
    #[error("a code key is 64 hex characters (32 bytes) with an optional trailing newline")]
    BadKey,
    #[error("a code is only ASCII digits")]
    NotDigits,
}

/// The server's 32-byte secret from which every code is derived.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

impl CodeKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut k = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut k)?;
        Ok(Self(k))
    }

    /// Parses the `code-key` file format: 64 hex characters plus an optional newline.
    pub fn from_file_text(text: &str) -> Result<Self, CodeError> {
        let t = text.strip_suffix('\n').unwrap_or(text);
        let t = t.strip_suffix('\r').unwrap_or(t);
        let bytes = crate::hex::decode(t).ok_or(CodeError::BadKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CodeError::BadKey)?;
        Ok(Self(arr))
    }

    /// The `code-key` file contents for this key.
    pub fn to_file_text(&self) -> String {
        let mut s = crate::hex::encode(&self.0);
        s.push('\n');
        s
    }

    /// A 32-byte key for another purpose, derived from this one:
    /// HMAC-SHA256(code key, "doorcode:subkey:v1" 0 label). Every node with
    /// the same `code-key` file derives the same subkey, and a subkey says
    /// nothing about the code key or about another label's subkey.
    pub fn derive_subkey(&self, label: &str) -> [u8; 32] {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(b"doorcode:subkey:v1");
        ctx.update(&[0]);
        ctx.update(label.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(tag.as_ref()) {
            *o = *b;
        }
        out
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

/// A delivery code: ASCII digits only. Its `Debug` is redacted and it has no
/// `Display`, so it cannot slip into a log line by accident; use [`Code::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// Wraps a string of 6..=8 ASCII digits.
    pub fn new(digits: impl Into<String>) -> Result<Self, CodeError> {
        let s = digits.into();
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::NotDigits);
        }
        let n = u8::try_from(s.len()).unwrap_or(u8::MAX);
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&n) {
            return Err(CodeError::BadDigits(n));
        }
        Ok(Self(s))
    }

    /// The digits. Call only where the code is meant to go: a notice, the
    /// tracking page, a confirmation, a comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality against another code.
    pub fn ct_eq(&self, other: &Code) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code(<{} digits>)", self.0.len())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Code::new(s).map_err(serde::de::Error::custom)
    }
}

/// Formats a delivery date the way every message in the protocol spells it.
pub fn date_str(date: NaiveDate) -> String {
    match iso_date(date) {
        Some(b) => b.iter().copied().map(char::from).collect(),
        None => date.format("%Y-%m-%d").to_string(),
    }
}

/// `YYYY-MM-DD` for the years 0 to 9999 without a formatter or an
/// allocation: a manifest build derives a code and a tag per parcel, and
/// chrono's `format` was 2.4% of a build's time (docs/BENCHMARKS.md). Other
/// years are left to [`date_str`]'s formatter.
fn iso_date(date: NaiveDate) -> Option<[u8; 10]> {
    let y = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let (m, d) = (date.month(), date.day());
    let digit = |n: u32, unit: u32| b'0' + ((n / unit) % 10) as u8;
    Some([
        digit(y, 1000),
        digit(y, 100),
        digit(y, 10),
        digit(y, 1),
        b'-',
        digit(m, 10),
        digit(m, 1),
        b'-',
        digit(d, 10),
        digit(d, 1),
    ])
}

/// Feeds `date` as [`date_str`] spells it to a hash.
fn hash_date(date: NaiveDate, mut update: impl FnMut(&[u8])) {
    match iso_date(date) {
        Some(b) => update(&b),
        None => update(date_str(date).as_bytes()),
    }
}

/// `n` in decimal digits, written into `buf` (no allocation).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Derives the code for a parcel, delivery date and attempt (RFC 4226 dynamic
/// truncation over HMAC-SHA256). Codes are derived, never stored.
pub fn derive_code(
    key: &CodeKey,
    parcel_id: &str,
    date: NaiveDate,
    attempt: u32,
    digits: u8,
) -> Result<Code, CodeError> {
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
        return Err(CodeError::BadDigits(digits));
    }
    let k = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(CODE_DOMAIN);
    ctx.update(&[0]);
    ctx.update(parcel_id.as_bytes());
    ctx.update(&[0]);
    hash_date(date, |b| ctx.update(b));
    ctx.update(&[0]);
    ctx.update(decimal(attempt, &mut [0; 10]));
    let tag = ctx.sign();
    let mac: &[u8] = tag.as_ref();
    // HMAC-SHA256 output is always 32 bytes, so these reads are in bounds.
    let off = usize::from(mac[31] & 0x0f);
    let bin =
        u32::from_be_bytes([mac[off], mac[off + 1], mac[off + 2], mac[off + 3]]) & 0x7fff_ffff;
    let modulus = 10u64.pow(u32::from(digits));
    let value = u64::from(bin) % modulus;
    Ok(Code(format!(
        "{value:0width$}",
        width = usize::from(digits)
    )))
}

/// The salted offline tag: the first `bits` bits of
/// SHA-256("doorcode:tag:v1" 0 salt parcel_id 0 date 0 code).
pub fn offline_tag(
    salt: &[u8; SALT_LEN],
    parcel_id: &str,
    date: NaiveDate,
    code: &Code,
    bits: u8,
) -> Result<u32, CodeError> {
    if !(1..=32).contains(&bits) {
        return Err(CodeError::BadTagBits(bits));
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(TAG_DOMAIN);
    ctx.update(&[0]);
    ctx.update(salt);
    ctx.update(parcel_id.as_bytes());
    ctx.update(&[0]);
    hash_date(date, |b| ctx.update(b));
    ctx.update(&[0]);
    ctx.update(code.expose().as_bytes());
    let d = ctx.finish();
    let h: &[u8] = d.as_ref();
    let first = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    Ok(if bits == 32 {
        first
    } else {
        first >> (32 - u32::from(bits))
    })
}

/// A fresh random salt for one parcel in one manifest build.
pub fn fresh_salt() -> Result<[u8; SALT_LEN], ring::error::Unspecified> {
    let mut s = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new().fill(&mut s)?;
    Ok(s)
}

/// Constant-time byte comparison. Lengths are not secret (every code of a
/// manifest has the same length), so a length mismatch returns early.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Constant-time comparison of two tags of the same width.
pub fn tag_eq(a: u32, b: u32) -> bool {
    ct_eq(&a.to_be_bytes(), &b.to_be_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn subkeys_depend_on_the_key_and_the_label() {
        let a = super::CodeKey::from_bytes([1; 32]);
        let b = super::CodeKey::from_bytes([2; 32]);
        assert_eq!(a.derive_subkey("form"), a.clone().derive_subkey("form"));
        assert_ne!(a.derive_subkey("form"), a.derive_subkey("other"));
        assert_ne!(a.derive_subkey("form"), b.derive_subkey("form"));
        assert_ne!(a.derive_subkey("form"), [1; 32]);
    }

    use super::*;

    #[test]
    fn dates_and_attempts_are_spelled_as_the_formatter_spells_them() {
        let mut day = NaiveDate::from_ymd_opt(1999, 12, 25).unwrap();
        for _ in 0..40_000 {
            assert_eq!(date_str(day), day.format("%Y-%m-%d").to_string());
            day = day.succ_opt().unwrap();
        }
        for day in [
            NaiveDate::from_ymd_opt(0, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(-1, 6, 30).unwrap(),
        ] {
            assert_eq!(date_str(day), day.format("%Y-%m-%d").to_string());
        }
        for n in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX] {
            assert_eq!(decimal(n, &mut [0; 10]), n.to_string().as_bytes());
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn key_file_format() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert!(CodeKey::from_file_text(hex).is_ok());
        assert!(CodeKey::from_file_text(&format!("{hex}\n")).is_ok());
        assert_eq!(
            CodeKey::from_file_text(&hex[2..]).unwrap_err(),
            CodeError::BadKey
        );
        assert_eq!(
            CodeKey::from_file_text(&format!("{hex}\n\n")).unwrap_err(),
            CodeError::BadKey
        );
        assert_eq!(
            CodeKey::from_file_text(&hex.replace('0', "g")).unwrap_err(),
            CodeError::BadKey
        );
        let k = CodeKey::from_file_text(hex).unwrap();
        assert_eq!(k.to_file_text(), format!("{hex}\n"));
        assert!(!format!("{k:?}").contains("0102"));
    }

    #[test]
    fn digits_bounds() {
        let k = CodeKey::from_bytes([7; 32]);
        for n in [0u8, 5, 9, 255] {
            assert_eq!(
                derive_code(&k, "P", d("2026-01-01"), 1, n),
                Err(CodeError::BadDigits(n))
            );
        }
        for n in 6..=8u8 {
            let c = derive_code(&k, "P", d("2026-01-01"), 1, n).unwrap();
            assert_eq!(c.len(), usize::from(n));
        }
    }

    #[test]
    fn code_debug_is_redacted() {
        let c = Code::new("123456").unwrap();
        assert_eq!(format!("{c:?}"), "Code(<6 digits>)");
        assert!(Code::new("12345a").is_err());
        assert!(Code::new("12345").is_err());
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"123456", b"123456"));
        assert!(!ct_eq(b"123456", b"123457"));
        assert!(!ct_eq(b"123456", b"1234567"));
        assert!(tag_eq(5, 5) && !tag_eq(5, 4));
    }
}
