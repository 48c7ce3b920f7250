//! The board's data lifecycle pages: erasing a parcel's personal data behind
//! a confirmation page (the board's session, same-origin and CSRF rules, as
//! every board form), and the per-day statistics table (the numbers of
//! `GET /v1/stats`). A child of `board`, so it shares the board's session
//! and CSRF checks rather than repeating them.

use super::*;
use crate::domain::lifecycle::{DayStats, MAX_STATS_DAYS};

/// Days the statistics table shows when no range is given.
const DEFAULT_STATS_DAYS: i64 = 14;

/// The board's entry points, shown in its tools.
pub(super) fn tools() -> String {
    "<section aria-labelledby=\"data-h\"><h2 id=\"data-h\">Customer data</h2>\
<form method=\"get\" action=\"/board/erase\" class=\"stack\"><label for=\"erase-id\">Parcel id</label>\
<input id=\"erase-id\" name=\"parcel_id\" required maxlength=\"64\">\
<button type=\"submit\">Erase personal data…</button></form>\
<p><a href=\"/board/stats\">Statistics per day</a></p></section>"
        .to_string()
}

#[derive(Deserialize, Default)]
pub struct EraseQuery {
    parcel_id: Option<String>,
}

/// The confirmation step: what will go, what stays, and the form that erases.
pub async fn get_erase(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<EraseQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&app, &headers).await else {
        return login_page(StatusCode::OK, None);
    };
    let pid = q.ok().and_then(|Query(q)| q.parcel_id).unwrap_or_default();
    if crate::validate::id(&pid, "parcel_id").is_err() {
        return plain(StatusCode::BAD_REQUEST, "No parcel", "Give a parcel id.");
    }
    let parcel = match app.storage.parcel(&pid).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                "Unknown parcel",
                "There is no parcel with this id (it may have been erased already).",
            );
        }
        Err(e) => return oops(e.into()),
    };
    let open = parcel.status.is_open();
    let force = if open {
        "<p class=\"error\">This parcel is still out for delivery. Erasing it also voids its code: \
the courier can no longer hand it over with it.</p>\
<label><input type=\"checkbox\" name=\"force\" value=\"true\" required> Void the code and erase</label>"
    } else {
        ""
    };
    let body = format!(
        "<header class=\"bar\"><p class=\"brand\">doorcode <span>dispatch</span></p></header>\
<main id=\"main\"><h1>Erase the personal data of parcel {id}?</h1>\
<p>State: <span class=\"badge st-{st}\">{st}</span>, recipient {who}, {addr}.</p>\
<p>The recipient's name, email, phone and address go now, with the parcel's notices, history, \
confirmations, signals, route entries and stored manifests. This cannot be undone. \
What stays is an anonymous record (parcel id, day, final state, attempt, signal kinds) for statistics.</p>\
<form method=\"post\" action=\"/board/erase\" class=\"stack\">{csrf}\
<input type=\"hidden\" name=\"parcel_id\" value=\"{id}\"><input type=\"hidden\" name=\"confirm\" value=\"erase\">\
{force}<button type=\"submit\" class=\"danger\" data-erase=\"{id}\">Erase personal data</button></form>\
<p><a href=\"/board\">Back to the board</a></p></main>",
        id = esc(&parcel.parcel_id),
        st = esc(parcel.status.as_str()),
        who = esc(&parcel.recipient_name),
        addr = esc(&parcel.address),
        csrf = csrf_field(&csrf),
    );
    html(StatusCode::OK, page("Erase personal data", &body, false))
}

#[derive(Deserialize)]
pub struct EraseForm {
    pub(super) csrf: Option<String>,
    parcel_id: Option<String>,
    /// Set by the confirmation page's form only.
    confirm: Option<String>,
    force: Option<String>,
}

pub async fn post_erase(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<EraseForm>, FormRejection>,
) -> Response {
    let Some(f) = checked_form(&app, &headers, form).await else {
        return forbidden();
    };
    let Some(pid) = f.parcel_id.filter(|p| !p.is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "No parcel", "Choose a parcel.");
    };
    if f.confirm.as_deref() != Some("erase") {
        // Only the confirmation page's form erases.
        return see_other(&format!("/board/erase?parcel_id={}", url_part(&pid)));
    }
    let force = f.force.as_deref() == Some("true");
    match crate::retention::erase(&app, &pid, force)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => {
            tracing::info!(parcel_id = %pid, "personal data erased from the board");
            see_other("/board?done=erased")
        }
        Err(e) if e.status.is_client_error() => plain(
            e.status,
            "Not erased",
            &format!("Could not erase {}: {}", pid, e.message),
        ),
        Err(e) => oops(e),
    }
}

/// Percent-encode what is not unreserved (for a parcel id in a query).
fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
}

fn stats_rows(days: &[DayStats]) -> String {
    let words = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "–".to_string()
        } else {
            m.iter()
                .map(|(k, n)| format!("{} {n}", esc(k)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    days.iter()
        .map(|d| {
            format!(
                "<tr><td>{day}</td><td>{p}</td><td>{del}</td><td>{dis}</td><td>{failed}</td><td>{open}</td><td>{held}</td><td>{sig}</td></tr>",
                day = d.day,
                p = d.parcels,
                del = d.delivered,
                dis = d.disputed,
                failed = words(&d.failed),
                open = d.open,
                held = d.held,
                sig = words(&d.signals),
            )
        })
        .collect()
}

/// The per-day table: the same numbers as `GET /v1/stats`.
pub async fn get_stats(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Response {
    if session(&app, &headers).await.is_none() {
        return login_page(StatusCode::OK, None);
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let parse = |s: Option<&str>| s.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let to = parse(q.to.as_deref()).unwrap_or_else(|| today(&app));
    let from = parse(q.from.as_deref())
        .unwrap_or_else(|| to - chrono::Duration::days(DEFAULT_STATS_DAYS - 1));
    let days = match crate::retention::stats(&app, from, to)
        .await
        .map_err(ApiError::from)
    {
        Ok(d) => d,
        Err(e) if e.status.is_client_error() => {
            return plain(
                e.status,
                "Bad range",
                &format!(
                    "Choose a range of at most {MAX_STATS_DAYS} days, from before to. ({})",
                    e.message
                ),
            );
        }
        Err(e) => return oops(e),
    };
    let body = format!(
        "<header class=\"bar\"><p class=\"brand\">doorcode <span>dispatch</span></p></header>\
<main id=\"main\" class=\"wide\"><h1>Statistics from {from} to {to}</h1>\
<form method=\"get\" action=\"/board/stats\" class=\"filters\">\
<label>From <input type=\"date\" name=\"from\" value=\"{from}\"></label>\
<label>To <input type=\"date\" name=\"to\" value=\"{to}\"></label><button type=\"submit\">Show</button></form>\
<p class=\"muted\">From the anonymous records: days whose personal data is gone still count.</p>\
<div class=\"scroll\"><table id=\"stats\"><thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Parcels</th>\
<th scope=\"col\">Delivered</th><th scope=\"col\">Disputed</th><th scope=\"col\">Failed</th>\
<th scope=\"col\">Not confirmed</th><th scope=\"col\">Held</th><th scope=\"col\">Signals</th></tr></thead><tbody>{rows}</tbody></table></div>\
<p><a href=\"/board\">Back to the board</a></p></main>",
        rows = stats_rows(&days),
    );
    html(StatusCode::OK, page("Statistics", &body, false))
}
