//! What a notice says: the message every channel sends, its text and the
//! tracking link. Pure, so the wording is tested without a channel.

use crate::storage::ParcelContact;
use chrono::NaiveDate;
use doorcode_core::codes::Code;
use serde::Serialize;

/// One rendered message, as the file and webhook channels write it.
#[derive(Debug, Serialize)]
pub struct Message {
    pub channel: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub parcel_id: String,
    pub code: String,
    pub track_url: String,
}

pub fn track_url(base: &str, token: &str) -> String {
    format!("{}/track/{token}", base.trim_end_matches('/'))
}

/// The notice text: the parcel and its day, the code for this parcel only,
/// share only in person at the door, valid for that day, and what to do if
/// nothing was ordered.
pub fn render(p: &ParcelContact, date: NaiveDate, code: &Code, track: &str) -> (String, String) {
    let day = date.format("%A %-d %B %Y");
    let subject = format!("Your delivery code for parcel {} on {date}", p.parcel_id);
    // A later attempt follows a reissue or a day's close: the old code is void.
    let replaces = if p.attempt > 1 {
        "This is a new code: any code you received before for this parcel no longer works.\n\n"
    } else {
        ""
    };
    let body = format!(
        "Hello {name},\n\n\
         Your parcel {pid} is due to be delivered on {day} ({date}).\n\n\
         Your delivery code: {code}\n\n\
         {replaces}\
         - This code is for handing over parcel {pid} only.\n\
         - Share it only in person, with the courier at your door. Never give it out by phone, \
         by text message or through a link, whoever asks. We will never ask you for it.\n\
         - It is valid on {date} only. If the delivery moves to another day, you get a new code.\n\
         - If you did not order anything, do not share this code with anyone. Press \
         \"I did not order this\" on the tracking page: {track}#not-mine\n\n\
         Track your parcel: {track}\n",
        name = p.recipient_name,
        pid = p.parcel_id,
        code = code.expose(),
    );
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_says_everything() {
        let p = ParcelContact {
            parcel_id: "P-1".into(),
            recipient_name: "J. Doe".into(),
            email: None,
            phone: None,
            requires_code: true,
            status: crate::domain::ParcelState::Scheduled,
            delivery_date: None,
            attempt: 1,
            track_nonce: Some("n".into()),
        };
        let d = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let (s, b) = render(&p, d, &Code::new("123456").unwrap(), "http://x/track/t");
        assert!(s.contains("P-1") && s.contains("2026-11-23"));
        for needle in [
            "123456",
            "parcel P-1 only",
            "in person",
            "at your door",
            "phone",
            "text message",
            "link",
            "valid on 2026-11-23 only",
            "did not order",
            "Monday",
        ] {
            assert!(b.contains(needle), "missing {needle:?} in\n{b}");
        }
        assert!(
            b.contains("http://x/track/t#not-mine"),
            "links to the button"
        );
        assert!(
            !b.contains("no longer works"),
            "a first code replaces nothing"
        );
        let later = ParcelContact { attempt: 2, ..p };
        let (_, b) = render(&later, d, &Code::new("654321").unwrap(), "http://x/track/t");
        assert!(b.contains("any code you received before for this parcel no longer works"));
    }
}
