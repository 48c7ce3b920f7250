//! The languages a spoken code can be read in, and each one's words: digits
//! with their common spellings and recognizer variants, the numbers 10–99
//! where people read codes in pairs, the words for doubles and triples, and
//! the filler a recognizer writes down ("the code is ...").
//!
//! Every word is stored as `fold` leaves it: lower case, without accents
//! ("veintidós" is found as "veintidos", "fünf" as "funf").

use serde::{Deserialize, Serialize};
use std::fmt;

/// A language the app can ask codes to be read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "en")]
    English,
    #[serde(rename = "es")]
    Spanish,
    #[serde(rename = "pt")]
    Portuguese,
    #[serde(rename = "fr")]
    French,
    #[serde(rename = "de")]
    German,
    #[serde(rename = "it")]
    Italian,
    /// Hindi written in Latin letters ("char do saat"), as Indian speech
    /// recognizers and keyboards commonly produce it.
    #[serde(rename = "hi")]
    Hindi,
}

impl Language {
    pub const ALL: [Language; 7] = [
        Language::English,
        Language::Spanish,
        Language::Portuguese,
        Language::French,
        Language::German,
        Language::Italian,
        Language::Hindi,
    ];

    /// The ISO 639-1 code: `en`, `es`, `pt`, `fr`, `de`, `it`, `hi`.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Spanish => "es",
            Language::Portuguese => "pt",
            Language::French => "fr",
            Language::German => "de",
            Language::Italian => "it",
            Language::Hindi => "hi",
        }
    }

    /// The language's English name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::Spanish => "Spanish",
            Language::Portuguese => "Portuguese",
            Language::French => "French",
            Language::German => "German",
            Language::Italian => "Italian",
            Language::Hindi => "Hindi",
        }
    }

    /// The language of a code or locale tag: `es`, `ES`, `es-MX`, `pt_BR`,
    /// `hi-Latn`. `None` for a language this build cannot read.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Self::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(primary))
    }

    pub(super) fn lexicon(self) -> &'static Lexicon {
        match self {
            Language::English => &EN,
            Language::Spanish => &ES,
            Language::Portuguese => &PT,
            Language::French => &FR,
            Language::German => &DE,
            Language::Italian => &IT,
            Language::Hindi => &HI,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One language's words for reading codes.
pub(super) struct Lexicon {
    /// Digit words with their spellings: `("chaar", 4)`.
    pub units: &'static [(&'static str, u8)],
    /// Digit words that are also everyday words elsewhere ("to", "for", "o"):
    /// read as digits in this language, but never taken as a sign that an
    /// input is in this language.
    pub homophones: &'static [&'static str],
    /// Single words for 10–19 (and other whole two-digit numbers).
    pub teens: &'static [(&'static str, u8)],
    /// Tens from 20 to 90 with their tens digit: `("forty", 4)`.
    pub tens: &'static [(&'static str, u8)],
    /// The word between tens and unit ("treinta y dos", "vinte e dois").
    pub joiners: &'static [&'static str],
    /// "double seven" is 77, "triple nine" 999.
    pub repeats: &'static [(&'static str, usize)],
    /// Hundreds and thousands: a code is not read that way, so these get
    /// their own error rather than a wrong reading.
    pub magnitudes: &'static [&'static str],
    /// Parts of compound hundreds and thousands ("doscientos",
    /// "vierhundertzwei").
    pub magnitude_parts: &'static [&'static str],
    /// Words a recognizer writes down that carry no digit.
    pub fillers: &'static [&'static str],
    /// Three digits in this language, for the hint in an error.
    pub example: &'static str,
}

static EN: Lexicon = Lexicon {
    units: &[
        ("zero", 0),
        ("oh", 0),
        ("o", 0),
        ("nought", 0),
        ("naught", 0),
        ("nil", 0),
        ("one", 1),
        ("won", 1),
        ("two", 2),
        ("to", 2),
        ("too", 2),
        ("three", 3),
        ("four", 4),
        ("for", 4),
        ("fore", 4),
        ("five", 5),
        ("six", 6),
        ("seven", 7),
        ("eight", 8),
        ("ate", 8),
        ("nine", 9),
    ],
    homophones: &["oh", "o", "nil", "won", "to", "too", "for", "fore", "ate"],
    teens: &[
        ("ten", 10),
        ("eleven", 11),
        ("twelve", 12),
        ("thirteen", 13),
        ("fourteen", 14),
        ("fifteen", 15),
        ("sixteen", 16),
        ("seventeen", 17),
        ("eighteen", 18),
        ("nineteen", 19),
    ],
    tens: &[
        ("twenty", 2),
        ("thirty", 3),
        ("forty", 4),
        ("fourty", 4),
        ("fifty", 5),
        ("sixty", 6),
        ("seventy", 7),
        ("eighty", 8),
        ("ninety", 9),
    ],
    joiners: &[],
    repeats: &[("double", 2), ("triple", 3)],
    magnitudes: &["hundred", "thousand", "million"],
    magnitude_parts: &[],
    fillers: &[
        "uh", "um", "umm", "er", "erm", "ah", "hmm", "okay", "ok", "so", "the", "code", "is",
        "it's", "its", "it", "my", "number", "and", "then", "please",
    ],
    example: "four two seven",
};

static ES: Lexicon = Lexicon {
    units: &[
        ("cero", 0),
        ("uno", 1),
        ("una", 1),
        ("un", 1),
        ("dos", 2),
        ("tres", 3),
        ("cuatro", 4),
        ("cinco", 5),
        ("seis", 6),
        ("siete", 7),
        ("ocho", 8),
        ("nueve", 9),
    ],
    homophones: &["un", "una"],
    teens: &[
        ("diez", 10),
        ("once", 11),
        ("doce", 12),
        ("trece", 13),
        ("catorce", 14),
        ("quince", 15),
        ("dieciseis", 16),
        ("diecisiete", 17),
        ("dieciocho", 18),
        ("diecinueve", 19),
    ],
    tens: &[
        ("veinte", 2),
        ("treinta", 3),
        ("cuarenta", 4),
        ("cincuenta", 5),
        ("sesenta", 6),
        ("setenta", 7),
        ("ochenta", 8),
        ("noventa", 9),
    ],
    joiners: &["y"],
    repeats: &[("doble", 2), ("triple", 3)],
    magnitudes: &["cien", "ciento", "mil", "millon"],
    magnitude_parts: &["cientos", "cientas", "quinientos", "quinientas"],
    fillers: &[
        "el", "la", "codigo", "es", "eh", "em", "este", "pues", "bueno", "numero", "mi", "y", "a",
        "ver", "entonces", "vale",
    ],
    example: "cuatro dos siete",
};

static PT: Lexicon = Lexicon {
    units: &[
        ("zero", 0),
        ("um", 1),
        ("uma", 1),
        ("dois", 2),
        ("duas", 2),
        ("tres", 3),
        ("quatro", 4),
        ("cinco", 5),
        ("seis", 6),
        // "Meia" (a half dozen) is how Brazilians say six in a number.
        ("meia", 6),
        ("sete", 7),
        ("oito", 8),
        ("nove", 9),
    ],
    homophones: &["um", "uma"],
    teens: &[
        ("dez", 10),
        ("onze", 11),
        ("doze", 12),
        ("treze", 13),
        ("catorze", 14),
        ("quatorze", 14),
        ("quinze", 15),
        ("dezesseis", 16),
        ("dezasseis", 16),
        ("dezeseis", 16),
        ("dezessete", 17),
        ("dezassete", 17),
        ("dezesete", 17),
        ("dezoito", 18),
        ("dezenove", 19),
        ("dezanove", 19),
    ],
    tens: &[
        ("vinte", 2),
        ("trinta", 3),
        ("quarenta", 4),
        ("cinquenta", 5),
        ("cincoenta", 5),
        ("sessenta", 6),
        ("setenta", 7),
        ("oitenta", 8),
        ("noventa", 9),
    ],
    joiners: &["e"],
    repeats: &[("duplo", 2), ("dupla", 2), ("triplo", 3), ("tripla", 3)],
    magnitudes: &["cem", "cento", "mil", "milhao"],
    magnitude_parts: &["centos", "centas", "quinhentos", "quinhentas"],
    fillers: &[
        "o", "a", "codigo", "e", "numero", "meu", "minha", "hum", "tipo", "entao", "ne", "bom",
        "eh",
    ],
    example: "quatro dois sete",
};

static FR: Lexicon = Lexicon {
    units: &[
        ("zero", 0),
        ("un", 1),
        ("une", 1),
        ("deux", 2),
        ("trois", 3),
        ("quatre", 4),
        ("cinq", 5),
        ("six", 6),
        ("sept", 7),
        ("huit", 8),
        ("neuf", 9),
    ],
    homophones: &["un", "six"],
    teens: &[
        ("dix", 10),
        ("onze", 11),
        ("douze", 12),
        ("treize", 13),
        ("quatorze", 14),
        ("quinze", 15),
        ("seize", 16),
        ("dixsept", 17),
        ("dixhuit", 18),
        ("dixneuf", 19),
    ],
    tens: &[
        ("vingt", 2),
        ("trente", 3),
        ("quarante", 4),
        ("cinquante", 5),
        ("soixante", 6),
        // Belgian and Swiss French.
        ("septante", 7),
        ("huitante", 8),
        ("octante", 8),
        ("nonante", 9),
    ],
    joiners: &["et"],
    repeats: &[("double", 2), ("triple", 3)],
    magnitudes: &["cent", "cents", "mille", "million"],
    magnitude_parts: &[],
    fillers: &[
        "le", "la", "code", "c'est", "est", "euh", "heu", "hum", "alors", "donc", "numero", "mon",
        "et", "bon", "ben", "voila", "ok",
    ],
    example: "quatre deux sept",
};

static DE: Lexicon = Lexicon {
    units: &[
        ("null", 0),
        ("eins", 1),
        ("ein", 1),
        ("eine", 1),
        ("zwei", 2),
        // What Germans say on the phone so "zwei" is not heard as "drei".
        ("zwo", 2),
        ("drei", 3),
        ("vier", 4),
        ("funf", 5),
        ("fuenf", 5),
        ("sechs", 6),
        ("sieben", 7),
        ("acht", 8),
        ("neun", 9),
    ],
    homophones: &["ein", "eine"],
    teens: &[
        ("zehn", 10),
        ("elf", 11),
        ("zwolf", 12),
        ("zwoelf", 12),
        ("dreizehn", 13),
        ("vierzehn", 14),
        ("funfzehn", 15),
        ("fuenfzehn", 15),
        ("sechzehn", 16),
        ("siebzehn", 17),
        ("achtzehn", 18),
        ("neunzehn", 19),
    ],
    tens: &[
        ("zwanzig", 2),
        ("dreissig", 3),
        ("dreisig", 3),
        ("vierzig", 4),
        ("funfzig", 5),
        ("fuenfzig", 5),
        ("sechzig", 6),
        ("siebzig", 7),
        ("achtzig", 8),
        ("neunzig", 9),
    ],
    joiners: &["und"],
    repeats: &[("doppel", 2), ("doppelt", 2), ("dreifach", 3)],
    magnitudes: &["hundert", "tausend", "million"],
    magnitude_parts: &["hundert", "tausend"],
    fillers: &[
        "der", "die", "das", "code", "ist", "ah", "ahm", "aehm", "aeh", "hm", "also", "nummer",
        "mein", "meine", "und", "ja", "okay", "ok",
    ],
    example: "vier zwei sieben",
};

static IT: Lexicon = Lexicon {
    units: &[
        ("zero", 0),
        ("uno", 1),
        ("una", 1),
        ("un", 1),
        ("due", 2),
        ("tre", 3),
        ("quattro", 4),
        ("cinque", 5),
        ("sei", 6),
        ("sette", 7),
        ("otto", 8),
        ("nove", 9),
    ],
    homophones: &["un", "una"],
    teens: &[
        ("dieci", 10),
        ("undici", 11),
        ("dodici", 12),
        ("tredici", 13),
        ("quattordici", 14),
        ("quindici", 15),
        ("sedici", 16),
        ("diciassette", 17),
        ("diciotto", 18),
        ("diciannove", 19),
    ],
    tens: &[
        ("venti", 2),
        ("trenta", 3),
        ("quaranta", 4),
        ("cinquanta", 5),
        ("sessanta", 6),
        ("settanta", 7),
        ("ottanta", 8),
        ("novanta", 9),
    ],
    joiners: &[],
    repeats: &[("doppio", 2), ("doppia", 2), ("triplo", 3), ("tripla", 3)],
    magnitudes: &["cento", "mille", "mila", "milione"],
    magnitude_parts: &["cento", "mila"],
    fillers: &[
        "il", "lo", "la", "codice", "e", "ehm", "eh", "allora", "cioe", "numero", "mio", "ecco",
        "dunque", "beh",
    ],
    example: "quattro due sette",
};

static HI: Lexicon = Lexicon {
    units: &[
        ("shunya", 0),
        ("shoonya", 0),
        ("sunya", 0),
        ("shunye", 0),
        ("shoonye", 0),
        ("shuny", 0),
        ("sifar", 0),
        ("sifr", 0),
        // Hindi speakers say "zero" as often as "shunya".
        ("zero", 0),
        ("ek", 1),
        ("aek", 1),
        ("ekk", 1),
        ("do", 2),
        ("doh", 2),
        ("teen", 3),
        ("tin", 3),
        ("tiin", 3),
        ("theen", 3),
        ("char", 4),
        ("chaar", 4),
        ("chahar", 4),
        ("paanch", 5),
        ("panch", 5),
        ("paanc", 5),
        ("paach", 5),
        ("pach", 5),
        ("chhe", 6),
        ("chhah", 6),
        ("chah", 6),
        ("chhai", 6),
        ("chhey", 6),
        ("chheh", 6),
        ("chha", 6),
        ("che", 6),
        ("cheh", 6),
        ("chhay", 6),
        // Not "saath": that is sixty.
        ("saat", 7),
        ("sat", 7),
        ("aath", 8),
        ("aat", 8),
        ("ath", 8),
        ("aathh", 8),
        ("nau", 9),
        ("nao", 9),
        ("nou", 9),
        ("naw", 9),
    ],
    homophones: &["do", "tin", "sat", "che", "zero"],
    teens: &[("das", 10), ("dus", 10)],
    tens: &[],
    joiners: &[],
    // Borrowed from English, as Hindi speakers read numbers.
    repeats: &[
        ("double", 2),
        ("dabal", 2),
        ("dubble", 2),
        ("dobal", 2),
        ("triple", 3),
        ("tripal", 3),
        ("tripple", 3),
    ],
    magnitudes: &["sau", "hazaar", "hazar", "lakh", "laakh"],
    magnitude_parts: &[],
    fillers: &[
        "mera", "meri", "code", "hai", "haan", "ha", "toh", "to", "ka", "ki", "ke", "number",
        "aur", "ye", "yeh", "hmm", "achha", "accha", "ji",
    ],
    example: "char do saat",
};
