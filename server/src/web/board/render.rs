//! The board's HTML: the page, and the part `/board/live` refreshes.

use super::*;

pub(super) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

pub(super) fn signal_rows(list: &[&Signal]) -> String {
    if list.is_empty() {
        return "<p class=\"empty\">None.</p>".into();
    }
    let rows: String = list
        .iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.at.format("%Y-%m-%d %H:%M").to_string()),
                esc(s.kind.as_str()),
                esc(s.parcel_id.as_deref().unwrap_or("")),
                esc(s.device_id.as_deref().unwrap_or("")),
                esc(&s.detail)
            )
        })
        .collect();
    format!(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">At (UTC)</th><th scope=\"col\">Kind</th>\
<th scope=\"col\">Parcel</th><th scope=\"col\">Device</th><th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

/// The refreshing part of the board.
pub(super) fn live(date: NaiveDate, q: &BoardQuery, d: &Day, csrf: &str) -> String {
    let ds = date.to_string();
    // Counts by state.
    let mut counts: BTreeMap<&str, usize> =
        ParcelState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for p in &d.parcels {
        if let Some(c) = counts.get_mut(p.status.as_str()) {
            *c += 1;
        }
    }
    let summary: String = ParcelState::ALL
        .iter()
        .map(|s| s.as_str())
        .map(|s| {
            format!(
                "<li class=\"st-{s}\"><span class=\"n\">{}</span> {s}</li>",
                counts.get(s).copied().unwrap_or(0)
            )
        })
        .collect();
    // Per-courier progress.
    let mut routes = String::new();
    for (rid, courier) in &d.couriers {
        let on: Vec<&ParcelView> = d
            .parcels
            .iter()
            .filter(|p| p.route_id.as_deref() == Some(rid))
            .collect();
        let total = on.len();
        let count = |s: ParcelState| on.iter().filter(|p| p.status == s).count();
        let delivered = count(ParcelState::Delivered);
        let failed = count(ParcelState::Failed);
        let disputed = count(ParcelState::Disputed);
        routes.push_str(&format!(
            "<li class=\"route\"><div class=\"rhead\"><strong>{c}</strong> <span class=\"muted\">route {r}</span>\
<span class=\"rcount\">{delivered} of {total} delivered</span></div>\
<progress max=\"{total}\" value=\"{delivered}\" aria-label=\"{c}: {delivered} of {total} delivered\"></progress>\
<p class=\"muted\">{failed} failed, {disputed} disputed</p></li>",
            c = esc(courier),
            r = esc(rid),
        ));
    }
    if routes.is_empty() {
        routes = "<li class=\"empty\">No routes on this day.</li>".into();
    }
    // Parcels, filtered.
    let want_status = q.status.as_deref().and_then(ParcelState::parse);
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let shown: Vec<&ParcelView> = d
        .parcels
        .iter()
        .filter(|p| want_status.is_none_or(|s| p.status == s))
        .filter(|p| {
            needle.as_deref().is_none_or(|n| {
                p.parcel_id.to_lowercase().contains(n)
                    || p.recipient_name.to_lowercase().contains(n)
                    || p.address.to_lowercase().contains(n)
            })
        })
        .collect();
    let rows: String = shown
        .iter()
        .map(|p| {
            let courier = p
                .route_id
                .as_ref()
                .and_then(|r| d.couriers.get(r))
                .map(String::as_str)
                .unwrap_or("");
            format!(
                "<tr><td>{id}</td><td><span class=\"badge st-{st}\">{st}</span>{lock}</td><td>{who}</td><td>{addr}</td>\
<td>{courier}</td><td>{att}</td><td>{wrong}</td></tr>",
                id = esc(&p.parcel_id),
                st = esc(p.status.as_str()),
                lock = if p.locked { " <span class=\"badge locked\">locked</span>" } else { "" },
                who = esc(&p.recipient_name),
                addr = esc(&p.address),
                courier = esc(courier),
                att = p.attempt,
                wrong = p.wrong_tries,
            )
        })
        .collect();
    let table = if shown.is_empty() {
        "<p class=\"empty\">No parcels match.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table id=\"parcels\"><thead><tr><th scope=\"col\">Parcel</th><th scope=\"col\">State</th>\
<th scope=\"col\">Recipient</th><th scope=\"col\">Address</th><th scope=\"col\">Courier</th><th scope=\"col\">Attempt</th>\
<th scope=\"col\">Wrong tries</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    // Locked, disputed or held parcels: dispatch decides, reissue is one
    // click (for a held parcel it is the release, with a new code).
    let attention: String = d
        .parcels
        .iter()
        .filter(|p| {
            p.locked || matches!(p.status, ParcelState::Disputed | ParcelState::Held)
        })
        .map(|p| {
            let why = if p.status == ParcelState::Held {
                "held: the customer says they did not order it".to_string()
            } else if p.locked {
                format!("locked after {} wrong tries", p.wrong_tries)
            } else {
                "disputed delivery".to_string()
            };
            format!(
                "<li><strong>{id}</strong> <span class=\"muted\">{why}</span>\
<form method=\"post\" action=\"/board/reissue\" class=\"inline\">{csrf}\
<input type=\"hidden\" name=\"parcel_id\" value=\"{id}\"><input type=\"hidden\" name=\"date\" value=\"{ds}\">\
<button type=\"submit\" data-reissue=\"{id}\">Reissue code</button></form></li>",
                id = esc(&p.parcel_id),
                why = esc(&why),
                csrf = csrf_field(csrf),
                ds = esc(&ds),
            )
        })
        .collect();
    let attention = if attention.is_empty() {
        "<p class=\"empty\">No locked, disputed or held parcels.</p>".to_string()
    } else {
        format!("<ul class=\"attention\">{attention}</ul>")
    };
    let (disputes, signals): (Vec<&Signal>, Vec<&Signal>) =
        d.signals.iter().partition(|s| s.kind.is_dispute());
    // The day's signals page by page, oldest first.
    let mut pages = String::new();
    if q.signals.is_some() {
        pages.push_str(&format!(
            "<a href=\"/board?date={ds}\" data-signals-page=\"first\">First signals of the day</a> "
        ));
    }
    if let Some(next) = d.next {
        pages.push_str(&format!(
            "<a href=\"/board?date={ds}&amp;signals={c}\" data-signals-page=\"next\">Later signals</a>",
            c = next.encode()
        ));
    }
    let pages = if pages.is_empty() {
        String::new()
    } else {
        format!("<p class=\"pages\">{pages}</p>")
    };
    format!(
        "<section aria-labelledby=\"sum-h\"><h2 id=\"sum-h\">Parcels on {ds_e}</h2><ul class=\"summary\">{summary}</ul></section>\
<section aria-labelledby=\"routes-h\"><h2 id=\"routes-h\">Routes</h2><ul class=\"routes\">{routes}</ul></section>\
<section aria-labelledby=\"att-h\"><h2 id=\"att-h\">Locked and disputed parcels</h2>{attention}</section>\
<section aria-labelledby=\"list-h\"><h2 id=\"list-h\">Parcels ({n} shown)</h2>{table}</section>\
<section aria-labelledby=\"disp-h\"><h2 id=\"disp-h\">Disputes</h2>{dt}</section>\
<section aria-labelledby=\"sig-h\"><h2 id=\"sig-h\">Fraud signals</h2>{st}{pages}</section>",
        ds_e = esc(&ds),
        n = shown.len(),
        dt = signal_rows(&disputes),
        st = signal_rows(&signals),
    )
}

pub(super) fn board_page(
    date: NaiveDate,
    q: &BoardQuery,
    d: &Day,
    csrf: &str,
    notice: Option<String>,
) -> String {
    let ds = date.to_string();
    let opts: String = std::iter::once(("", "all states"))
        .chain(ParcelState::ALL.iter().map(|s| (s.as_str(), s.as_str())))
        .map(|(v, label)| {
            let sel = if q.status.as_deref().unwrap_or("") == v {
                " selected"
            } else {
                ""
            };
            format!("<option value=\"{v}\"{sel}>{label}</option>")
        })
        .collect();
    let notice = notice
        .map(|n| format!("<div class=\"note\" role=\"status\">{n}</div>"))
        .unwrap_or_default();
    let body = format!(
        "<header class=\"bar\"><p class=\"brand\">doorcode <span>dispatch</span></p>\
<form method=\"post\" action=\"/board/logout\">{csrf}<button type=\"submit\" class=\"link\">Sign out</button></form></header>\
<main id=\"main\" class=\"wide\"><h1>Board for {ds_e}</h1>{notice}\
<form method=\"get\" action=\"/board\" class=\"filters\" role=\"search\">\
<label>Day <input type=\"date\" name=\"date\" value=\"{ds_e}\"></label>\
<label>State <select name=\"status\">{opts}</select></label>\
<label>Search <input type=\"search\" name=\"q\" value=\"{qv}\" placeholder=\"parcel, name, address\"></label>\
<button type=\"submit\">Show</button></form>\
<div id=\"live\" aria-live=\"polite\">{live}</div>\
<p class=\"muted\" id=\"updated\">Updates every few seconds.</p>\
<div class=\"tools\">\
<section aria-labelledby=\"enr-h\"><h2 id=\"enr-h\">Enroll a courier's handset</h2>\
<form method=\"post\" action=\"/board/enroll\" class=\"stack\">{csrf}<label for=\"courier\">Courier id</label>\
<input id=\"courier\" name=\"courier_id\" required maxlength=\"100\"><button type=\"submit\">Create enrollment code</button></form></section>\
<section aria-labelledby=\"close-h\"><h2 id=\"close-h\">Close the day</h2>\
<p>Undelivered parcels of {ds_e} move to the next working day with a new code; customers get a new notice.</p>\
<form method=\"post\" action=\"/board/close-day\">{csrf}<input type=\"hidden\" name=\"date\" value=\"{ds_e}\">\
<button type=\"submit\" class=\"danger\">Close {ds_e}</button></form></section>{data}{devices}</div>\
</main><footer><p>doorcode dispatch board</p></footer>",
        csrf = csrf_field(csrf),
        ds_e = esc(&ds),
        qv = esc(q.q.as_deref().unwrap_or("")),
        live = live(date, q, d, csrf),
        data = super::lifecycle::tools(),
        devices = super::devices::tools(),
    );
    page(&format!("Board {ds}"), &body, true)
}
