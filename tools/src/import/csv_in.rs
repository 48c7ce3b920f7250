//! Reading and checking the two CSV files before anything is sent: every bad
//! row is reported with its line number, so a file is fixed in one pass.
//!
//! The checks are the server's own input rules (`doorcode_server::validate`)
//! plus what a CSV can get wrong and JSON cannot (a missing column, a number
//! with a decimal comma, a stop with two addresses).

use doorcode_core::manifest::{MAX_PARCELS, MAX_STOPS};
use doorcode_core::wire::{ParcelIn, Recipient, RouteIn, StopIn};
use doorcode_server::validate;
use std::collections::HashMap;
use std::path::Path;

/// One problem in a file, where a person can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub file: String,
    /// 1-based line of the file (a quoted field may span lines: its first).
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{} line {}: {}", self.file, self.line, self.message)
        }
    }
}

/// A parcel row, with the line it came from.
#[derive(Debug, Clone)]
pub struct ParcelRow {
    pub line: u64,
    pub parcel: ParcelIn,
}

/// A route put together from its rows.
#[derive(Debug, Clone)]
pub struct RouteRows {
    /// The lines of its rows, for messages about the whole route.
    pub lines: Vec<u64>,
    pub route: RouteIn,
}

pub const PARCEL_COLUMNS: &[&str] = &[
    "parcel_id",
    "recipient_name",
    "address",
    "value",
    "currency",
];
pub const PARCEL_OPTIONAL: &[&str] = &["email", "phone", "requires_code"];
pub const ROUTE_COLUMNS: &[&str] = &[
    "route_id",
    "courier_id",
    "delivery_date",
    "stop_id",
    "address",
    "parcel_id",
];
pub const ROUTE_OPTIONAL: &[&str] = &["recipient"];

/// A file's rows by column name.
struct Table {
    file: String,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn cell<'a>(&self, rec: &'a csv::StringRecord, column: &str) -> &'a str {
        self.columns
            .get(column)
            .and_then(|&i| rec.get(i))
            .map(str::trim)
            .unwrap_or("")
    }
}

fn err(file: &str, line: u64, message: impl Into<String>) -> RowError {
    RowError {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// Reads a whole file (RFC 4180: quoted fields may hold commas, quotes and
/// line breaks; UTF-8, a leading byte order mark is fine) and checks its
/// header names the columns this file needs and no others.
fn read_table(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    errors: &mut Vec<RowError>,
) -> Option<Table> {
    let file = path.display().to_string();
    let mut reader = match csv::ReaderBuilder::new().flexible(false).from_path(path) {
        Ok(r) => r,
        Err(e) => {
            errors.push(err(&file, 0, format!("cannot open it: {}", io_reason(&e))));
            return None;
        }
    };
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            errors.push(err(
                &file,
                1,
                format!("unreadable header: {}", csv_reason(&e)),
            ));
            return None;
        }
    };
    let mut columns = HashMap::new();
    let mut bad_header = false;
    for (i, name) in header.iter().enumerate() {
        let name = name
            .trim()
            .trim_start_matches('\u{feff}')
            .to_ascii_lowercase();
        if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
            errors.push(err(
                &file,
                1,
                format!(
                    "unknown column {name:?}: the columns are {} (optional: {})",
                    required.join(", "),
                    optional.join(", ")
                ),
            ));
            bad_header = true;
        } else if columns.insert(name.clone(), i).is_some() {
            errors.push(err(&file, 1, format!("column {name:?} appears twice")));
            bad_header = true;
        }
    }
    for need in required {
        if !columns.contains_key(*need) {
            errors.push(err(
                &file,
                1,
                format!("the header has no {need:?} column; the first line must name the columns"),
            ));
            bad_header = true;
        }
    }
    if bad_header {
        return None;
    }
    let mut rows = Vec::new();
    for rec in reader.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map(csv::Position::line).unwrap_or(0);
                // A blank line at the end of a file is not a row.
                if r.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push((line, r));
            }
            Err(e) => {
                let line = e.position().map(csv::Position::line).unwrap_or(0);
                errors.push(err(&file, line, csv_reason(&e)));
            }
        }
    }
    Some(Table {
        file,
        columns,
        rows,
    })
}

fn io_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "not UTF-8 text; save the file as UTF-8 (\"CSV UTF-8\" in spreadsheets)".into()
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "{len} fields where the header has {expected_len}; quote fields that hold commas"
        ),
        _ => e.to_string(),
    }
}

fn optional(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_requires_code(s: &str) -> Result<Option<bool>, String> {
    match s.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "1" => Ok(Some(true)),
        "false" | "no" | "0" => Ok(Some(false)),
        _ => Err(format!(
            "requires_code {s:?} must be true or false (or empty: the server's value threshold decides)"
        )),
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| {
        if s.contains(',') {
            format!("value {s:?} is not a number: write decimals with a dot, e.g. 49.90")
        } else {
            format!("value {s:?} is not a number, e.g. 49.90")
        }
    })?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("value {s:?} must be a finite number >= 0"));
    }
    Ok(v)
}

fn check_currency(s: &str) -> Result<(), String> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "currency {s:?} must be a 3-letter ISO 4217 code in capitals, e.g. EUR"
        ))
    }
}

/// Every row of a parcels file, or every problem in it.
pub fn read_parcels(path: &Path) -> Result<Vec<ParcelRow>, Vec<RowError>> {
    let mut errors = Vec::new();
    let Some(t) = read_table(path, PARCEL_COLUMNS, PARCEL_OPTIONAL, &mut errors) else {
        return Err(errors);
    };
    let mut out = Vec::with_capacity(t.rows.len());
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (line, rec) in &t.rows {
        let line = *line;
        let mut row_errors = Vec::new();
        let parcel_id = t.cell(rec, "parcel_id");
        let name = t.cell(rec, "recipient_name");
        let address = t.cell(rec, "address");
        let email = t.cell(rec, "email");
        let phone = t.cell(rec, "phone");
        let currency = t.cell(rec, "currency");
        let mut check = |r: Result<(), String>| {
            if let Err(m) = r {
                row_errors.push(m);
            }
        };
        check(validate::id(parcel_id, "parcel_id"));
        check(validate::text(name, "recipient_name"));
        check(validate::text(address, "address"));
        if !email.is_empty() {
            check(validate::email(email, "email"));
        }
        if !phone.is_empty() {
            check(validate::phone(phone, "phone"));
        }
        check(check_currency(currency));
        let value = parse_value(t.cell(rec, "value"));
        let requires_code = parse_requires_code(t.cell(rec, "requires_code"));
        if let Err(m) = &value {
            row_errors.push(m.clone());
        }
        if let Err(m) = &requires_code {
            row_errors.push(m.clone());
        }
        if !parcel_id.is_empty() {
            if let Some(first) = first_line.get(parcel_id) {
                row_errors.push(format!(
                    "parcel {parcel_id} is already on line {first}; a parcel has one row"
                ));
            } else {
                first_line.insert(parcel_id.to_string(), line);
            }
        }
        match (row_errors.is_empty(), value, requires_code) {
            (true, Ok(value), Ok(requires_code)) => out.push(ParcelRow {
                line,
                parcel: ParcelIn {
                    parcel_id: parcel_id.to_string(),
                    recipient: Recipient {
                        name: name.to_string(),
                        email: optional(email),
                        phone: optional(phone),
                    },
                    address: address.to_string(),
                    value,
                    currency: currency.to_string(),
                    requires_code,
                },
            }),
            _ => errors.extend(row_errors.into_iter().map(|m| err(&t.file, line, m))),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(err(
            &t.file,
            0,
            "no parcels: the file has a header and no rows",
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A route of the file while its rows are read.
struct Building {
    lines: Vec<u64>,
    courier_id: String,
    /// Stops in the order of their first row; address and line of that row.
    stops: Vec<(String, String, Option<String>, Vec<String>)>,
    stop_index: HashMap<String, (usize, u64)>,
}

/// Every route of a routes file (one row per parcel on a stop), or every
/// problem in it. A route is one `route_id` on one `delivery_date`; its stops
/// and their parcels keep the order of the rows.
pub fn read_routes(path: &Path) -> Result<Vec<RouteRows>, Vec<RowError>> {
    let mut errors = Vec::new();
    let Some(t) = read_table(path, ROUTE_COLUMNS, ROUTE_OPTIONAL, &mut errors) else {
        return Err(errors);
    };
    let mut order: Vec<(String, chrono::NaiveDate)> = Vec::new();
    let mut routes: HashMap<(String, chrono::NaiveDate), Building> = HashMap::new();
    // A parcel is on one stop of one route per day.
    let mut placed: HashMap<(String, chrono::NaiveDate), u64> = HashMap::new();
    for (line, rec) in &t.rows {
        let line = *line;
        let mut row_errors = Vec::new();
        let route_id = t.cell(rec, "route_id");
        let courier_id = t.cell(rec, "courier_id");
        let stop_id = t.cell(rec, "stop_id");
        let address = t.cell(rec, "address");
        let parcel_id = t.cell(rec, "parcel_id");
        let recipient = t.cell(rec, "recipient");
        let date_text = t.cell(rec, "delivery_date");
        let recipient_check = if recipient.is_empty() {
            Ok(())
        } else {
            validate::text(recipient, "recipient")
        };
        for r in [
            validate::id(route_id, "route_id"),
            validate::id(courier_id, "courier_id"),
            validate::id(stop_id, "stop_id"),
            validate::text(address, "address"),
            validate::id(parcel_id, "parcel_id"),
            recipient_check,
        ] {
            if let Err(m) = r {
                row_errors.push(m);
            }
        }
        let date = chrono::NaiveDate::parse_from_str(date_text, "%Y-%m-%d").ok();
        if date.is_none() {
            row_errors.push(format!(
                "delivery_date {date_text:?} must be a date written YYYY-MM-DD, e.g. 2026-12-01"
            ));
        }
        let Some(date) = date.filter(|_| row_errors.is_empty()) else {
            errors.extend(row_errors.into_iter().map(|m| err(&t.file, line, m)));
            continue;
        };
        if let Some(first) = placed.get(&(parcel_id.to_string(), date)) {
            errors.push(err(
                &t.file,
                line,
                format!("parcel {parcel_id} is already on line {first} for {date}; a parcel is on one stop a day"),
            ));
            continue;
        }
        placed.insert((parcel_id.to_string(), date), line);
        let key = (route_id.to_string(), date);
        let b = routes.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Building {
                lines: Vec::new(),
                courier_id: courier_id.to_string(),
                stops: Vec::new(),
                stop_index: HashMap::new(),
            }
        });
        if b.courier_id != courier_id {
            errors.push(err(
                &t.file,
                line,
                format!(
                    "route {route_id} on {date} is for courier {} on line {}, not {courier_id}; one route has one courier",
                    b.courier_id,
                    b.lines.first().copied().unwrap_or(line)
                ),
            ));
            continue;
        }
        b.lines.push(line);
        match b.stop_index.get(stop_id) {
            Some(&(i, first)) => {
                let stop = &mut b.stops[i];
                if stop.1 != address {
                    errors.push(err(
                        &t.file,
                        line,
                        format!(
                            "stop {stop_id} has address {:?} on line {first}, not {address:?}; a stop has one address",
                            stop.1
                        ),
                    ));
                    continue;
                }
                stop.3.push(parcel_id.to_string());
            }
            None => {
                b.stop_index
                    .insert(stop_id.to_string(), (b.stops.len(), line));
                b.stops.push((
                    stop_id.to_string(),
                    address.to_string(),
                    optional(recipient),
                    vec![parcel_id.to_string()],
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        let Some(b) = routes.remove(&key) else {
            continue;
        };
        let first = b.lines.first().copied().unwrap_or(0);
        let parcels: usize = b.stops.iter().map(|s| s.3.len()).sum();
        if b.stops.len() > MAX_STOPS || parcels > MAX_PARCELS {
            errors.push(err(
                &t.file,
                first,
                format!(
                    "route {} on {} has {} stops and {parcels} parcels; a route holds at most {MAX_STOPS} stops and {MAX_PARCELS} parcels",
                    key.0,
                    key.1,
                    b.stops.len()
                ),
            ));
            continue;
        }
        out.push(RouteRows {
            lines: b.lines,
            route: RouteIn {
                route_id: key.0,
                courier_id: b.courier_id,
                delivery_date: key.1,
                stops: b
                    .stops
                    .into_iter()
                    .map(|(stop_id, address, recipient, parcel_ids)| StopIn {
                        stop_id,
                        address,
                        recipient,
                        parcel_ids,
                    })
                    .collect(),
            },
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn quoted_commas_quotes_line_breaks_and_a_bom_are_read_as_rfc_4180_says() {
        let f = file(
            "\u{feff}parcel_id,recipient_name,address,value,currency,email\n\
             P-1,\"Doe, Jane\",\"1 \"\"Old\"\" Street\",49.90,EUR,jane@example.com\n\
             P-2,Zoë Ünal,2 Rue,10,EUR,\n",
        );
        let rows = read_parcels(f.path()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].parcel.recipient.name, "Doe, Jane");
        assert_eq!(rows[0].parcel.address, "1 \"Old\" Street");
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[1].parcel.recipient.name, "Zoë Ünal");
        assert_eq!(rows[1].parcel.recipient.email, None);
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let f = file(
            "parcel_id,recipient_name,address,value,currency,requires_code\n\
             P-1,Jane,1 Street,49.90,EUR,\n\
             P 2,Jane,1 Street,12,EUR,\n\
             P-3,Jane,1 Street,\"12,5\",eur,maybe\n\
             P-1,Jane,1 Street,1,EUR,\n",
        );
        let e = read_parcels(f.path()).unwrap_err();
        let lines: Vec<u64> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 4, 4, 5], "{e:?}");
        assert!(
            e.iter().any(|e| e.line == 4 && e.message.contains("dot")),
            "{e:?}"
        );
        assert!(e[4].message.contains("line 2"), "{}", e[4]);
    }

    #[test]
    fn a_missing_or_misspelt_column_is_named() {
        let f = file("parcel_id,recipient,address,value,currency\nP-1,J,A,1,EUR\n");
        let e = read_parcels(f.path()).unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("unknown column \"recipient\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("no \"recipient_name\" column")),
            "{text:?}"
        );
    }

    #[test]
    fn rows_become_routes_with_stops_in_file_order() {
        let f = file(
            "route_id,courier_id,delivery_date,stop_id,address,parcel_id\n\
             R-1,C-1,2026-12-01,S-2,2 Street,P-3\n\
             R-1,C-1,2026-12-01,S-1,1 Street,P-1\n\
             R-1,C-1,2026-12-01,S-2,2 Street,P-4\n\
             R-2,C-2,2026-12-01,S-9,9 Street,P-9\n",
        );
        let r = read_routes(f.path()).unwrap();
        assert_eq!(r.len(), 2);
        let stops: Vec<(&str, Vec<&str>)> = r[0]
            .route
            .stops
            .iter()
            .map(|s| {
                (
                    s.stop_id.as_str(),
                    s.parcel_ids.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(stops, [("S-2", vec!["P-3", "P-4"]), ("S-1", vec!["P-1"])]);
        assert_eq!(r[0].lines, [2, 3, 4]);
    }

    #[test]
    fn a_route_with_two_couriers_a_stop_with_two_addresses_or_a_parcel_twice_is_refused() {
        let f = file(
            "route_id,courier_id,delivery_date,stop_id,address,parcel_id\n\
             R-1,C-1,2026-12-01,S-1,1 Street,P-1\n\
             R-1,C-2,2026-12-01,S-1,1 Street,P-2\n\
             R-1,C-1,2026-12-01,S-1,Other Street,P-3\n\
             R-1,C-1,2026-12-01,S-2,2 Street,P-1\n\
             R-1,C-1,01/12/2026,S-2,2 Street,P-5\n",
        );
        let e = read_routes(f.path()).unwrap_err();
        let lines: Vec<u64> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6], "{e:?}");
    }
}
