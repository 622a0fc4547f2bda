//! The sign-in's lines in the log: one for each audit row that signs someone in or refuses
//! them, naming the member's address where the row names one and the app (the host of the
//! URL to return to) where the request has one. A step's lines wait, on the blocking thread
//! that runs its transaction, until that transaction commits: a step rolled back logs
//! nothing. Never a token, a code or a cookie: only the event and whom it concerns.

use std::cell::RefCell;

use crate::audit::rows::AuditEvent;
use crate::models::sign_in_request::SignInRequest;

pub const TARGET: &str = "latchkey::signin";

struct Line {
    event: AuditEvent,
    /// How a sign-in completed (`link`, `code`, `approval`, `passkey`).
    how: Option<&'static str>,
    member: Option<String>,
    app: Option<String>,
}

thread_local! {
    static PENDING: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Holds a line until the step's transaction ends. `member` is the address the audit row
/// names, if any.
pub(super) fn note(event: AuditEvent, member: Option<&str>, request: Option<&SignInRequest>) {
    note_how(event, None, member, request);
}

/// [`note`], saying how a sign-in completed.
pub(super) fn note_how(
    event: AuditEvent,
    how: Option<&'static str>,
    member: Option<&str>,
    request: Option<&SignInRequest>,
) {
    if !log::log_enabled!(target: TARGET, log::Level::Info) {
        return;
    }
    let app = request
        .and_then(|request| request.return_url.as_ref())
        .map(|url| url.origin().host().to_string());
    let line = Line {
        event,
        how,
        member: member.map(str::to_string),
        app,
    };
    PENDING.with(|pending| pending.borrow_mut().push(line));
}

/// Runs a step's transaction: its lines are logged if it committed, forgotten if not.
pub(super) fn around<T, E>(transaction: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    PENDING.with(|pending| pending.borrow_mut().clear());
    let outcome = transaction();
    let lines = PENDING.with(RefCell::take);
    if outcome.is_ok() {
        for line in lines {
            log_line(&line);
        }
    }
    outcome
}

fn log_line(line: &Line) {
    let event = match line.how {
        Some(how) => format!("{} via {how}", line.event.as_str()),
        None => line.event.as_str().to_string(),
    };
    match (&line.member, &line.app) {
        (Some(member), Some(app)) => {
            log::info!(target: TARGET, member = member.as_str(), app = app.as_str(); "{event}")
        }
        (Some(member), None) => log::info!(target: TARGET, member = member.as_str(); "{event}"),
        (None, Some(app)) => log::info!(target: TARGET, app = app.as_str(); "{event}"),
        (None, None) => log::info!(target: TARGET, "{event}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> usize {
        PENDING.with(|pending| pending.borrow().len())
    }

    fn hold(event: AuditEvent) {
        let line = Line {
            event,
            how: None,
            member: Some("ann@example.org".into()),
            app: None,
        };
        PENDING.with(|pending| pending.borrow_mut().push(line));
    }

    #[test]
    fn a_step_that_rolls_back_leaves_no_line_behind() {
        let rolled_back: Result<(), ()> = around(|| {
            hold(AuditEvent::SignedIn);
            Err(())
        });
        assert!(rolled_back.is_err());
        assert_eq!(pending(), 0, "forgotten, not kept for the next step");
        // A line held by work outside any step is not the next step's either.
        hold(AuditEvent::CodeFailed);
        let committed: Result<(), ()> = around(|| {
            assert_eq!(pending(), 0);
            Ok(())
        });
        assert!(committed.is_ok());
        assert_eq!(pending(), 0);
    }
}
