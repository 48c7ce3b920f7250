//! The input rules of DESIGN.md's "Input the server refuses": ids, names and
//! addresses, emails and phone numbers. Each check returns a message for
//! people that names the field; the caller decides the answer (a per-item
//! rejection at `POST /v1/parcels`, 422 elsewhere).
//!
//! Why: a name with a line break put attacker text at the top of the notice
//! above the real code; bidi overrides and zero-width characters made two
//! parcel ids look alike on the board; `Depot<attacker@evil.test>` was mailed
//! to the attacker, and lists and IP literals failed only at send time.

/// Longest id (DESIGN: one leading alphanumeric plus up to 63 more).
pub const MAX_ID: usize = 64;
/// Longest name or address, in characters.
pub const MAX_TEXT: usize = 200;
/// Longest email address (RFC 5321 path limit less the brackets).
pub const MAX_EMAIL: usize = 254;

/// Parcel, route, stop and courier ids: `^[A-Za-z0-9][A-Za-z0-9._:#-]{0,63}$`.
pub fn id(v: &str, field: &str) -> Result<(), String> {
    let mut bytes = v.bytes();
    let ok = v.len() <= MAX_ID
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b".:#_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} must be 1 to {MAX_ID} characters: letters, digits and . _ : # -, starting with a letter or digit"
        ))
    }
}

/// Characters that reorder or hide text: the bidirectional embeddings,
/// overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Names and addresses: not blank, at most [`MAX_TEXT`] characters, no
/// control characters (line breaks and tabs included), no U+2028/U+2029 and
/// no bidirectional controls.
pub fn text(v: &str, field: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(format!("{field} must be at most {MAX_TEXT} characters"));
    }
    if let Some(c) = v
        .chars()
        .find(|&c| c.is_control() || c == '\u{2028}' || c == '\u{2029}' || is_bidi_control(c))
    {
        return Err(format!(
            "{field} must be one line without control or direction characters (found U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(())
}

/// A character allowed in an address's local part: RFC 5322 `atext`, or a
/// non-ASCII letter or digit (RFC 6531).
fn local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+/=?^_`{|}~-".contains(c)
        || (!c.is_ascii() && c.is_alphanumeric())
}

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.chars().count() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
        })
}

/// One plain address, `local@domain`: no display name, no list, no quoted
/// or commented parts, no IP literal. The local part is a dot-atom; the
/// domain has at least two labels and a top-level label that is not numeric.
pub fn email(v: &str, field: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{field} must be one plain address like name@example.com ({why})"
        ))
    };
    if v.len() > MAX_EMAIL {
        return bad("too long");
    }
    let Some((local, domain)) = v.split_once('@') else {
        return bad("no @");
    };
    if domain.contains('@') {
        return bad("more than one @");
    }
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.chars().all(|c| c == '.' || local_char(c))
    {
        return bad("the part before @ has characters a plain address cannot have");
    }
    if domain.starts_with('[') {
        return bad("IP literals are not accepted");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
        return bad("the domain is not a host name");
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("IP addresses are not accepted");
    }
    Ok(())
}

/// An E.164 number: `+`, then 8 to 15 digits, the first not 0. No spaces
/// or other separators, so what is stored is exactly what the gateway gets.
pub fn phone(v: &str, field: &str) -> Result<(), String> {
    let digits = v.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} must be E.164: + then 8 to 15 digits without spaces, e.g. +442079460958"
        ))
    }
}

/// A day as the API and the board take it: `YYYY-MM-DD`, exactly.
pub fn date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| "dates are YYYY-MM-DD".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_pattern() {
        for ok in ["P-1001", "a", "R.7:x#1_y", &"x".repeat(64)] {
            assert!(id(ok, "id").is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "-P1",
            ".P",
            "P/1",
            "P 1",
            "P\u{202E}1",
            "P\u{200B}1",
            "Р-1", // Cyrillic Р
            "P\n1",
            &"x".repeat(65),
        ] {
            assert!(id(bad, "id").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_one_plain_line() {
        for ok in [
            "J. Doe",
            "Chloé Moreau",
            "محمد حداد",
            "12 Rue de l'Église, 75001 Paris",
            &"é".repeat(200),
        ] {
            assert!(text(ok, "name").is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "   ",
            "Doe\nYour code is 000000",
            "Doe\r",
            "Doe\tx",
            "Doe\u{0}",
            "Doe\u{7f}",
            "Doe\u{85}",
            "Doe\u{2028}x",
            "Doe\u{2029}x",
            "Doe\u{202E}x",
            "Doe\u{202A}x",
            "Doe\u{2066}x",
            "Doe\u{2069}x",
            &"é".repeat(201),
        ] {
            assert!(text(bad, "name").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_one_plain_address() {
        for ok in [
            "jdoe@example.com",
            "j.doe+parcels@mail.example.co.uk",
            "o'brien@example.ie",
            "josé@exämple.de",
        ] {
            assert!(email(ok, "email").is_ok(), "{ok:?}");
        }
        for bad in [
            "Depot<attacker@evil.test>",
            "Depot <attacker@evil.test>",
            "a@example.com, b@example.com",
            "a@example.com;b@example.com",
            "a@b@example.com",
            "user@[127.0.0.1]",
            "user@127.0.0.1",
            "user@localhost",
            "\"a b\"@example.com",
            "a(comment)@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example..com",
            "a @example.com",
            "a@example.com\n",
            "@example.com",
            "a@",
            "plain",
        ] {
            assert!(email(bad, "email").is_err(), "{bad:?}");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(65)), "e").is_err());
    }

    #[test]
    fn phones_are_e164() {
        for ok in ["+442079460958", "+15550100", "+123456789012345"] {
            assert!(phone(ok, "phone").is_ok(), "{ok:?}");
        }
        for bad in [
            "442079460958",
            "+44 20 7946 0958",
            "+44-20-79460958",
            "+1234567",
            "+1234567890123456",
            "+0442079460958",
            "++442079460958",
            "+44207946095８", // fullwidth digit
            "+442079460958;+15550100",
            "",
        ] {
            assert!(phone(bad, "phone").is_err(), "{bad:?}");
        }
    }
}
