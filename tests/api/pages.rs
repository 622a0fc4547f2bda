//! What the pages and the sign-in mail show a person (issue 15): events as labels with the
//! contract's name kept in `data-event`, browsers described, times relative with the exact UTC
//! time beside them, the dashboard's 30-day chart and "access not used", and the mail's button.
//! HTML is read with `scraper`, as a browser would see it.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use latchkey::domain::role::Role;
use latchkey::models::dashboard::{MEMBER_SIGN_INS_PER_DAY, TEAM_SIGN_INS_PER_DAY, UNUSED_ACCESS};
use scraper::Html;

use crate::helpers::{
    attr, form_value, one, parse_page, select, spawn_app, text, within, Browser, TestApp,
};

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0";

async fn get_html(browser: &Browser, path: &str) -> Html {
    let res = browser.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    parse_page(&res.text().await.unwrap())
}

/// An audit row `ago` before now (an SQL interval), or on a given day: the chain trigger keeps
/// an explicit `occurred_at`.
fn seed(app: &TestApp, event: &str, email: &str, agent: Option<&str>, when: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    diesel::sql_query(format!(
        "INSERT INTO login_audit (occurred_at, event, email, ip, user_agent, detail) \
         VALUES ({when}, $1, $2, '198.51.100.4', $3, 'seeded') RETURNING id"
    ))
    .bind::<Text, _>(event)
    .bind::<Text, _>(email)
    .bind::<diesel::sql_types::Nullable<Text>, _>(agent)
    .get_result::<Id>(&mut app.conn())
    .unwrap()
    .id
}

fn ago(interval: &str) -> String {
    format!("now() - interval '{interval}'")
}

#[actix_web::test]
async fn audit_rows_read_as_labels_browsers_and_relative_times_and_keep_the_raw_values() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    let scanner = seed(
        &app,
        "link_prefetched",
        "bob@example.org",
        Some(CHROME_MAC),
        &ago("3 minutes"),
    );
    let odd = seed(
        &app,
        "code_failed",
        "bob@example.org",
        Some("Seeder/1.0"),
        &ago("5 hours"),
    );

    let page = get_html(&admin, "/audit").await;
    let row = one(&page, &format!("tr#audit-{scanner}"));
    assert_eq!(attr(row, "data-event"), "link_prefetched");
    let event = within(row, ".event")[0];
    assert_eq!(text(event), "Link opened by a mail scanner");
    assert_eq!(attr(event, "title"), "link_prefetched");
    let summary = within(row, "td.agent summary")[0];
    assert_eq!(text(summary), "Chrome 124 on macOS");
    assert_eq!(text(within(row, "td.agent code")[0]), CHROME_MAC);
    let time = within(row, "time")[0];
    assert_eq!(text(time), "3 minutes ago");
    let stamp = attr(time, "datetime");
    assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
    // The exact UTC time is on the page beside the words, and on hover.
    let exact = attr(time, "title");
    assert!(exact.ends_with(" UTC"), "{exact}");
    assert_eq!(&exact[..10], &stamp[..10]);
    assert!(text(row).contains(exact));

    // A string that names no browser is not guessed at; the string itself is kept.
    let row = one(&page, &format!("tr#audit-{odd}"));
    assert_eq!(text(within(row, ".event")[0]), "Wrong code");
    assert_eq!(text(within(row, "td.agent summary")[0]), "Unknown browser");
    assert_eq!(text(within(row, "td.agent code")[0]), "Seeder/1.0");
    assert_eq!(text(within(row, "time")[0]), "5 hours ago");

    // The filter offers labels; what it sends is still the contract's name.
    let option = one(&page, r#"select[name="event"] option[value="signed_in"]"#);
    assert_eq!(text(option), "Signed in");

    // The CSV is for machines: raw names and strings, unchanged.
    let csv = admin
        .get("/audit.csv?email=bob%40example.org")
        .await
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let scanner_row = records
        .iter()
        .find(|record| record[0] == scanner.to_string())
        .unwrap();
    assert_eq!(&scanner_row[2], "link_prefetched");
    assert_eq!(&scanner_row[5], CHROME_MAC);

    // The dashboard's latest events read the same way.
    let dashboard = get_html(&admin, "/").await;
    let row = select(
        &dashboard,
        r#"table.latest tr[data-event="link_prefetched"]"#,
    )[0];
    assert_eq!(
        text(within(row, ".event")[0]),
        "Link opened by a mail scanner"
    );
    assert_eq!(text(within(row, "td.agent")[0]), "Chrome 124 on macOS");
    assert_eq!(attr(within(row, "td.agent")[0], "title"), CHROME_MAC);
    assert_eq!(text(within(row, "time")[0]), "3 minutes ago");
}

#[actix_web::test]
async fn sessions_name_the_browser_and_keep_the_string_on_hover() {
    let app = spawn_app().await;
    app.add_member("mo@example.org", Role::Member);
    let firefox = app.visitor_as(FIREFOX_WINDOWS);
    assert_eq!(app.sign_in(&firefox, "mo@example.org").await.status(), 303);
    let page = get_html(&firefox, "/sessions").await;
    let agent = one(&page, "table.sessions td.agent");
    assert_eq!(text(agent), "Firefox 126 on Windows 10");
    assert_eq!(attr(agent, "title"), FIREFOX_WINDOWS);
    // Signed in and last seen a moment ago, with the exact time on hover.
    let times = within(one(&page, "table.sessions tbody tr"), "time");
    assert_eq!(times.len(), 2, "signed in and last seen");
    for time in times {
        assert_eq!(text(time), "just now");
        assert!(
            attr(time, "title").ends_with(" UTC"),
            "{}",
            attr(time, "title")
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(attr(time, "datetime")).is_ok(),
            "{}",
            attr(time, "datetime")
        );
    }
}

/// One day of the chart as the SVG carries it.
#[derive(Debug, PartialEq, Eq)]
struct ChartDay {
    sign_ins: i64,
    failed: i64,
    /// The numbers written above the bars.
    labels: Vec<String>,
    sign_ins_height: Option<i64>,
    failed_height: Option<i64>,
}

fn chart_day(page: &Html, day: &str) -> ChartDay {
    let group = one(page, &format!(r#"svg g.chart-day[data-day="{day}"]"#));
    let height = |css: &str| {
        within(group, css)
            .first()
            .map(|rect| attr(*rect, "height").parse::<i64>().unwrap())
    };
    ChartDay {
        sign_ins: attr(group, "data-sign-ins").parse().unwrap(),
        failed: attr(group, "data-failed").parse().unwrap(),
        labels: within(group, "text.chart-value")
            .into_iter()
            .map(text)
            .collect(),
        sign_ins_height: height("rect.chart-bar.sign-ins"),
        failed_height: height("rect.chart-bar.failed"),
    }
}

fn days_ago(n: i64) -> String {
    (chrono::Utc::now().date_naive() - chrono::Duration::days(n))
        .format("%Y-%m-%d")
        .to_string()
}

/// Noon UTC `n` days back, as SQL.
fn noon(n: i64) -> String {
    format!("'{} 12:00:00+00'::timestamptz", days_ago(n))
}

#[actix_web::test]
async fn the_chart_shows_each_days_sign_ins_and_failed_attempts_from_the_audit() {
    let app = spawn_app().await;
    // Signing in writes today's first sign-in for each of them.
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let member = app.member(Role::Member, "mo@example.org").await;
    for _ in 0..3 {
        seed(&app, "signed_in", "mo@example.org", None, &noon(5));
    }
    for event in [
        "code_failed",
        "link_expired",
        "login_denied",
        "login_throttled",
    ] {
        seed(&app, event, "stranger@example.org", None, &noon(5));
    }
    seed(&app, "code_failed", "mo@example.org", None, &noon(12));
    // Outside the 30 days, and events that are neither: not on the chart.
    for _ in 0..9 {
        seed(&app, "signed_in", "mo@example.org", None, &noon(30));
    }
    seed(&app, "member_added", "new@example.org", None, &noon(5));
    seed(&app, "link_sent", "mo@example.org", None, &noon(5));

    let page = get_html(&auditor, "/").await;
    let groups = select(&page, "svg g.chart-day");
    assert_eq!(groups.len(), 30);
    assert_eq!(attr(groups[0], "data-day"), days_ago(29));
    assert_eq!(attr(groups[29], "data-day"), days_ago(0));

    let today = chart_day(&page, &days_ago(0));
    assert_eq!((today.sign_ins, today.failed), (2, 0));
    assert_eq!(today.labels, ["2"]);
    let busiest = chart_day(&page, &days_ago(5));
    assert_eq!((busiest.sign_ins, busiest.failed), (3, 4));
    assert_eq!(busiest.labels, ["3", "4"]);
    // Bars are as tall as their counts: 3 against 4 on one scale.
    let (sign_ins, failed) = (
        busiest.sign_ins_height.unwrap(),
        busiest.failed_height.unwrap(),
    );
    assert!(sign_ins < failed, "{sign_ins} < {failed}");
    assert!(
        (sign_ins * 4 - failed * 3).abs() <= 4,
        "{sign_ins}:{failed}"
    );
    let quiet = chart_day(&page, &days_ago(12));
    assert_eq!((quiet.sign_ins, quiet.failed), (0, 1));
    assert_eq!((quiet.sign_ins_height, quiet.labels.len()), (None, 1));
    let empty = chart_day(&page, &days_ago(1));
    assert_eq!(
        empty,
        ChartDay {
            sign_ins: 0,
            failed: 0,
            labels: vec![],
            sign_ins_height: None,
            failed_height: None
        }
    );
    // Readable without colour: failed bars are hatched (a pattern, not a hue), and the same
    // numbers are in a table.
    let hatched = within(
        one(
            &page,
            &format!(r#"g.chart-day[data-day="{}"]"#, days_ago(5)),
        ),
        "rect.chart-bar.failed",
    )[0];
    assert_eq!(attr(hatched, "fill"), "url(#chart-hatch)");
    one(&page, "svg defs pattern#chart-hatch");
    let row = one(
        &page,
        &format!(r#".chart-table tr[data-day="{}"]"#, days_ago(5)),
    );
    let cells: Vec<String> = within(row, "td").into_iter().map(text).collect();
    assert_eq!(cells, ["3", "4"]);
    assert!(text(one(&page, "svg desc")).starts_with("5 sign-ins and 5 failed attempts in 30 days"));

    // A member's chart is their own.
    let page = get_html(&member, "/").await;
    let busiest = chart_day(&page, &days_ago(5));
    assert_eq!((busiest.sign_ins, busiest.failed), (3, 0));
    let today = chart_day(&page, &days_ago(0));
    assert_eq!((today.sign_ins, today.failed), (1, 0));
    assert_eq!(chart_day(&page, &days_ago(12)).failed, 1);
}

fn set_created(app: &TestApp, email: &str, days: i64) {
    diesel::sql_query(format!(
        "UPDATE members SET created_at = now() - interval '{days} days' WHERE email = $1"
    ))
    .bind::<Text, _>(email)
    .execute(&mut app.conn())
    .unwrap();
}

fn unused_emails(page: &Html) -> Vec<String> {
    select(page, "#unused-access tbody tr")
        .into_iter()
        .map(|row| attr(row, "data-email").to_string())
        .collect()
}

#[actix_web::test]
async fn access_not_used_names_exactly_the_stale_members_and_a_deactivation_clears_it_at_once() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let member = app.member(Role::Member, "mo@example.org").await;
    let stale = app.add_member("stale@example.org", Role::Member);
    let never = app.add_member("never@example.org", Role::Auditor);
    app.add_member("recent@example.org", Role::Member);
    app.add_member("newcomer@example.org", Role::Member);
    let gone = app.add_member("gone@example.org", Role::Member);
    for email in [
        "ada@example.org",
        "stale@example.org",
        "never@example.org",
        "recent@example.org",
        "gone@example.org",
    ] {
        set_created(&app, email, 200);
    }
    seed(
        &app,
        "signed_in",
        "stale@example.org",
        None,
        &ago("120 days"),
    );
    // Other events are not sign-ins: a mail scanner's visit does not count as use.
    seed(
        &app,
        "link_prefetched",
        "never@example.org",
        None,
        &ago("1 day"),
    );
    seed(
        &app,
        "signed_in",
        "recent@example.org",
        None,
        &ago("89 days"),
    );
    seed(
        &app,
        "signed_in",
        "gone@example.org",
        None,
        &ago("300 days"),
    );
    latchkey::models::member::deactivate(&mut app.conn(), gone, "test").unwrap();

    let page = get_html(&admin, "/").await;
    // Never signed in first, then the longest unused.
    assert_eq!(
        unused_emails(&page),
        ["never@example.org", "stale@example.org"]
    );
    let row = one(&page, &format!("tr#unused-{stale}"));
    assert_eq!(text(within(row, "td")[2]), "4 months ago");
    assert!(attr(within(row, "time")[0], "title").ends_with(" UTC"));
    let link = within(row, "a.deactivate-link")[0];
    assert_eq!(attr(link, "href"), format!("/team#member-{stale}"));
    let row = one(&page, &format!("tr#unused-{never}"));
    assert_eq!(text(within(row, "td")[2]), "never");

    // The link leads to the Team page's own deactivation form for that member.
    let team = get_html(&admin, "/team").await;
    let form = one(
        &team,
        &format!(r#"tr#member-{stale} form[action="/team/{stale}/deactivate"]"#),
    );
    assert_eq!(attr(form, "method"), "post");

    // Auditors read the list but cannot act on it; members do not see it.
    let page = get_html(&auditor, "/").await;
    assert_eq!(
        unused_emails(&page),
        ["never@example.org", "stale@example.org"]
    );
    assert!(select(&page, "a.deactivate-link").is_empty());
    let page = get_html(&member, "/").await;
    assert!(select(&page, "#unused-access, #unused-heading").is_empty());

    // Deactivating from the Team page: the next dashboard view (well inside the cache's few
    // seconds) no longer names them.
    let team_html = admin.get("/team").await.text().await.unwrap();
    let csrf = form_value(&team_html, "csrf_token").unwrap();
    let res = admin
        .post(&format!("/team/{stale}/deactivate"))
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    let page = get_html(&admin, "/").await;
    assert_eq!(unused_emails(&page), ["never@example.org"]);
    let page = get_html(&auditor, "/").await;
    assert_eq!(unused_emails(&page), ["never@example.org"]);
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// Fills the audit with 400 days of 200,000 rows behind the chain trigger's back (this
/// database is thrown away; the plans, not the chain, are under test).
fn fill_a_big_audit(conn: &mut PgConnection) {
    diesel::sql_query("ALTER TABLE login_audit DISABLE TRIGGER login_audit_chain_insert")
        .execute(conn)
        .unwrap();
    diesel::sql_query(
        "INSERT INTO login_audit (id, seq, occurred_at, event, email, detail, prev_hash, hash) \
         SELECT nextval('login_audit_id_seq'), i, now() - (i % 400) * interval '1 day' - (i % 997) * interval '1 minute', \
                (ARRAY['link_requested','link_sent','signed_in','code_failed','link_prefetched','signed_out'])[1 + i % 6], \
                'user' || (i % 500) || '@example.org', '', '\\x00', '\\x00' \
         FROM generate_series(1, 200000) AS i",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query("ALTER TABLE login_audit ENABLE TRIGGER login_audit_chain_insert")
        .execute(conn)
        .unwrap();
    diesel::sql_query(
        "INSERT INTO members (email, role, mailbox_key) \
         SELECT 'user' || i || '@example.org', 'member', 'user' || i || '@example.org' \
         FROM generate_series(0, 499) AS i",
    )
    .execute(conn)
    .unwrap();
    // What autovacuum does to a live audit: statistics, and the visibility map that lets an
    // index answer without the table.
    diesel::sql_query("VACUUM ANALYZE login_audit")
        .execute(conn)
        .unwrap();
    diesel::sql_query("VACUUM ANALYZE members")
        .execute(conn)
        .unwrap();
}

type Explain<'a> =
    diesel::query_builder::BoxedSqlQuery<'a, diesel::pg::Pg, diesel::query_builder::SqlQuery>;

fn plan(conn: &mut PgConnection, query: Explain<'_>) -> String {
    query
        .load::<PlanLine>(conn)
        .unwrap()
        .into_iter()
        .map(|line| line.line)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_chart_and_access_not_used_are_answered_from_their_indexes() {
    let database = crate::helpers::TestDatabase::migrated();
    let mut conn = database.connect();
    fill_a_big_audit(&mut conn);
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::days(29);
    let events = vec!["signed_in", "code_failed", "link_expired"];

    // Both the plan PostgreSQL makes for the values and the generic one that a prepared
    // statement switches to after five runs.
    for mode in ["auto", "force_generic_plan"] {
        diesel::sql_query(format!("SET plan_cache_mode = {mode}"))
            .execute(&mut conn)
            .unwrap();
        let team = plan(
            &mut conn,
            diesel::sql_query(format!("EXPLAIN {TEAM_SIGN_INS_PER_DAY}"))
                .into_boxed()
                .bind::<diesel::sql_types::Array<Text>, _>(events.clone())
                .bind::<Timestamptz, _>(since),
        );
        assert!(
            team.contains("Index Only Scan using login_audit_event_occurred_at_idx"),
            "{mode}:\n{team}"
        );
        assert!(!team.contains("Seq Scan"), "{mode}:\n{team}");

        let member = plan(
            &mut conn,
            diesel::sql_query(format!("EXPLAIN {MEMBER_SIGN_INS_PER_DAY}"))
                .into_boxed()
                .bind::<diesel::sql_types::Array<Text>, _>(events.clone())
                .bind::<Timestamptz, _>(since)
                .bind::<Text, _>("user7@example.org"),
        );
        assert!(
            !member.contains("Seq Scan on login_audit"),
            "{mode}:\n{member}"
        );

        let unused = plan(
            &mut conn,
            diesel::sql_query(format!("EXPLAIN {UNUSED_ACCESS}"))
                .into_boxed()
                .bind::<Timestamptz, _>(now - chrono::Duration::days(90)),
        );
        assert!(
            unused.contains("login_audit_sign_ins_idx"),
            "{mode}:\n{unused}"
        );
        assert!(
            !unused.contains("Seq Scan on login_audit"),
            "{mode}:\n{unused}"
        );
    }
}

#[actix_web::test]
async fn the_sign_in_mail_has_one_button_with_a_plain_href_a_large_code_and_the_browser_named() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let chrome = app.visitor_as(CHROME_MAC);
    let before = app.smtp.received().len();
    assert_eq!(chrome.request_link("ann@example.org").await.status(), 200);
    let parts = app.next_sign_in_mail(before).await;
    let mail = app
        .smtp
        .received()
        .into_iter()
        .skip(before)
        .find(|mail| mail.text().contains(&parts.link))
        .unwrap();
    let source = mail.html();

    // The href is the link as it is, not `http:&#x2F;&#x2F;…`.
    assert!(
        source.contains(&format!(r#"href="{}""#, parts.link)),
        "{source}"
    );
    assert!(!source.contains("&#x2F;"), "{source}");

    let html = parse_page(&source);
    let verify_links: Vec<_> = select(&html, "a[href]")
        .into_iter()
        .filter(|a| attr(*a, "href").contains("/auth/verify?"))
        .collect();
    assert_eq!(
        verify_links.len(),
        1,
        "one button, no second link to confusion"
    );
    let button = verify_links[0];
    assert_eq!(attr(button, "href"), parts.link);
    assert_eq!(text(button), "Sign in to Latchkey");
    // A table-based button: the colour is on the cell, so clients that drop the link's
    // padding or background still show a button.
    let cell = one(&html, "table td[bgcolor]");
    assert!(within(cell, "a.sign-in-button").len() == 1);
    assert!(attr(button, "style").contains("padding"));

    let code = one(&html, "code.sign-in-code");
    assert_eq!(
        text(code),
        parts.code,
        "the code alone, so a copy takes nothing else"
    );
    assert!(attr(code, "style").contains("font-size:32px"));
    assert_eq!(text(one(&html, "td.browser")), "Chrome 124 on macOS");
    let cancel = select(&html, "a[href]")
        .into_iter()
        .find(|a| attr(*a, "href").contains("/auth/cancel?"))
        .unwrap();
    assert_eq!(attr(cancel, "href"), parts.cancel_link);

    // The text part is as it was: the string the browser sent, the link on its own line.
    let plain = mail.text();
    assert!(plain.contains(&format!("Browser: {CHROME_MAC}")), "{plain}");
    assert!(
        plain.lines().any(|line| line.trim_end() == parts.link),
        "{plain}"
    );
}
