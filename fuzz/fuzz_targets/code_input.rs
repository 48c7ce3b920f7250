//! The courier's typed or spoken code input (`core/src/input.rs`): any text
//! and any expected length must give a code of exactly that length or a typed
//! error, never a panic, and an error must never carry a digit run that could
//! be a code.
#![no_main]

use arbitrary::Arbitrary;
use doorcode_core::input::{InputError, parse_code_input};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Expected length; mostly 6..=8, sometimes out of range.
    digits: u8,
    text: String,
}

/// The longest run of ASCII digits in `s`.
fn longest_digit_run(s: &str) -> usize {
    s.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

fuzz_target!(|input: Input| {
    let digits = match input.digits % 8 {
        0 => input.digits, // any byte, mostly out of range
        n => 5 + n % 4,    // 6, 7, 8 and the just-too-short 5
    };
    match parse_code_input(&input.text, digits) {
        Ok(code) => {
            assert!((6..=8).contains(&digits), "accepted length {digits}");
            assert_eq!(code.len(), usize::from(digits));
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            // Reading the digits back is the identity.
            let again = parse_code_input(code.expose(), digits);
            assert_eq!(again.as_ref().map(|c| c.expose()), Ok(code.expose()));
        }
        Err(e) => {
            if let InputError::WrongLength { expected, .. } = e {
                assert_eq!(expected, digits);
            }
            let text = e.to_string();
            assert!(
                longest_digit_run(&text) < 6,
                "an input error echoes a digit run: {e:?}"
            );
        }
    }
});
