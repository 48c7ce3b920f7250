//! Table tests: each language's digits, variants, pairs, repeats and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use Language::*;

fn p(s: &str) -> Result<String, InputError> {
    parse_code_input(s, 6).map(|c| c.expose().to_string())
}

fn read(langs: &[Language], s: &str) -> Result<String, InputError> {
    parse_code_input_in(s, 6, langs).map(|c| c.expose().to_string())
}

/// Every case of `table` reads as its code in `lang` alone.
fn check(lang: Language, table: &[(&str, &str)]) {
    for (input, code) in table {
        assert_eq!(
            read(&[lang], input).as_deref(),
            Ok(*code),
            "{lang} {input:?}"
        );
    }
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
        "१२३४५६",
        "１２３４５６",
    ] {
        assert_eq!(p(s).unwrap(), "123456", "{s}");
    }
}

#[test]
fn english() {
    check(
        English,
        &[
            ("four two double seven one oh", "427710"),
            ("Triple nine, zero one two", "999012"),
            ("o o o o o o", "000000"),
            ("the code is 4 2 7 7 1 0.", "427710"),
            ("forty-two seventy-seven ten", "427710"),
            ("uh, four two, double 7, one, oh", "427710"),
            ("double 71 4 2 0", "771420"),
            ("twenty twenty twenty", "202020"),
            ("for to ate won six five", "428165"),
            ("It’s four two seven seven one oh", "427710"),
            ("forty, two seven seven one", "402771"),
        ],
    );
}

#[test]
fn spanish() {
    check(
        Spanish,
        &[
            ("cuatro dos siete siete uno cero", "427710"),
            ("el código es cuatro, dos, doble siete, uno, cero", "427710"),
            ("cuarenta y dos, setenta y siete, diez", "427710"),
            ("veintidós treinta y uno noventa", "223190"),
            ("veintidos treinta uno noventa", "223190"),
            ("veintiún dieciséis cero nueve", "211609"),
            ("diez y seis quince catorce", "161514"),
            ("triple cero cuatro 2 siete", "000427"),
            ("CUATRO DOS SIETE SIETE UNO CERO", "427710"),
            ("¿cuatro dos siete? siete uno cero", "427710"),
            ("veinte y dos 3 4 5 6", "223456"),
        ],
    );
}

#[test]
fn portuguese() {
    check(
        Portuguese,
        &[
            ("quatro dois sete sete um zero", "427710"),
            ("o código é quatro dois sete sete um zero", "427710"),
            ("quarenta e dois, setenta e sete, dez", "427710"),
            ("um meia meia três duas nove", "166329"),
            ("tres tres dezesseis dezenove", "331619"),
            ("dezasseis dezassete dezanove", "161719"),
            ("vinte e um trinta dois noventa", "213290"),
            ("duplo sete triplo zero um", "770001"),
            ("quatorze catorze quinze", "141415"),
        ],
    );
}

#[test]
fn french() {
    check(
        French,
        &[
            ("quatre deux sept sept un zéro", "427710"),
            ("quatre deux sept sept un zero", "427710"),
            (
                "euh le code c'est quatre deux double sept un zéro",
                "427710",
            ),
            ("quarante-deux soixante-dix-sept dix", "427710"),
            ("quarante deux soixante dix sept dix", "427710"),
            ("vingt et un, trente et un, soixante et onze", "213171"),
            (
                "quatre-vingts, quatre-vingt-un, quatre-vingt-dix-neuf",
                "808199",
            ),
            ("quatre-vingt-onze soixante-quinze seize", "917516"),
            ("soixante-dix, dix-sept, dix-huit", "701718"),
            ("dixsept dixneuf zero zero", "171900"),
            ("septante-sept nonante huitante", "779080"),
            // A pause ends a number: 4 then 20, and 20 then 5.
            ("zéro quatre, vingt, cinq un", "042051"),
            ("vingt-cinq vingt, cinq 1", "252051"),
            ("Quatre Deux Sept Sept Un Zéro", "427710"),
        ],
    );
}

#[test]
fn german() {
    check(
        German,
        &[
            ("vier zwei sieben sieben eins null", "427710"),
            ("vier zwo sieben sieben eins null", "427710"),
            ("der Code ist vier zwei doppel sieben eins null", "427710"),
            ("zweiundvierzig siebenundsiebzig zehn", "427710"),
            ("zwei und vierzig, sieben und siebzig, zehn", "427710"),
            ("fünf fuenf funf elf null", "555110"),
            ("zwölf zwoelf null null", "121200"),
            ("einundzwanzig dreißig neunzehn", "213019"),
            ("einundzwanzig dreissig neunzehn", "213019"),
            ("doppelnull vier zwei sieben sieben", "004277"),
            ("dreifach neun zwo eins null", "999210"),
            ("vierzig zwei 1 2 3", "402123"),
        ],
    );
}

#[test]
fn italian() {
    check(
        Italian,
        &[
            ("quattro due sette sette uno zero", "427710"),
            ("il codice è quattro due doppio sette uno zero", "427710"),
            ("quarantadue settantasette dieci", "427710"),
            ("ventuno ventotto trentatré", "212833"),
            ("ventitre venti due novantanove", "232299"),
            ("diciassette diciotto diciannove", "171819"),
            ("triplo zero sei sei sei", "000666"),
            ("quarantuno quarantotto undici", "414811"),
        ],
    );
}

#[test]
fn hindi() {
    check(
        Hindi,
        &[
            ("char do saat saat ek shunya", "427710"),
            ("chaar do saat saat ek shoonya", "427710"),
            ("char do double saat ek sunya", "427710"),
            ("mera code hai chhe chhah chah che paanch panch", "666655"),
            ("teen tin aath aat nau nao", "338899"),
            ("triple shunya ek do teen", "000123"),
            ("dabal zero 4 2 7 7", "004277"),
            ("Char Do Saat Saat Ek Sifar", "427710"),
            ("das das das", "101010"),
        ],
    );
}

#[test]
fn several_languages_in_order_of_priority() {
    // A Spanish speaker who says a digit or two in English.
    assert_eq!(
        read(&[Spanish, English], "cuatro dos seven siete uno cero").as_deref(),
        Ok("427710")
    );
    // "um" is a filler in English and one in Portuguese: the first language decides.
    assert_eq!(
        read(&[English, Portuguese], "um, quatro dois sete sete um zero"),
        Err(InputError::WrongLength {
            expected: 6,
            got: 5
        })
    );
    assert_eq!(
        read(&[Portuguese, English], "um quatro dois sete sete um").as_deref(),
        Ok("142771")
    );
    // "das" is German filler and Hindi ten.
    assert_eq!(
        read(&[German, Hindi], "das vier zwei sieben sieben eins null").as_deref(),
        Ok("427710")
    );
    assert_eq!(
        read(&[Hindi, German], "das char do saat saat").as_deref(),
        Ok("104277")
    );
    // Empty means English.
    assert_eq!(
        read(&[], "four two seven seven one oh").as_deref(),
        Ok("427710")
    );
}

#[test]
fn words_of_a_language_not_chosen_are_unreadable_and_named() {
    let e = read(&[English], "cuatro dos siete siete uno cero").unwrap_err();
    assert_eq!(
        e,
        InputError::OtherLanguage {
            position: 1,
            languages: vec![Spanish]
        }
    );
    assert!(e.to_string().contains("Spanish"), "{e}");
    // The best hint wins over the first unknown word.
    let e = read(&[English], "el código es seis dos siete").unwrap_err();
    assert_eq!(
        e,
        InputError::OtherLanguage {
            position: 4,
            languages: vec![Spanish, Portuguese]
        }
    );
    assert!(e.to_string().contains("Spanish or Portuguese"), "{e}");
    let e = read(&[Spanish], "four two seven seven one oh").unwrap_err();
    assert!(
        matches!(e, InputError::OtherLanguage { position: 1, ref languages } if languages == &[English]),
        "{e:?}"
    );
    let e = read(&[English, Spanish], "vier zwei sieben sieben eins null").unwrap_err();
    assert!(
        matches!(e, InputError::OtherLanguage { position: 1, ref languages } if languages == &[German]),
        "{e:?}"
    );
    let e = read(&[English], "char do saat saat ek shunya").unwrap_err();
    assert!(
        matches!(e, InputError::OtherLanguage { ref languages, .. } if languages == &[Hindi]),
        "{e:?}"
    );
    // An English homophone is no sign of English: "o" is just unknown in Italian.
    let e = read(&[Italian], "o").unwrap_err();
    assert!(
        matches!(e, InputError::UnknownWord { position: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("quattro due sette"), "{e}");
}

#[test]
fn hundreds_and_thousands_are_refused_not_guessed() {
    for (lang, s) in [
        (English, "four hundred twenty seven"),
        (Spanish, "cuatrocientos veintisiete"),
        (Spanish, "mil dos"),
        (Portuguese, "quatrocentos e vinte"),
        (French, "quatre cent vingt-sept"),
        (German, "vierhundertsiebenundzwanzig"),
        (Italian, "quattrocento"),
        (Hindi, "char sau"),
    ] {
        let e = read(&[lang], s).unwrap_err();
        assert!(matches!(e, InputError::Magnitude(_)), "{lang} {s:?}: {e:?}");
        assert!(e.to_string().contains("digit by digit"));
    }
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
    let e = p("four two banana").unwrap_err();
    assert_eq!(
        e,
        InputError::UnknownWord {
            position: 3,
            example: "four two seven"
        }
    );
    assert!(!e.to_string().contains("banana"), "{e}");
    assert_eq!(p("12345 double"), Err(InputError::DanglingRepeat("double")));
    assert_eq!(
        p("double triple 1"),
        Err(InputError::DanglingRepeat("double"))
    );
    assert_eq!(
        read(&[Italian], "sette doppio"),
        Err(InputError::DanglingRepeat("doppio"))
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
    // An unknown word is never shown back: it may be a digit in a language
    // this build does not know ("bayalis" is Hindi for 42).
    let e = read(&[Hindi], "bayalis char do saat").unwrap_err();
    assert!(!e.to_string().contains("bayalis"), "{e}");
}

#[test]
fn huge_input_does_not_blow_up() {
    let s = "1".repeat(1_000_000);
    assert_eq!(p(&s), Err(InputError::TooLong));
    let s = "double ".repeat(10_000);
    assert_eq!(p(&s), Err(InputError::TooLong));
    let s = "double ".repeat(250);
    assert_eq!(p(&s), Err(InputError::DanglingRepeat("double")));
    let s = "1".repeat(MAX_INPUT_BYTES);
    assert!(matches!(p(&s), Err(InputError::WrongLength { .. })));
    let s = "um ".repeat(MAX_INPUT_BYTES / 3);
    assert!(matches!(
        parse_code_input_in(&s, 6, &Language::ALL),
        Err(InputError::WrongLength { .. })
    ));
}

#[test]
fn language_tags_and_lists() {
    assert_eq!(Language::from_tag("es-MX"), Some(Spanish));
    assert_eq!(Language::from_tag("pt_BR"), Some(Portuguese));
    assert_eq!(Language::from_tag("HI"), Some(Hindi));
    assert_eq!(Language::from_tag("nl"), None);
    assert_eq!(parse_languages("es,en").unwrap(), vec![Spanish, English]);
    assert_eq!(parse_languages("hi, en,hi").unwrap(), vec![Hindi, English]);
    assert_eq!(
        parse_languages("es,nl"),
        Err(InputError::UnknownLanguage("nl".into()))
    );
    // A "language" that looks like a code is not shown back.
    assert_eq!(
        parse_languages("427710"),
        Err(InputError::UnknownLanguage("?".into()))
    );
    assert!(parse_languages("").is_err());
    for l in Language::ALL {
        assert_eq!(Language::from_tag(l.code()), Some(l));
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            format!("\"{}\"", l.code())
        );
    }
}
