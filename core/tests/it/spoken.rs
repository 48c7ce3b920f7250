//! Property tests of spoken codes in every language: any code, said digit by
//! digit or in pairs the way that language says numbers, with its spelling
//! variants, its words for doubles and triples, accents dropped or not, any
//! case and numerals mixed in, reads back as itself. The words here are
//! written out independently of `core::input`'s tables.

use doorcode_core::input::{InputError, Language, parse_code_input_in};
use proptest::prelude::*;

/// Each digit's words in `lang`, every accepted spelling.
fn digit_words(lang: Language, d: usize) -> &'static [&'static str] {
    use Language::*;
    const EN: [&[&str]; 10] = [
        &["zero", "oh", "o"],
        &["one"],
        &["two"],
        &["three"],
        &["four"],
        &["five"],
        &["six"],
        &["seven"],
        &["eight"],
        &["nine"],
    ];
    const ES: [&[&str]; 10] = [
        &["cero"],
        &["uno", "un"],
        &["dos"],
        &["tres"],
        &["cuatro"],
        &["cinco"],
        &["seis"],
        &["siete"],
        &["ocho"],
        &["nueve"],
    ];
    const PT: [&[&str]; 10] = [
        &["zero"],
        &["um", "uma"],
        &["dois", "duas"],
        &["três", "tres"],
        &["quatro"],
        &["cinco"],
        &["seis", "meia"],
        &["sete"],
        &["oito"],
        &["nove"],
    ];
    const FR: [&[&str]; 10] = [
        &["zéro", "zero"],
        &["un", "une"],
        &["deux"],
        &["trois"],
        &["quatre"],
        &["cinq"],
        &["six"],
        &["sept"],
        &["huit"],
        &["neuf"],
    ];
    const DE: [&[&str]; 10] = [
        &["null"],
        &["eins"],
        &["zwei", "zwo"],
        &["drei"],
        &["vier"],
        &["fünf", "funf", "fuenf"],
        &["sechs"],
        &["sieben"],
        &["acht"],
        &["neun"],
    ];
    const IT: [&[&str]; 10] = [
        &["zero"],
        &["uno"],
        &["due"],
        &["tre"],
        &["quattro"],
        &["cinque"],
        &["sei"],
        &["sette"],
        &["otto"],
        &["nove"],
    ];
    const HI: [&[&str]; 10] = [
        &["shunya", "shoonya", "sunya", "sifar", "zero"],
        &["ek"],
        &["do"],
        &["teen", "tin"],
        &["char", "chaar"],
        &["paanch", "panch"],
        &["chhe", "chhah", "chah"],
        &["saat"],
        &["aath"],
        &["nau"],
    ];
    match lang {
        English => EN[d],
        Spanish => ES[d],
        Portuguese => PT[d],
        French => FR[d],
        German => DE[d],
        Italian => IT[d],
        Hindi => HI[d],
    }
}

/// The words for two and three of the same digit, where the language has them.
fn repeat_words(lang: Language) -> (&'static [&'static str], &'static [&'static str]) {
    use Language::*;
    match lang {
        English | French => (&["double"], &["triple"]),
        Spanish => (&["doble"], &["triple"]),
        Portuguese => (&["duplo"], &["triplo"]),
        German => (&["doppel"], &["dreifach"]),
        Italian => (&["doppio"], &["triplo"]),
        Hindi => (&["double", "dabal"], &["triple", "tripal"]),
    }
}

/// `n` (10–99) as `lang` says it, or `None` where codes are not read in
/// pairs (Hindi).
fn pair_words(lang: Language, n: usize, alt: bool) -> Option<String> {
    use Language::*;
    let (t, u) = (n / 10, n % 10);
    let unit = |d: usize| digit_words(lang, d)[0];
    Some(match lang {
        English => {
            const TEENS: [&str; 10] = [
                "ten",
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
            ];
            const TENS: [&str; 10] = [
                "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
                "ninety",
            ];
            match (t, u) {
                (1, _) => TEENS[u].into(),
                (_, 0) => TENS[t].into(),
                _ => format!("{}{}{}", TENS[t], if alt { "-" } else { " " }, unit(u)),
            }
        }
        Spanish => {
            const TEENS: [&str; 10] = [
                "diez",
                "once",
                "doce",
                "trece",
                "catorce",
                "quince",
                "dieciséis",
                "diecisiete",
                "dieciocho",
                "diecinueve",
            ];
            const TWENTIES: [&str; 10] = [
                "veinte",
                "veintiuno",
                "veintidós",
                "veintitrés",
                "veinticuatro",
                "veinticinco",
                "veintiséis",
                "veintisiete",
                "veintiocho",
                "veintinueve",
            ];
            const TENS: [&str; 10] = [
                "",
                "",
                "veinte",
                "treinta",
                "cuarenta",
                "cincuenta",
                "sesenta",
                "setenta",
                "ochenta",
                "noventa",
            ];
            match (t, u) {
                (1, _) => TEENS[u].into(),
                (2, _) if !alt || u == 0 => TWENTIES[u].into(),
                (_, 0) => TENS[t].into(),
                _ => format!("{} y {}", TENS[t], unit(u)),
            }
        }
        Portuguese => {
            const TEENS: [&str; 10] = [
                "dez",
                "onze",
                "doze",
                "treze",
                "catorze",
                "quinze",
                "dezesseis",
                "dezessete",
                "dezoito",
                "dezenove",
            ];
            const TENS: [&str; 10] = [
                "",
                "",
                "vinte",
                "trinta",
                "quarenta",
                "cinquenta",
                "sessenta",
                "setenta",
                "oitenta",
                "noventa",
            ];
            match (t, u) {
                (1, 4) if alt => "quatorze".into(),
                (1, _) => TEENS[u].into(),
                (_, 0) => TENS[t].into(),
                _ => format!("{} e {}", TENS[t], unit(u)),
            }
        }
        French => {
            const TEENS: [&str; 10] = [
                "dix", "onze", "douze", "treize", "quatorze", "quinze", "seize", "dix-sept",
                "dix-huit", "dix-neuf",
            ];
            const TENS: [&str; 7] = [
                "",
                "",
                "vingt",
                "trente",
                "quarante",
                "cinquante",
                "soixante",
            ];
            let sep = if alt { " " } else { "-" };
            let teen = |d: usize| TEENS[d].replace('-', sep);
            match (t, u) {
                (1, _) => teen(u),
                (2..=6, 0) => TENS[t].into(),
                (2..=6, 1) => format!("{} et un", TENS[t]),
                (2..=6, _) => format!("{}{sep}{}", TENS[t], unit(u)),
                (7, 1) => "soixante et onze".into(),
                (7, _) => format!("soixante{sep}{}", teen(u)),
                (8, 0) => format!("quatre{sep}vingts"),
                (8, _) => format!("quatre{sep}vingt{sep}{}", unit(u)),
                _ => format!("quatre{sep}vingt{sep}{}", teen(u)),
            }
        }
        German => {
            const TEENS: [&str; 10] = [
                "zehn",
                "elf",
                "zwölf",
                "dreizehn",
                "vierzehn",
                "fünfzehn",
                "sechzehn",
                "siebzehn",
                "achtzehn",
                "neunzehn",
            ];
            const TENS: [&str; 10] = [
                "", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig",
                "achtzig", "neunzig",
            ];
            const UNITS: [&str; 10] = [
                "", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
            ];
            match (t, u) {
                (1, _) => TEENS[u].into(),
                (_, 0) => TENS[t].into(),
                _ if alt => format!("{} und {}", UNITS[u], TENS[t]),
                _ => format!("{}und{}", UNITS[u], TENS[t]),
            }
        }
        Italian => {
            const TEENS: [&str; 10] = [
                "dieci",
                "undici",
                "dodici",
                "tredici",
                "quattordici",
                "quindici",
                "sedici",
                "diciassette",
                "diciotto",
                "diciannove",
            ];
            const TENS: [&str; 10] = [
                "",
                "",
                "venti",
                "trenta",
                "quaranta",
                "cinquanta",
                "sessanta",
                "settanta",
                "ottanta",
                "novanta",
            ];
            match (t, u) {
                (1, _) => TEENS[u].into(),
                (_, 0) => TENS[t].into(),
                (_, 1 | 8) => format!("{}{}", &TENS[t][..TENS[t].len() - 1], unit(u)),
                (_, 3) => format!("{}tré", TENS[t]),
                _ if alt => format!("{} {}", TENS[t], unit(u)),
                _ => format!("{}{}", TENS[t], unit(u)),
            }
        }
        Hindi => return None,
    })
}

/// Accents off, as a keyboard or recognizer without them writes.
fn strip_accents(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            'á' | 'à' | 'â' | 'ã' => out.push('a'),
            'é' | 'è' | 'ê' => out.push('e'),
            'í' => out.push('i'),
            'ó' | 'ô' | 'õ' => out.push('o'),
            'ú' => out.push('u'),
            // German without umlauts writes them as two letters.
            'ü' => out.push_str("ue"),
            'ö' => out.push_str("oe"),
            'ß' => out.push_str("ss"),
            other => out.push(other),
        }
    }
    out
}

/// How one spoken code is rendered.
#[derive(Debug, Clone)]
struct Style {
    pairs: bool,
    repeats: bool,
    accents: bool,
    upper: bool,
    /// One bit per digit: say it as a numeral instead.
    numerals: u8,
    /// Picks among spellings.
    variant: u64,
    sep: usize,
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u8>(),
        any::<u64>(),
        0usize..3,
    )
        .prop_map(
            |(pairs, repeats, accents, upper, numerals, variant, sep)| Style {
                pairs,
                repeats,
                accents,
                upper,
                numerals,
                variant,
                sep,
            },
        )
}

fn language() -> impl Strategy<Value = Language> {
    proptest::sample::select(Language::ALL.to_vec())
}

/// `code` as a speaker of `lang` might say it, transcribed.
fn say(lang: Language, code: &str, st: &Style) -> String {
    let digits: Vec<usize> = code.bytes().map(|b| usize::from(b - b'0')).collect();
    let mut pick = st.variant;
    let mut choose = |options: &[&'static str]| {
        let w = options[(pick % options.len() as u64) as usize];
        pick = pick.rotate_right(7) ^ 0x9e37_79b9;
        w
    };
    // Which pairs use the language's other form ("forty-two", "zwei und vierzig").
    let alt_pairs = st.variant.count_ones() % 2 == 1;
    let mut groups: Vec<String> = Vec::new();
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        // Pairs: two digits as one number, unless the pair starts with 0.
        if st.pairs && i + 1 < digits.len() && d != 0 {
            let n = d * 10 + digits[i + 1];
            if let Some(w) = pair_words(lang, n, alt_pairs) {
                groups.push(w);
                i += 2;
                continue;
            }
        }
        let run = digits[i..].iter().take_while(|&&x| x == d).count().min(3);
        let numeral = st.numerals & (1 << (i % 8)) != 0;
        let word = if numeral {
            d.to_string()
        } else {
            choose(digit_words(lang, d)).to_string()
        };
        let (double, triple) = repeat_words(lang);
        if st.repeats && run == 3 {
            groups.push(format!("{} {word}", choose(triple)));
            i += 3;
        } else if st.repeats && run == 2 {
            groups.push(format!("{} {word}", choose(double)));
            i += 2;
        } else {
            groups.push(word);
            i += 1;
        }
    }
    // Groups are separated by a pause when pairs are read, so "vingt, cinq"
    // is not twenty-five; digits may also run on with plain spaces.
    let sep = match (st.pairs, st.sep) {
        (true, _) => ", ",
        (false, 0) => " ",
        (false, 1) => ", ",
        (false, _) => " . ",
    };
    let mut text = groups.join(sep);
    if !st.accents {
        text = strip_accents(&text);
    }
    if st.upper {
        text = text.to_uppercase();
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any code said in any language, in any of the ways above, reads back
    /// as itself when that language is chosen, alone or first of several.
    #[test]
    fn every_language_reads_back(lang in language(), code in "[0-9]{6,8}", st in style(), also in language()) {
        let text = say(lang, &code, &st);
        let digits = code.len() as u8;
        let got = parse_code_input_in(&text, digits, &[lang]);
        prop_assert_eq!(got.as_ref().map(|c| c.expose()), Ok(code.as_str()), "{:?} in {}", text, lang);
        // Another language after it never changes the reading.
        let got = parse_code_input_in(&text, digits, &[lang, also]);
        prop_assert_eq!(got.as_ref().map(|c| c.expose()), Ok(code.as_str()), "{:?} in {},{}", text, lang, also);
    }

    /// Read in a language that was not chosen, a spoken code is refused or
    /// read as itself (a word several languages share), never as another code.
    #[test]
    fn a_language_not_chosen_never_gives_another_code(lang in language(), code in "[0-9]{6,8}", st in style(), chosen in proptest::sample::subsequence(Language::ALL.to_vec(), 1..4)) {
        prop_assume!(!chosen.contains(&lang));
        let text = say(lang, &code, &st);
        match parse_code_input_in(&text, code.len() as u8, &chosen) {
            Ok(c) => prop_assert_eq!(c.expose(), code.as_str(), "{:?} read in {:?}", text, chosen),
            Err(e) => {
                prop_assert!(!e.to_string().contains(&code), "{} echoes the code", e);
                if let InputError::OtherLanguage { languages, .. } = &e {
                    prop_assert!(languages.iter().all(|l| !chosen.contains(l)));
                }
            }
        }
    }
}
