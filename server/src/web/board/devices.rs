//! The board's handsets page: a courier's devices with when they enrolled
//! and were last seen, and a revoke button for a lost or stolen one (the
//! board's session, same-origin and CSRF rules, as every board form). The
//! same storage calls as `GET /v1/devices` and `POST /v1/devices/{id}/revoke`.

use super::*;

/// The board's entry point, shown in its tools.
pub(super) fn tools() -> String {
    "<section aria-labelledby=\"dev-h\"><h2 id=\"dev-h\">Handsets</h2>\
<form method=\"get\" action=\"/board/devices\" class=\"stack\"><label for=\"dev-courier\">Courier id</label>\
<input id=\"dev-courier\" name=\"courier_id\" required maxlength=\"64\">\
<button type=\"submit\">Show handsets</button></form></section>"
        .to_string()
}

#[derive(Deserialize, Default)]
pub struct DevicesQuery {
    courier_id: Option<String>,
    done: Option<String>,
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub async fn get_devices(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<DevicesQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&app, &headers).await else {
        return login_page(StatusCode::OK, None);
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let courier = q.courier_id.unwrap_or_default();
    if crate::validate::id(&courier, "courier_id").is_err() {
        return plain(StatusCode::BAD_REQUEST, "No courier", "Give a courier id.");
    }
    let devices = match app.storage.devices_of_courier(&courier).await {
        Ok(d) => d,
        Err(e) => return oops(e.into()),
    };
    let rows: String = devices
        .iter()
        .map(|d| {
            let action = match d.revoked_at {
                Some(t) => format!("revoked {}", esc(&when(t))),
                None => format!(
                    "<form method=\"post\" action=\"/board/revoke\" class=\"inline\">{csrf}\
<input type=\"hidden\" name=\"device_id\" value=\"{id}\"><input type=\"hidden\" name=\"courier_id\" value=\"{c}\">\
<button type=\"submit\" class=\"danger\" data-revoke=\"{id}\">Revoke</button></form>",
                    csrf = csrf_field(&csrf),
                    id = esc(&d.device_id),
                    c = esc(&courier),
                ),
            };
            format!(
                "<tr><td>{name}</td><td><code>{id}</code></td><td>{enrolled}</td><td>{seen}</td><td>{action}</td></tr>",
                name = esc(&d.name),
                id = esc(&d.device_id),
                enrolled = esc(&when(d.enrolled_at)),
                seen = esc(&when(d.last_seen_at)),
            )
        })
        .collect();
    let note = match q.done.as_deref() {
        Some("revoked") => {
            "<p class=\"note\" role=\"status\">Handset revoked: its token no longer works anywhere.</p>"
        }
        _ => "",
    };
    let table = if devices.is_empty() {
        "<p class=\"empty\">No handsets enrolled for this courier.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table id=\"devices\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Device</th>\
<th scope=\"col\">Enrolled</th><th scope=\"col\">Last seen</th><th scope=\"col\"></th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let body = format!(
        "<header class=\"bar\"><p class=\"brand\">doorcode <span>dispatch</span></p></header>\
<main id=\"main\"><h1>Handsets of courier {c}</h1>{note}{table}\
<p>Revoke a handset that is lost or stolen: its token then answers 401 on every device request, on every node, \
and it gets no more manifests. Enroll a new one from the board.</p>\
<p><a href=\"/board\">Back to the board</a></p></main>",
        c = esc(&courier),
    );
    html(StatusCode::OK, page("Handsets", &body, false))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    pub(super) csrf: Option<String>,
    device_id: Option<String>,
    courier_id: Option<String>,
}

pub async fn post_revoke(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let Some(f) = checked_form(&app, &headers, form).await else {
        return forbidden();
    };
    let (Some(id), Some(courier)) = (f.device_id, f.courier_id) else {
        return plain(StatusCode::BAD_REQUEST, "No handset", "Choose a handset.");
    };
    if crate::validate::id(&id, "device_id").is_err()
        || crate::validate::id(&courier, "courier_id").is_err()
    {
        return plain(StatusCode::BAD_REQUEST, "No handset", "Choose a handset.");
    }
    match app.storage.revoke_device(&id, app.cfg.now()).await {
        Ok(true) => {
            tracing::info!(device_id = %id, "device revoked from the board");
            see_other(&format!(
                "/board/devices?courier_id={}&done=revoked",
                courier.replace('#', "%23")
            ))
        }
        Ok(false) => plain(
            StatusCode::NOT_FOUND,
            "Unknown handset",
            "There is no such handset.",
        ),
        Err(e) => oops(e.into()),
    }
}
