//! Property tests: input parsing round-trips, tag width, and what brute force
//! of one parcel's tag yields.

use chrono::NaiveDate;
use doorcode_core::codes::{self, Code, CodeKey};
use doorcode_core::input::parse_code_input;
use proptest::prelude::*;

const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

fn date() -> impl Strategy<Value = NaiveDate> {
    (2020i32..2040, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

proptest! {
    /// Any code, typed with any mix of separators, reads back as itself.
    #[test]
    fn typed_round_trip(code in "[0-9]{6,8}", seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just("."), Just(" - ")], 8)) {
        let mut text = String::new();
        for (i, c) in code.chars().enumerate() {
            text.push(c);
            text.push_str(seps[i % seps.len()]);
        }
        let got = parse_code_input(&text, code.len() as u8).unwrap();
        prop_assert_eq!(got.expose(), code.as_str());
    }

    /// Any code, spoken digit by digit (with "oh" for some zeros, "double" and
    /// "triple" for runs, random case and commas), reads back as itself.
    #[test]
    fn spoken_round_trip(code in "[0-9]{6,8}", oh in any::<bool>(), group in any::<bool>(), upper in any::<bool>()) {
        let digits: Vec<usize> = code.bytes().map(|b| usize::from(b - b'0')).collect();
        let mut words = Vec::new();
        let mut i = 0;
        while i < digits.len() {
            let d = digits[i];
            let run = digits[i..].iter().take_while(|&&x| x == d).count().min(3);
            let w = if d == 0 && oh { "oh" } else { WORDS[d] };
            if group && run == 3 { words.push(format!("triple {w}")); i += 3; }
            else if group && run == 2 { words.push(format!("double {w}")); i += 2; }
            else { words.push(w.to_string()); i += 1; }
        }
        let mut text = words.join(", ");
        if upper { text = text.to_uppercase(); }
        let got = parse_code_input(&text, code.len() as u8).unwrap();
        prop_assert_eq!(got.expose(), code.as_str());
    }

    /// Parsing never panics and never returns anything but `digits` digits.
    #[test]
    fn parse_never_panics(text in ".{0,80}", digits in 6u8..=8) {
        if let Ok(c) = parse_code_input(&text, digits) {
            prop_assert_eq!(c.len(), usize::from(digits));
            prop_assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    /// A tag of `bits` bits is always below 2^bits, and derived codes have the asked length.
    #[test]
    fn tag_width(bits in 1u8..=32, salt in any::<[u8; 16]>(), pid in "[A-Z0-9-]{1,20}", d in date(), attempt in 1u32..50, digits in 6u8..=8) {
        let key = CodeKey::from_bytes([1; 32]);
        let code = codes::derive_code(&key, &pid, d, attempt, digits).unwrap();
        prop_assert_eq!(code.len(), usize::from(digits));
        let tag = codes::offline_tag(&salt, &pid, d, &code, bits).unwrap();
        prop_assert!(u64::from(tag) < (1u64 << bits));
        if bits < 32 {
            let wide = codes::offline_tag(&salt, &pid, d, &code, 32).unwrap();
            prop_assert_eq!(tag, wide >> (32 - u32::from(bits)), "a narrow tag is the prefix of the wide one");
        }
    }
}

/// Every 6-digit code, built once for all cases.
fn all_codes() -> &'static [Code] {
    static ALL: std::sync::OnceLock<Vec<Code>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        (0..1_000_000u32)
            .map(|n| Code::new(format!("{n:06}")).unwrap())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Trying all 10^6 codes against a random parcel's 12-bit tag leaves about
    /// 10^6 / 4096 ≈ 244 candidates: what a rooted phone learns.
    #[test]
    fn brute_force_at_12_bits(salt in any::<[u8; 16]>(), pid in "P-[0-9]{4}", d in date(), key in any::<[u8; 32]>()) {
        let key = CodeKey::from_bytes(key);
        let real = codes::derive_code(&key, &pid, d, 1, 6).unwrap();
        let tag = codes::offline_tag(&salt, &pid, d, &real, 12).unwrap();
        let mut candidates = 0u32;
        let mut found_real = false;
        for c in all_codes() {
            if codes::offline_tag(&salt, &pid, d, c, 12).unwrap() == tag {
                candidates += 1;
                found_real |= *c == real;
            }
        }
        prop_assert!(found_real);
        // Binomial(10^6, 1/4096): mean 244, sd ≈ 15.6; ±6 sd never fails by chance.
        prop_assert!((150..=340).contains(&candidates), "{} candidates", candidates);
    }
}
