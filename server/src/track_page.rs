//! The customer's tracking page: minimal, self-contained HTML. A richer page
//! comes later; keep it in this one module.

use crate::api::TrackView;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub fn render(t: &TrackView) -> String {
    let day = t
        .delivery_date
        .map(|d| d.to_string())
        .unwrap_or_else(|| "not scheduled yet".into());
    let code = match &t.code {
        Some(c) => format!(
            "<p class=\"code\">Your delivery code: <strong>{}</strong></p>",
            esc(c)
        ),
        None => "<p>No delivery code is shown right now.</p>".into(),
    };
    let safety: String = t
        .safety
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><meta name=\"robots\" content=\"noindex\">\
<title>Parcel {pid}</title></head><body>\
<h1>Parcel {pid}</h1><p>Status: <strong>{status}</strong></p><p>Delivery day: {day}</p>{code}\
<ul>{safety}</ul></body></html>\n",
        pid = esc(&t.parcel_id),
        status = esc(&t.status),
    )
}
