//! The courier's typed or spoken code input (`core/src/input/`): any text,
//! any expected length and any choice of languages must give a code of
//! exactly that length or a typed error, never a panic, and an error must
//! never carry a digit run that could be a code.
#![no_main]

use arbitrary::Arbitrary;
use doorcode_core::input::{InputError, Language, parse_code_input_in};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Expected length; mostly 6..=8, sometimes out of range.
    digits: u8,
    /// How many of `langs` the app chose (0 to 4, so also none).
    n_langs: u8,
    /// The app's languages, in order (index into `Language::ALL`); repeats allowed.
    langs: [u8; 4],
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
    let langs: Vec<Language> = input
        .langs
        .iter()
        .take(usize::from(input.n_langs % 5))
        .map(|b| Language::ALL[usize::from(*b) % Language::ALL.len()])
        .collect();
    match parse_code_input_in(&input.text, digits, &langs) {
        Ok(code) => {
            assert!((6..=8).contains(&digits), "accepted length {digits}");
            assert_eq!(code.len(), usize::from(digits));
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            // Reading the digits back is the identity, in any languages.
            let again = parse_code_input_in(code.expose(), digits, &langs);
            assert_eq!(again.as_ref().map(|c| c.expose()), Ok(code.expose()));
            // Languages added after the chosen ones never change a reading.
            let mut more = langs.clone();
            if more.is_empty() {
                more.push(Language::English);
            }
            more.extend(Language::ALL.iter().rev());
            let wider = parse_code_input_in(&input.text, digits, &more);
            assert_eq!(wider.as_ref().map(|c| c.expose()), Ok(code.expose()));
        }
        Err(e) => {
            if let InputError::WrongLength { expected, .. } = e {
                assert_eq!(expected, digits);
            }
            if let InputError::OtherLanguage { languages, .. } = &e {
                let chosen = if langs.is_empty() { vec![Language::English] } else { langs.clone() };
                assert!(languages.iter().all(|l| !chosen.contains(l)), "{e:?}");
            }
            let text = e.to_string();
            assert!(
                longest_digit_run(&text) < 6,
                "an input error echoes a digit run: {e:?}"
            );
        }
    }
});
