//! Reading a code as the courier enters it: typed digits with separators, or an
//! English speech transcript ("four two double seven one oh"). A failure here is
//! a format error and never counts as a try. Errors never echo the digits read.

use crate::codes::{Code, MAX_DIGITS, MIN_DIGITS};

/// Why an input could not be read as a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("nothing was entered; type or say the code")]
    Empty,
    #[error("\"{0}\" is not a digit word; say digits like \"four two seven\"")]
    UnknownWord(String),
    #[error("word {0} could not be read as digits; say or type digits only")]
    Unreadable(usize),
    #[error("\"{0}\" must be followed by a digit")]
    DanglingRepeat(&'static str),
    #[error("the code has {expected} digits but {got} were entered")]
    WrongLength { expected: u8, got: usize },
    #[error("code length must be {MIN_DIGITS}..={MAX_DIGITS} digits")]
    BadExpectedLength,
}

/// Words a recognizer produces that carry no digits and can be ignored.
const FILLER: &[&str] = &[
    "uh", "um", "umm", "er", "erm", "ah", "hmm", "okay", "ok", "so", "the", "code", "is", "it's",
    "its", "it", "my", "number", "and", "then",
];

fn unit_word(w: &str) -> Option<u8> {
    Some(match w {
        "zero" | "oh" | "o" | "nought" | "nil" => 0,
        "one" | "won" => 1,
        "two" | "to" | "too" => 2,
        "three" => 3,
        "four" | "for" | "fore" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" | "ate" => 8,
        "nine" => 9,
        _ => return None,
    })
}

fn teen_word(w: &str) -> Option<u8> {
    Some(match w {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens_word(w: &str) -> Option<u8> {
    Some(match w {
        "twenty" => 2,
        "thirty" => 3,
        "forty" | "fourty" => 4,
        "fifty" => 5,
        "sixty" => 6,
        "seventy" => 7,
        "eighty" => 8,
        "ninety" => 9,
        _ => return None,
    })
}

fn repeat_word(w: &str) -> Option<(usize, &'static str)> {
    match w {
        "double" => Some((2, "double")),
        "triple" => Some((3, "triple")),
        _ => None,
    }
}

/// Reads `text` as a code of exactly `digits` digits.
///
/// Accepts digits separated by spaces, dashes, dots, commas and similar
/// punctuation; the English digit words with "oh"/"o" for zero, "double" and
/// "triple", teens and tens ("forty two" is 42), common recognizer homophones
/// ("to", "for") and a few filler words ("the code is ...").
pub fn parse_code_input(text: &str, digits: u8) -> Result<Code, InputError> {
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
        return Err(InputError::BadExpectedLength);
    }
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '-' | '.'
                        | ','
                        | ';'
                        | ':'
                        | '!'
                        | '?'
                        | '/'
                        | '_'
                        | '"'
                        | '('
                        | ')'
                        | '…'
                        | '–'
                        | '—'
                )
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Err(InputError::Empty);
    }

    let mut out = String::with_capacity(usize::from(digits));
    let mut pending_repeat: Option<(usize, &'static str)> = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // The digits this word contributes.
        let chunk: String = if w.bytes().all(|b| b.is_ascii_digit()) {
            w.to_string()
        } else if let Some(d) = unit_word(w) {
            d.to_string()
        } else if let Some(t) = teen_word(w) {
            t.to_string()
        } else if let Some(t) = tens_word(w) {
            // "forty two" is 42; a lone "forty" is 40.
            match words.get(i + 1).and_then(|n| unit_word(n)) {
                Some(u) if u != 0 => {
                    i += 1;
                    format!("{t}{u}")
                }
                _ => format!("{t}0"),
            }
        } else if let Some(r) = repeat_word(w) {
            if let Some((_, prev)) = pending_repeat {
                return Err(InputError::DanglingRepeat(prev));
            }
            pending_repeat = Some(r);
            i += 1;
            continue;
        } else if FILLER.contains(&w) {
            i += 1;
            continue;
        } else if w.chars().all(|c| c.is_alphabetic() || c == '\'') && w.chars().count() <= 24 {
            return Err(InputError::UnknownWord(w.to_string()));
        } else {
            // Mixed letters and digits: never echo it, it may hold a code.
            return Err(InputError::Unreadable(i + 1));
        };
        if let Some((n, _)) = pending_repeat.take() {
            // "double seven" is 77; "double 71" (a recognizer's grouping) is 771.
            if let Some(first) = chunk.chars().next() {
                for _ in 1..n {
                    out.push(first);
                }
            }
        }
        out.push_str(&chunk);
        if out.len() > usize::from(MAX_DIGITS) * 4 {
            break; // far too long already; report the length below
        }
        i += 1;
    }
    if let Some((_, w)) = pending_repeat {
        return Err(InputError::DanglingRepeat(w));
    }
    if out.len() != usize::from(digits) {
        return Err(InputError::WrongLength {
            expected: digits,
            got: out.len(),
        });
    }
    Code::new(out).map_err(|_| InputError::WrongLength {
        expected: digits,
        got: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, InputError> {
        parse_code_input(s, 6).map(|c| c.expose().to_string())
    }

    #[test]
    fn typed_forms() {
        for s in [
            "123456",
            "123 456",
            "12-34-56",
            "12.34.56",
            " 1 2 3 4 5 6 ",
            "123,456",
        ] {
            assert_eq!(p(s).unwrap(), "123456", "{s}");
        }
    }

    #[test]
    fn spoken_forms() {
        assert_eq!(p("four two double seven one oh").unwrap(), "427710");
        assert_eq!(p("Triple nine, zero one two").unwrap(), "999012");
        assert_eq!(p("o o o o o o").unwrap(), "000000");
        assert_eq!(p("the code is 4 2 7 7 1 0.").unwrap(), "427710");
        assert_eq!(p("forty-two seventy-seven ten").unwrap(), "427710");
        assert_eq!(p("uh, four two, double 7, one, oh").unwrap(), "427710");
        assert_eq!(p("double 71 4 2 0").unwrap(), "771420");
        assert_eq!(p("twenty twenty twenty").unwrap(), "202020");
        assert_eq!(p("for to ate won six five").unwrap(), "428165");
    }

    #[test]
    fn errors_are_typed_and_redacted() {
        assert_eq!(p(""), Err(InputError::Empty));
        assert_eq!(p(" ,.- "), Err(InputError::Empty));
        assert_eq!(
            p("12345"),
            Err(InputError::WrongLength {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            p("1234567"),
            Err(InputError::WrongLength {
                expected: 6,
                got: 7
            })
        );
        assert_eq!(
            p("four two banana"),
            Err(InputError::UnknownWord("banana".into()))
        );
        assert_eq!(p("12345 double"), Err(InputError::DanglingRepeat("double")));
        assert_eq!(
            p("double triple 1"),
            Err(InputError::DanglingRepeat("double"))
        );
        let e = p("12a456").unwrap_err();
        assert_eq!(e, InputError::Unreadable(1));
        assert!(!e.to_string().contains("456"));
        assert_eq!(
            parse_code_input("123456", 5),
            Err(InputError::BadExpectedLength)
        );
        assert_eq!(
            parse_code_input("12345678", 8).unwrap().expose(),
            "12345678"
        );
    }

    #[test]
    fn huge_input_does_not_blow_up() {
        let s = "1".repeat(1_000_000);
        assert!(matches!(p(&s), Err(InputError::WrongLength { .. })));
        let s = "double ".repeat(10_000);
        assert_eq!(p(&s), Err(InputError::DanglingRepeat("double")));
    }
}
