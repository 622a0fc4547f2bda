//! Pending sign-ins. Each is consumed at most once, by one atomic UPDATE.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use diesel::deserialize::FromSql;
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Text;

use crate::domain::app_origin::AppUrl;
use crate::domain::approval_number::ApprovalNumber;
use crate::domain::client_ip::ClientIp;
use crate::domain::digests::{BindingDigest, CodeDigest, TokenDigest};
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{MemberId, RequestId};
use crate::domain::next_path::NextPath;
use crate::models::return_url::StoredReturnUrl;
use crate::schema::{sign_in_prefetches, sign_in_requests};

/// A request row. `member_id` is `None` for a decoy: a request made for an address that may
/// not sign in, which nobody can complete (see `signin::request_link`).
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = sign_in_requests, check_for_backend(diesel::pg::Pg))]
pub struct SignInRequest {
    pub id: RequestId,
    pub member_id: Option<MemberId>,
    pub token_digest: TokenDigest,
    pub code_digest: CodeDigest,
    pub browser_digest: Option<BindingDigest>,
    #[diesel(deserialize_as = i16)]
    pub approval_number: ApprovalNumber,
    pub code_failures: i16,
    #[diesel(deserialize_as = String)]
    pub next_path: NextPath,
    pub requested_ip: Option<ClientIp>,
    pub requested_user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<CompletedBy>,
    pub approved_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The member's stored address, or for a decoy the address that was asked for.
    pub requested_email: EmailAddress,
    pub approval_mismatch_at: Option<DateTime<Utc>>,
    /// A URL on a registered app to return to after sign-in (`/login?rd=`), instead of
    /// `next_path`; stored by `models::return_url`.
    #[diesel(deserialize_as = StoredReturnUrl)]
    pub return_url: Option<AppUrl>,
}

/// Inserted by value: the typed fields are turned into their stored form on the way in.
#[derive(Debug, Insertable)]
#[diesel(table_name = sign_in_requests)]
pub struct NewSignInRequest {
    pub member_id: Option<MemberId>,
    pub requested_email: EmailAddress,
    pub token_digest: TokenDigest,
    pub code_digest: CodeDigest,
    pub browser_digest: Option<BindingDigest>,
    #[diesel(serialize_as = i16)]
    pub approval_number: ApprovalNumber,
    #[diesel(serialize_as = String)]
    pub next_path: NextPath,
    pub requested_ip: Option<ClientIp>,
    pub requested_user_agent: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// How a request was completed, as recorded on it and in the `signed_in` audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum CompletedBy {
    Link,
    Code,
    Approval,
    Passkey,
}

impl CompletedBy {
    pub const ALL: [CompletedBy; 4] = [
        CompletedBy::Link,
        CompletedBy::Code,
        CompletedBy::Approval,
        CompletedBy::Passkey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompletedBy::Link => "link",
            CompletedBy::Code => "code",
            CompletedBy::Approval => "approval",
            CompletedBy::Passkey => "passkey",
        }
    }
}

/// Only [`consume`] writes the column, with [`CompletedBy::as_str`], and a CHECK keeps it to
/// those names; anything else is an error rather than a guess.
impl FromSql<Text, Pg> for CompletedBy {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        CompletedBy::ALL
            .into_iter()
            .find(|how| how.as_str() == text)
            .ok_or_else(|| format!("unknown completed_by {text:?}").into())
    }
}

/// The table keeps the number within 10..=99 (a CHECK), as [`ApprovalNumber`] does.
impl From<i16> for ApprovalNumber {
    fn from(stored: i16) -> Self {
        ApprovalNumber::from_stored(stored)
    }
}

impl From<ApprovalNumber> for i16 {
    fn from(number: ApprovalNumber) -> Self {
        number.value()
    }
}

/// Parsed again on the way out, as on the way in: a path edited in the table by hand can only
/// ever send the browser to `/`, never off the site.
impl From<String> for NextPath {
    fn from(stored: String) -> Self {
        NextPath::parse(Some(&stored))
    }
}

impl From<NextPath> for String {
    fn from(path: NextPath) -> Self {
        path.as_str().to_string()
    }
}

/// Where a request stands; the order of the checks is the order of the answers users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Used,
    Cancelled,
    Expired,
}

/// The most wrong codes a request survives.
pub const MAX_CODE_FAILURES: i16 = 5;

/// Whose wrong codes and approvals are counted together for the 24-hour locks: a member's
/// over all their requests, or (for decoys) the address that was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockScope {
    Member(MemberId),
    Address(EmailAddress),
}

impl LockScope {
    pub fn of(request: &SignInRequest) -> Self {
        match request.member_id {
            Some(id) => LockScope::Member(id),
            None => LockScope::Address(request.requested_email.clone()),
        }
    }
}

impl SignInRequest {
    pub fn state(&self, now: DateTime<Utc>) -> RequestState {
        if self.consumed_at.is_some() {
            RequestState::Used
        } else if self.cancelled_at.is_some() {
            RequestState::Cancelled
        } else if self.expires_at <= now {
            RequestState::Expired
        } else {
            RequestState::Pending
        }
    }
}

pub fn insert(conn: &mut PgConnection, new: NewSignInRequest) -> QueryResult<SignInRequest> {
    diesel::insert_into(sign_in_requests::table)
        .values(new)
        .returning(SignInRequest::as_returning())
        .get_result(conn)
}

pub fn find(conn: &mut PgConnection, id: RequestId) -> QueryResult<Option<SignInRequest>> {
    sign_in_requests::table
        .find(id)
        .select(SignInRequest::as_select())
        .first(conn)
        .optional()
}

pub fn find_by_token(
    conn: &mut PgConnection,
    token_digest: &TokenDigest,
) -> QueryResult<Option<SignInRequest>> {
    sign_in_requests::table
        .filter(sign_in_requests::token_digest.eq(token_digest))
        .select(SignInRequest::as_select())
        .first(conn)
        .optional()
}

/// The newest request, among those bound to any of `bindings`, that is still open at `now`.
pub fn latest_pending_for_browser(
    conn: &mut PgConnection,
    bindings: &[BindingDigest],
    now: DateTime<Utc>,
) -> QueryResult<Option<SignInRequest>> {
    if bindings.is_empty() {
        return Ok(None);
    }
    sign_in_requests::table
        .filter(sign_in_requests::browser_digest.eq_any(bindings))
        .filter(sign_in_requests::consumed_at.is_null())
        .filter(sign_in_requests::cancelled_at.is_null())
        .filter(sign_in_requests::expires_at.gt(now))
        .order(sign_in_requests::id.desc())
        .select(SignInRequest::as_select())
        .first(conn)
        .optional()
}

/// Marks the request used if, and only if, it is still open at `now`: the one statement that
/// decides which of any number of racing requests signs in. Completing by approval also needs
/// the request approved from another device.
pub fn consume(
    conn: &mut PgConnection,
    id: RequestId,
    how: CompletedBy,
    now: DateTime<Utc>,
) -> QueryResult<Option<SignInRequest>> {
    let open = sign_in_requests::table
        .filter(sign_in_requests::id.eq(id))
        .filter(sign_in_requests::consumed_at.is_null())
        .filter(sign_in_requests::cancelled_at.is_null())
        .filter(sign_in_requests::expires_at.gt(now));
    let set = (
        sign_in_requests::consumed_at.eq(diesel::dsl::now),
        sign_in_requests::completed_by.eq(how.as_str()),
    );
    match how {
        CompletedBy::Approval => {
            diesel::update(open.filter(sign_in_requests::approved_at.is_not_null()))
                .set(set)
                .returning(SignInRequest::as_returning())
                .get_result(conn)
                .optional()
        }
        _ => diesel::update(open)
            .set(set)
            .returning(SignInRequest::as_returning())
            .get_result(conn)
            .optional(),
    }
}

/// Counts a wrong code; at the limit the request is cancelled in the same statement.
/// Returns the new failure count, or `None` if the request was no longer open.
pub fn record_code_failure(conn: &mut PgConnection, id: RequestId) -> QueryResult<Option<i16>> {
    diesel::sql_query(
        "UPDATE sign_in_requests SET code_failures = code_failures + 1, \
         cancelled_at = CASE WHEN code_failures + 1 >= $2 THEN now() ELSE cancelled_at END \
         WHERE id = $1 AND consumed_at IS NULL AND cancelled_at IS NULL \
         RETURNING code_failures",
    )
    .bind::<diesel::sql_types::BigInt, _>(id)
    .bind::<diesel::sql_types::SmallInt, _>(MAX_CODE_FAILURES)
    .get_result::<CodeFailures>(conn)
    .optional()
    .map(|row| row.map(|r| r.code_failures))
}

#[derive(QueryableByName)]
struct CodeFailures {
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    code_failures: i16,
}

/// Marks an open request (at `now`) approved from another device; false if it was not open.
pub fn approve(conn: &mut PgConnection, id: RequestId, now: DateTime<Utc>) -> QueryResult<bool> {
    diesel::update(
        sign_in_requests::table
            .filter(sign_in_requests::id.eq(id))
            .filter(sign_in_requests::consumed_at.is_null())
            .filter(sign_in_requests::cancelled_at.is_null())
            .filter(sign_in_requests::approved_at.is_null())
            .filter(sign_in_requests::expires_at.gt(now)),
    )
    .set(sign_in_requests::approved_at.eq(diesel::dsl::now))
    .execute(conn)
    .map(|n| n == 1)
}

pub fn cancel(conn: &mut PgConnection, id: RequestId) -> QueryResult<bool> {
    diesel::update(
        sign_in_requests::table
            .filter(sign_in_requests::id.eq(id))
            .filter(sign_in_requests::consumed_at.is_null())
            .filter(sign_in_requests::cancelled_at.is_null()),
    )
    .set(sign_in_requests::cancelled_at.eq(diesel::dsl::now))
    .execute(conn)
    .map(|n| n == 1)
}

/// Wrong codes typed since `since` over every request in `scope`.
pub fn code_failures_since(
    conn: &mut PgConnection,
    scope: &LockScope,
    since: DateTime<Utc>,
) -> QueryResult<i64> {
    let recent = sign_in_requests::table.filter(sign_in_requests::created_at.gt(since));
    let total: Option<i64> = match scope {
        LockScope::Member(id) => recent
            .filter(sign_in_requests::member_id.eq(id))
            .select(diesel::dsl::sum(sign_in_requests::code_failures))
            .first(conn)?,
        LockScope::Address(email) => recent
            .filter(sign_in_requests::member_id.is_null())
            .filter(sign_in_requests::requested_email.eq(email))
            .select(diesel::dsl::sum(sign_in_requests::code_failures))
            .first(conn)?,
    };
    Ok(total.unwrap_or(0))
}

/// Requests of the member that a wrong approval number cancelled since `since`.
pub fn approval_mismatches_since(
    conn: &mut PgConnection,
    member_id: MemberId,
    since: DateTime<Utc>,
) -> QueryResult<i64> {
    sign_in_requests::table
        .filter(sign_in_requests::member_id.eq(member_id))
        .filter(sign_in_requests::approval_mismatch_at.gt(since))
        .count()
        .get_result(conn)
}

/// Cancels an open request because the approving device typed a wrong number.
pub fn cancel_for_mismatch(conn: &mut PgConnection, id: RequestId) -> QueryResult<bool> {
    diesel::update(
        sign_in_requests::table
            .filter(sign_in_requests::id.eq(id))
            .filter(sign_in_requests::consumed_at.is_null())
            .filter(sign_in_requests::cancelled_at.is_null()),
    )
    .set((
        sign_in_requests::cancelled_at.eq(diesel::dsl::now),
        sign_in_requests::approval_mismatch_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .map(|n| n == 1)
}

/// Notes that `ip` fetched the request's link without the asking browser's cookie; true
/// the first time for that request and address, so only then is it audited.
pub fn record_prefetch(
    conn: &mut PgConnection,
    request_id: RequestId,
    ip: ClientIp,
) -> QueryResult<bool> {
    diesel::insert_into(sign_in_prefetches::table)
        .values((
            sign_in_prefetches::request_id.eq(request_id),
            sign_in_prefetches::ip.eq(ip),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(|n| n == 1)
}

/// Requests made for a member since `since`, for the per-address send limit. Counting every
/// request (not just those mailed) means asking again never resets anything. Passkey
/// sign-ins send no mail and are not counted.
pub fn count_since(
    conn: &mut PgConnection,
    member_id: MemberId,
    since: DateTime<Utc>,
) -> QueryResult<i64> {
    sign_in_requests::table
        .filter(sign_in_requests::member_id.eq(member_id))
        .filter(sign_in_requests::created_at.gt(since))
        .filter(
            sign_in_requests::completed_by
                .is_null()
                .or(sign_in_requests::completed_by.ne(CompletedBy::Passkey.as_str())),
        )
        .count()
        .get_result(conn)
}

/// Expired requests are dead; keep them a day so "already used / expired" pages stay accurate.
pub fn delete_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::delete(
        sign_in_requests::table
            .filter(sign_in_requests::expires_at.lt(Utc::now() - chrono::Duration::days(1))),
    )
    .execute(conn)
}
