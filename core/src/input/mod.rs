//! Reading a code as the courier enters it: typed digits with separators, or a
//! speech transcript in the languages the app chose ("four two double seven
//! one oh", "cuatro dos siete siete uno cero", "char do saat saat ek shunya").
//! A failure here is a format error and never counts as a try. Errors never
//! echo what was entered: they name a word by its position.
//!
//! How a transcript is read:
//! - Words are compared without case or accents ("cinq"/"CINQ", "veintidós"/
//!   "veintidos", "fünf"/"funf"/"fuenf"); numerals count in any language and
//!   may be mixed with words ("4 dos 7"); Devanagari and full-width digits are
//!   digits.
//! - Codes are mostly read digit by digit, but people also read them in pairs,
//!   so each language's numbers 10–99 are read too, as that language builds
//!   them: "forty two", "cuarenta y dos", "quarenta e dois", "quarante-deux",
//!   "soixante-dix-sept" (77), "quatre-vingt-onze" (91), "zweiundvierzig"
//!   (42), "quarantadue", "ventotto". Hindi numbers above ten are not read
//!   (they are irregular words); Hindi codes are read digit by digit.
//! - A number is only built from words joined by spaces or hyphens. A comma or
//!   full stop ends it: "vingt-cinq" is 25, "vingt, cinq" is 20 then 5. Within
//!   that rule the longest reading wins, as a listener would hear it:
//!   "quatre vingt" is 80, never 4 then 20.
//! - Each language's words for a repeat apply to the next digit: "double
//!   seven" 77, "triple nine" 999, "doble", "doppio", "doppel", "dabal".
//! - Hundreds and thousands ("four hundred", "cuatrocientos") are refused
//!   with their own error, not guessed at.
//! - When a word means different things in two chosen languages, the language
//!   listed first decides ("um" is filler in English, one in Portuguese).
//! - A word of a language that was not chosen makes the input unreadable, and
//!   the error names that language.

mod lang;
#[cfg(test)]
mod tests;

pub use lang::Language;

use crate::codes::{Code, MAX_DIGITS, MIN_DIGITS};
use lang::Lexicon;
use std::fmt;

/// The languages a new handset reads: English.
pub const DEFAULT_LANGUAGES: &[Language] = &[Language::English];

/// Longer input is refused before it is read: no code needs a tenth of this.
pub const MAX_INPUT_BYTES: usize = 2048;

/// Why an input could not be read as a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("nothing was entered; type or say the code")]
    Empty,
    #[error("word {position} is not a digit word; say the digits one by one, like \"{example}\"")]
    UnknownWord {
        position: usize,
        example: &'static str,
    },
    #[error(
        "word {position} is {}, which is not among the languages chosen for reading codes; choose it too, or say the code in a chosen language",
        Names(languages)
    )]
    OtherLanguage {
        position: usize,
        languages: Vec<Language>,
    },
    #[error("word {0} could not be read as digits; say or type digits only")]
    Unreadable(usize),
    #[error("word {0} is a hundreds or thousands word; say the code digit by digit, or in pairs")]
    Magnitude(usize),
    #[error("\"{0}\" must be followed by a digit")]
    DanglingRepeat(&'static str),
    #[error("the code has {expected} digits but {got} were entered")]
    WrongLength { expected: u8, got: usize },
    #[error("code length must be {MIN_DIGITS}..={MAX_DIGITS} digits")]
    BadExpectedLength,
    #[error("the input is longer than {MAX_INPUT_BYTES} bytes; type or say only the code")]
    TooLong,
    #[error("unknown language {0:?}; use en, es, pt, fr, de, it or hi")]
    UnknownLanguage(String),
}

/// "Spanish" or "Spanish or Portuguese".
struct Names<'a>(&'a [Language]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            f.write_str(l.name())?;
        }
        Ok(())
    }
}

/// Reads a list of language codes such as `"es,en"` (commas or spaces),
/// keeping the order, which is the order of priority, and dropping repeats.
pub fn parse_languages(list: &str) -> Result<Vec<Language>, InputError> {
    let mut out = Vec::new();
    for tag in list.split([',', ' ']).filter(|t| !t.is_empty()) {
        let l = Language::from_tag(tag).ok_or_else(|| {
            // A tag is shown back only if it looks like one.
            let shown = if tag.len() <= 16
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_')
            {
                tag.to_string()
            } else {
                "?".to_string()
            };
            InputError::UnknownLanguage(shown)
        })?;
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.is_empty() {
        return Err(InputError::UnknownLanguage(String::new()));
    }
    Ok(out)
}

/// Reads `text` as a code of exactly `digits` digits, in English.
pub fn parse_code_input(text: &str, digits: u8) -> Result<Code, InputError> {
    parse_code_input_in(text, digits, DEFAULT_LANGUAGES)
}

/// Reads `text` as a code of exactly `digits` digits: typed digits with any
/// separators, or a transcript in `languages` (in order of priority; empty
/// means English). See the module documentation for the rules.
pub fn parse_code_input_in(
    text: &str,
    digits: u8,
    languages: &[Language],
) -> Result<Code, InputError> {
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
        return Err(InputError::BadExpectedLength);
    }
    if text.len() > MAX_INPUT_BYTES {
        return Err(InputError::TooLong);
    }
    let langs = if languages.is_empty() {
        DEFAULT_LANGUAGES
    } else {
        languages
    };
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Err(InputError::Empty);
    }
    let out = Reader {
        tokens: &tokens,
        langs,
    }
    .read()?;
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

/// One word of the input, folded, and whether a pause (a comma, a full
/// stop, ...) came before it. Words across a pause never form one number.
struct Token {
    text: String,
    pause_before: bool,
}

/// Separators that join the parts of a number: "forty two", "vingt-deux".
fn is_soft_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '\u{2010}' | '\u{2011}')
}

/// Separators that end a number: punctuation a person or a recognizer puts
/// between groups.
fn is_hard_separator(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | '/'
            | '_'
            | '"'
            | '('
            | ')'
            | '['
            | ']'
            | '…'
            | '–'
            | '—'
            | '¿'
            | '¡'
            | '«'
            | '»'
            | '“'
            | '”'
            | '„'
            | '·'
    )
}

/// Lower case, accents removed, every script's decimal digits as ASCII.
fn fold(c: char, out: &mut String) {
    for c in c.to_lowercase() {
        match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => out.push('a'),
            'ç' | 'ć' | 'č' => out.push('c'),
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => out.push('e'),
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'ı' => out.push('i'),
            'ñ' | 'ń' => out.push('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => out.push('o'),
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => out.push('u'),
            'ý' | 'ÿ' => out.push('y'),
            'ß' => out.push_str("ss"),
            'œ' => out.push_str("oe"),
            'æ' => out.push_str("ae"),
            '’' | '‘' | 'ʼ' | '`' | '´' => out.push('\''),
            // Combining accents (decomposed input): dropped.
            '\u{0300}'..='\u{036f}' => {}
            _ => match other_digit(c) {
                Some(d) => out.push(char::from(b'0' + d)),
                None => out.push(c),
            },
        }
    }
}

/// Devanagari, full-width and Arabic-Indic digits.
fn other_digit(c: char) -> Option<u8> {
    let base = match c {
        '\u{0966}'..='\u{096f}' => 0x0966,
        '\u{ff10}'..='\u{ff19}' => 0xff10,
        '\u{0660}'..='\u{0669}' => 0x0660,
        '\u{06f0}'..='\u{06f9}' => 0x06f0,
        _ => return None,
    };
    u8::try_from(u32::from(c) - base).ok()
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut pause = false;
    for c in text.chars() {
        if is_soft_separator(c) || is_hard_separator(c) {
            if !word.is_empty() {
                tokens.push(Token {
                    text: std::mem::take(&mut word),
                    pause_before: pause,
                });
                pause = false;
            }
            pause |= is_hard_separator(c);
        } else {
            fold(c, &mut word);
        }
    }
    if !word.is_empty() {
        tokens.push(Token {
            text: word,
            pause_before: pause,
        });
    }
    tokens
}

/// What a word is in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Unit(u8),
    /// A whole two-digit number in one word, 10–99 ("quince", "zweiundvierzig").
    Pair(u8),
    /// Twenty to ninety, waiting to see whether a unit follows.
    Tens(u8),
    Joiner,
    Repeat(usize, &'static str),
    Magnitude,
    Filler,
}

impl Word {
    /// Whether the word carries or shapes a number (not filler).
    fn is_number(&self) -> bool {
        !matches!(self, Word::Joiner | Word::Filler)
    }
}

fn find<T: Copy>(table: &'static [(&'static str, T)], w: &str) -> Option<T> {
    table.iter().find(|(k, _)| *k == w).map(|(_, v)| *v)
}

fn find_entry(table: &'static [(&'static str, usize)], w: &str) -> Option<(usize, &'static str)> {
    table.iter().find(|(k, _)| *k == w).map(|(k, n)| (*n, *k))
}

fn unit_in(lang: Language, w: &str) -> Option<u8> {
    find(lang.lexicon().units, w)
}

fn tens_in(lang: Language, w: &str) -> Option<u8> {
    find(lang.lexicon().tens, w)
}

/// `w` in `lang`, if that language knows it.
fn classify(lang: Language, w: &str) -> Option<Word> {
    let lex: &Lexicon = lang.lexicon();
    if let Some(u) = find(lex.units, w) {
        return Some(Word::Unit(u));
    }
    if let Some(n) = find(lex.teens, w) {
        return Some(Word::Pair(n));
    }
    if let Some(t) = find(lex.tens, w) {
        return Some(Word::Tens(t));
    }
    if let Some((n, name)) = find_entry(lex.repeats, w) {
        return Some(Word::Repeat(n, name));
    }
    if lex.joiners.contains(&w) {
        return Some(Word::Joiner);
    }
    if lex.magnitudes.contains(&w) || lex.magnitude_parts.iter().any(|part| w.contains(part)) {
        return Some(Word::Magnitude);
    }
    if lex.fillers.contains(&w) {
        return Some(Word::Filler);
    }
    one_word_number(lang, w)
}

/// Numbers written as one word by joining parts: "veintidós", "ventotto",
/// "zweiundvierzig"; and German "doppelnull".
fn one_word_number(lang: Language, w: &str) -> Option<Word> {
    let unit = |rest: &str| unit_in(lang, rest).filter(|u| (1..=9).contains(u));
    match lang {
        Language::Spanish => {
            for (prefix, tens) in [("veinti", 2), ("dieci", 1)] {
                if let Some(u) = w.strip_prefix(prefix).and_then(unit) {
                    return Some(Word::Pair(tens * 10 + u));
                }
            }
            None
        }
        Language::Italian => {
            // "ventidue", and with the vowel dropped before a vowel: "ventuno", "ventotto".
            for &(tw, t) in lang.lexicon().tens {
                if let Some(u) = w.strip_prefix(tw).and_then(unit) {
                    return Some(Word::Pair(t * 10 + u));
                }
                let stem = &tw[..tw.len() - 1];
                if let Some(rest) = w.strip_prefix(stem) {
                    if rest.starts_with(['u', 'o']) {
                        if let Some(u) = unit(rest) {
                            return Some(Word::Pair(t * 10 + u));
                        }
                    }
                }
            }
            None
        }
        Language::German => {
            // "doppelnull" is 00, "doppelsieben" 77.
            if let Some(u) = w.strip_prefix("doppel").and_then(|r| unit_in(lang, r)) {
                return Some(Word::Pair(u * 11));
            }
            for &(tw, t) in lang.lexicon().tens {
                if let Some(u) = w
                    .strip_suffix(tw)
                    .and_then(|r| r.strip_suffix("und"))
                    .and_then(unit)
                {
                    return Some(Word::Pair(t * 10 + u));
                }
            }
            None
        }
        _ => None,
    }
}

/// Reads the tokens left to right into digits.
struct Reader<'a> {
    tokens: &'a [Token],
    langs: &'a [Language],
}

impl Reader<'_> {
    /// The token at `i` if it continues a number: it exists and no pause
    /// comes before it.
    fn joined(&self, i: usize) -> Option<&str> {
        self.tokens
            .get(i)
            .filter(|t| !t.pause_before)
            .map(|t| t.text.as_str())
    }

    /// The first chosen language that knows the word, and what it is there.
    fn classify(&self, w: &str) -> Option<(Language, Word)> {
        self.langs
            .iter()
            .find_map(|&l| classify(l, w).map(|word| (l, word)))
    }

    fn read(&self) -> Result<String, InputError> {
        let mut out = String::with_capacity(usize::from(MAX_DIGITS));
        let mut pending_repeat: Option<(usize, &'static str)> = None;
        let mut i = 0;
        while i < self.tokens.len() {
            let w = self.tokens[i].text.as_str();
            let (chunk, used): (String, usize) = if w.bytes().all(|b| b.is_ascii_digit()) {
                (w.to_string(), 1)
            } else {
                match self.classify(w) {
                    None => return Err(self.unreadable(i)),
                    Some((_, Word::Filler | Word::Joiner)) => {
                        i += 1;
                        continue;
                    }
                    Some((_, Word::Magnitude)) => return Err(InputError::Magnitude(i + 1)),
                    Some((_, Word::Repeat(n, name))) => {
                        if let Some((_, prev)) = pending_repeat {
                            return Err(InputError::DanglingRepeat(prev));
                        }
                        pending_repeat = Some((n, name));
                        i += 1;
                        continue;
                    }
                    Some((lang, word)) => self.number(lang, word, i),
                }
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
                break; // far too long already; the length check reports it
            }
            i += used;
        }
        if let Some((_, w)) = pending_repeat {
            return Err(InputError::DanglingRepeat(w));
        }
        Ok(out)
    }

    /// The digits of the number that starts with `word` (in `lang`) at
    /// token `i`, and how many tokens it spans.
    fn number(&self, lang: Language, word: Word, i: usize) -> (String, usize) {
        let (value, used) = match (lang, word) {
            (Language::French, Word::Unit(4) | Word::Tens(_) | Word::Pair(10)) => {
                match self.french(i) {
                    Some(n) => n,
                    None => return (self.plain(lang, i), 1),
                }
            }
            // "zwei und vierzig": unit first, as German says it. German tens
            // never take a unit after them.
            (Language::German, Word::Unit(u @ 1..=9)) => {
                match (
                    self.joined(i + 1),
                    self.joined(i + 2).and_then(|w| tens_in(lang, w)),
                ) {
                    (Some("und"), Some(t)) => (t * 10 + u, 3),
                    _ => return (u.to_string(), 1),
                }
            }
            (Language::German, Word::Tens(t)) => (t * 10, 1),
            // "diez y seis", the old spelling of dieciséis.
            (Language::Spanish, Word::Pair(10)) => {
                match (
                    self.joined(i + 1),
                    self.joined(i + 2).and_then(|w| unit_in(lang, w)),
                ) {
                    (Some("y"), Some(u @ 6..=9)) => (10 + u, 3),
                    _ => (10, 1),
                }
            }
            (_, Word::Tens(t)) => match self.joiner_unit(lang, i + 1) {
                Some((u, n)) => (t * 10 + u, 1 + n),
                None => (t * 10, 1),
            },
            (_, Word::Unit(u)) => return (u.to_string(), 1),
            (_, Word::Pair(n)) => (n, 1),
            // Handled by the caller before it asks for a number.
            (_, Word::Joiner | Word::Filler | Word::Repeat(..) | Word::Magnitude) => {
                return (String::new(), 1);
            }
        };
        (format!("{value:02}"), used)
    }

    /// The word at `i` on its own.
    fn plain(&self, lang: Language, i: usize) -> String {
        match classify(lang, &self.tokens[i].text) {
            Some(Word::Unit(u)) => u.to_string(),
            Some(Word::Pair(n)) => format!("{n:02}"),
            Some(Word::Tens(t)) => format!("{t}0"),
            _ => String::new(),
        }
    }

    /// A unit 1–9 of `lang` at `i`, after an optional joiner ("y", "e",
    /// "et"), with the number of tokens used.
    fn joiner_unit(&self, lang: Language, i: usize) -> Option<(u8, usize)> {
        let w = self.joined(i)?;
        if lang.lexicon().joiners.contains(&w) {
            let u = unit_in(lang, self.joined(i + 1)?).filter(|u| (1..=9).contains(u))?;
            return Some((u, 2));
        }
        let u = unit_in(lang, w).filter(|u| (1..=9).contains(u))?;
        Some((u, 1))
    }

    /// French numbers 10–99 at `i`: "dix-sept", "vingt et un",
    /// "soixante-quinze", "quatre-vingts", "quatre-vingt-dix-neuf".
    fn french(&self, i: usize) -> Option<(u8, usize)> {
        let fr = Language::French;
        let w = self.tokens[i].text.as_str();
        if w == "dix" {
            return self.french_teen(i).filter(|(n, _)| *n > 10);
        }
        let (base, j) = if w == "quatre" {
            match self.joined(i + 1) {
                Some("vingt" | "vingts") => (80, i + 2),
                _ => return None,
            }
        } else {
            (tens_in(fr, w)? * 10, i + 1)
        };
        if base == 60 || base == 80 {
            // "soixante et onze", "quatre-vingt-douze": 60 or 80 plus 10–19.
            let k = if self.joined(j) == Some("et") {
                j + 1
            } else {
                j
            };
            if self.joined(k).is_some() {
                if let Some((teen, n)) = self.french_teen(k) {
                    return Some((base + teen, k + n - i));
                }
            }
        }
        Some(match self.joiner_unit(fr, j) {
            Some((u, n)) => (base + u, j + n - i),
            None => (base, j - i),
        })
    }

    /// 10–19 at `i` in French: "dix", "onze" … "seize", "dix-sept" … "dix-neuf".
    fn french_teen(&self, i: usize) -> Option<(u8, usize)> {
        let fr = Language::French;
        let w = self.tokens.get(i)?.text.as_str();
        if w == "dix" {
            if let Some(u) = self.joined(i + 1).and_then(|n| unit_in(fr, n)) {
                if (7..=9).contains(&u) {
                    return Some((10 + u, 2));
                }
            }
            return Some((10, 1));
        }
        match classify(fr, w) {
            Some(Word::Pair(n)) if (10..=19).contains(&n) => Some((n, 1)),
            _ => None,
        }
    }

    /// The error for the word at `i`, which no chosen language knows. When a
    /// word of the input is a number word in a language that was not chosen,
    /// that is the error, since it says what to do.
    fn unreadable(&self, i: usize) -> InputError {
        for (p, t) in self.tokens.iter().enumerate() {
            let others: Vec<Language> = Language::ALL
                .into_iter()
                .filter(|l| !self.langs.contains(l))
                .filter(|&l| {
                    !l.lexicon().homophones.contains(&t.text.as_str())
                        && classify(l, &t.text).is_some_and(|w| w.is_number())
                })
                .collect();
            if !others.is_empty() && self.classify(&t.text).is_none() {
                return InputError::OtherLanguage {
                    position: p + 1,
                    languages: others,
                };
            }
        }
        let w = &self.tokens[i].text;
        if w.chars().all(|c| c.is_alphabetic() || c == '\'') {
            InputError::UnknownWord {
                position: i + 1,
                example: self.langs[0].lexicon().example,
            }
        } else {
            // Mixed letters and digits, or symbols: never echoed, it may hold a code.
            InputError::Unreadable(i + 1)
        }
    }
}
