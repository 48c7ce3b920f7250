//! The web pages as a browser sees them: form bodies, a client that does not
//! follow redirects, a page with its headers, a form field, the board's
//! session cookie.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// `application/x-www-form-urlencoded` bodies (reqwest's `form` feature is off).
pub trait FormBody {
    fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k.as_ref()), urlencode(v.as_ref())))
            .collect();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn page(c: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = c.get(url).send().await.unwrap();
    let st = r.status().as_u16();
    let h = r.headers().clone();
    (st, h, r.text().await.unwrap())
}

pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The value of `name="<field>" value="…"` in a page.
pub fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The session cookie a login set (its `name=value` pair).
pub fn session_cookie(h: &reqwest::header::HeaderMap) -> String {
    header(h, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// GET `url` with the session cookie.
pub async fn get_with_cookie(c: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    c.get(url).header("cookie", cookie).send().await.unwrap()
}

/// POST a form to `url`, with the session cookie when given.
pub async fn post_form<K: AsRef<str>, V: AsRef<str>>(
    c: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    form: &[(K, V)],
) -> reqwest::Response {
    let mut r = c.post(url);
    if let Some(cookie) = cookie {
        r = r.header("cookie", cookie);
    }
    r.form_body(form).send().await.unwrap()
}
