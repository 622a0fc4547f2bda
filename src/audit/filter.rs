//! The audit's filters as people type them (`/audit` and `/audit.csv` share them): parsed
//! once into an [`AuditFilter`], with the form kept as typed for the error page and for links
//! that keep the filters.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::query::AuditFilter;
use super::rows::AuditEvent;
use crate::domain::client_ip::ClientIp;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{AuditId, RequestId};

/// The filter fields as typed, to fill the form again (and to build links that keep them).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilterForm {
    email: String,
    event: String,
    ip: String,
    from: String,
    to: String,
    request: String,
}

impl FilterForm {
    /// The filters as a query string, with `before` appended when given; empty fields left out.
    pub fn query(&self, before: Option<AuditId>) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("email", &self.email),
            ("event", &self.event),
            ("ip", &self.ip),
            ("from", &self.from),
            ("to", &self.to),
            ("request", &self.request),
        ] {
            if !value.is_empty() {
                out.append_pair(name, value);
            }
        }
        if let Some(before) = before {
            out.append_pair("before", &before.to_string());
        }
        out.finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("Email: {0}")]
    Email(crate::domain::email_address::EmailAddressError),
    #[error("Event: pick one of the listed events.")]
    Event,
    #[error("IP: enter a whole IPv4 or IPv6 address, such as 203.0.113.7.")]
    Ip,
    #[error("From: enter a date as YYYY-MM-DD.")]
    From,
    #[error("To: enter a date as YYYY-MM-DD.")]
    To,
    #[error("The From date is after the To date.")]
    Range,
    #[error("Request: enter a request number.")]
    Request,
    #[error("The page cursor is not valid; start again from the newest events.")]
    Before,
}

/// A validated query: the filter, the cursor, and the fields as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub before: Option<AuditId>,
    pub form: FilterForm,
}

/// Parses `/audit`'s query string. Empty fields mean "any"; a repeated field keeps its last
/// value; unknown fields are ignored. Always returns the form as typed, for the error page.
pub fn parse_query(query: &str) -> (FilterForm, Result<AuditQuery, FilterError>) {
    let mut form = FilterForm::default();
    let mut before = String::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().chars().take(320).collect::<String>();
        match &*name {
            "email" => form.email = value,
            "event" => form.event = value,
            "ip" => form.ip = value,
            "from" => form.from = value,
            "to" => form.to = value,
            "request" => form.request = value,
            "before" => before = value,
            _ => {}
        }
    }
    let parsed = validate(&form, &before).map(|(filter, before)| AuditQuery {
        filter,
        before,
        form: form.clone(),
    });
    (form, parsed)
}

fn validate(
    form: &FilterForm,
    before: &str,
) -> Result<(AuditFilter, Option<AuditId>), FilterError> {
    let optional = |value: &str| (!value.is_empty()).then(|| value.to_string());
    let email = optional(&form.email)
        .map(|email| EmailAddress::parse(&email).map_err(FilterError::Email))
        .transpose()?
        .map(|email| email.as_str().to_string());
    let event = optional(&form.event)
        .map(|name| AuditEvent::parse(&name).ok_or(FilterError::Event))
        .transpose()?;
    let ip = optional(&form.ip)
        .map(|ip| ip.parse::<ClientIp>().map_err(|_| FilterError::Ip))
        .transpose()?;
    let from = optional(&form.from)
        .map(|date| parse_date(&date).ok_or(FilterError::From))
        .transpose()?;
    let to = optional(&form.to)
        .map(|date| parse_date(&date).ok_or(FilterError::To))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(FilterError::Range);
        }
    }
    let request = optional(&form.request)
        .map(|id| RequestId::parse(&id).ok_or(FilterError::Request))
        .transpose()?;
    let before = optional(before)
        .map(|id| AuditId::parse(&id).ok_or(FilterError::Before))
        .transpose()?;
    let filter = AuditFilter {
        email,
        event,
        ip,
        from: from.map(start_of_day),
        // `to` names a whole day: everything before the next midnight.
        until: match to {
            Some(to) => Some(start_of_day(to.succ_opt().ok_or(FilterError::To)?)),
            None => None,
        },
        request,
    };
    Ok((filter, before))
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

fn start_of_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<AuditQuery, FilterError> {
        parse_query(query).1
    }

    #[test]
    fn an_empty_query_filters_nothing() {
        let query = parse("").unwrap();
        assert_eq!(query.filter, AuditFilter::default());
        assert_eq!(query.before, None);
        let query = parse("email=&event=&ip=&from=&to=").unwrap();
        assert_eq!(query.filter, AuditFilter::default());
    }

    #[test]
    fn filters_are_parsed_into_canonical_values() {
        let query =
            parse("email=+Ann%40Example.ORG+&event=signed_in&ip=%3A%3A1&from=2026-03-01&to=2026-03-02&before=77")
                .unwrap();
        assert_eq!(query.filter.email.as_deref(), Some("Ann@example.org"));
        assert_eq!(query.filter.event, Some(AuditEvent::SignedIn));
        assert_eq!(query.filter.ip, Some("::1".parse().unwrap()));
        assert_eq!(
            query.filter.from.unwrap().to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        // `to` is inclusive: the whole of March 2nd.
        assert_eq!(
            query.filter.until.unwrap().to_rfc3339(),
            "2026-03-03T00:00:00+00:00"
        );
        assert_eq!(query.before, Some(AuditId::new(77)));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        assert!(matches!(parse("email=nope"), Err(FilterError::Email(_))));
        assert_eq!(parse("event=signed_up"), Err(FilterError::Event));
        assert_eq!(parse("ip=10.0.0"), Err(FilterError::Ip));
        assert_eq!(parse("from=2026-13-01"), Err(FilterError::From));
        assert_eq!(parse("from=2026-1-01"), Err(FilterError::From));
        assert_eq!(parse("to=yesterday"), Err(FilterError::To));
        assert_eq!(
            parse("from=2026-03-02&to=2026-03-01"),
            Err(FilterError::Range)
        );
        assert_eq!(parse("before=-4"), Err(FilterError::Before));
        assert_eq!(parse("before=abc"), Err(FilterError::Before));
        assert_eq!(parse("request=0"), Err(FilterError::Request));
    }

    #[test]
    fn the_older_link_keeps_the_filters() {
        let query = parse("email=ann%40example.org&event=signed_in&ip=&before=9").unwrap();
        assert_eq!(
            query.form.query(Some(AuditId::new(5))),
            "email=ann%40example.org&event=signed_in&before=5"
        );
    }
}
