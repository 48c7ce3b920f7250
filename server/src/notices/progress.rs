//! A notice's progress across its channels, kept in the outbox row's
//! `last_error` so a retry sends only on the channels that failed; apart
//! from the sender so the stored format has one reader and one writer.

/// Characters of one channel's error kept in the outbox (a server's reply
/// can be long).
const MAX_ERROR: usize = 300;

/// What an attempt at a notice left: the channels it reached, and the error
/// of each it did not, as stored in the notice's `last_error`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: Vec<String>,
    pub errors: Vec<(String, String)>,
}

impl Progress {
    /// The channels a stored `last_error` says were reached; anything else
    /// (an older error text, none) reached none.
    pub fn read(last_error: Option<&str>) -> Self {
        let done = last_error
            .and_then(|e| e.strip_prefix("done="))
            .map(|rest| rest.split(';').next().unwrap_or(""))
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|k| {
                        !k.is_empty()
                            && k.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    })
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            done,
            errors: Vec::new(),
        }
    }

    /// The text for `last_error`: `done=KEY,…; KEY: error; …`.
    pub fn text(&self) -> String {
        let errors = self
            .errors
            .iter()
            .map(|(k, e)| format!("{k}: {}", e.chars().take(MAX_ERROR).collect::<String>()))
            .collect::<Vec<_>>()
            .join("; ");
        if self.done.is_empty() {
            errors
        } else {
            format!("done={}; {errors}", self.done.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips() {
        let p = Progress {
            done: vec!["smtp-0011aabb".into(), "file-22334455".into()],
            errors: vec![("webhook-99887766".into(), "webhook answered 500".into())],
        };
        let t = p.text();
        assert_eq!(
            t,
            "done=smtp-0011aabb,file-22334455; webhook-99887766: webhook answered 500"
        );
        assert_eq!(Progress::read(Some(&t)).done, p.done);
        let none = Progress {
            done: vec![],
            errors: vec![("smtp-0011aabb".into(), "x".repeat(5000))],
        };
        assert!(none.text().len() < 400, "errors are capped");
        assert!(Progress::read(Some(&none.text())).done.is_empty());
        assert!(Progress::read(Some("superseded")).done.is_empty());
        assert!(Progress::read(None).done.is_empty());
        assert_eq!(
            Progress::read(Some("done=a-1,BAD KEY,b-2")).done,
            vec!["a-1".to_string(), "b-2".to_string()]
        );
    }
}
