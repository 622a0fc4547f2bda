//! `/audit` and `/audit.csv` through HTTP: order, keyset pages, filters, HTMX rows, the CSV
//! export (streamed, quoted, formulas neutralised) and escaping.

use diesel::prelude::*;
use latchkey::audit::rows::{AuditEvent, NewAuditRow};
use latchkey::domain::client_info::ClientInfo;
use latchkey::domain::ids::AuditId;
use latchkey::domain::role::Role;

use latchkey::settings::LinkBinding;

use scraper::{ElementRef, Html};

use crate::helpers::{
    attr, one, parse_page, select, spawn_app, spawn_app_with, text, texts_within, within, Browser,
    TestApp, TestSettings,
};

/// Row ids on an audit page, in page order.
fn row_ids(html: &str) -> Vec<AuditId> {
    select(&parse_page(html), r#"tr[id^="audit-"]"#)
        .into_iter()
        .map(|row| AuditId::parse(&attr(row, "id")["audit-".len()..]).unwrap())
        .collect()
}

/// The "Older events" link's path and query, if any.
fn older_link(html: &str) -> Option<String> {
    let page = parse_page(html);
    let link = select(&page, "a.button").into_iter().next()?;
    Some(attr(link, "href").to_string())
}

fn seed(app: &TestApp, event: AuditEvent, email: &str, ip: &str, detail: &str) -> AuditId {
    NewAuditRow::new(event)
        .email(email)
        .client(&ClientInfo::new(
            Some(ip.parse().unwrap()),
            Some("Seeder/1.0"),
        ))
        .detail(detail)
        .insert(&mut app.conn())
        .unwrap()
}

/// Many rows in one statement (the chain trigger still runs per row).
fn seed_many(app: &TestApp, n: usize, email: &str) -> Vec<AuditId> {
    use latchkey::schema::login_audit;
    let rows: Vec<NewAuditRow> = (0..n)
        .map(|i| {
            NewAuditRow::new(AuditEvent::LinkSent)
                .email(email)
                .detail(format!("row {i}"))
        })
        .collect();
    diesel::insert_into(login_audit::table)
        .values(&rows)
        .returning(login_audit::id)
        .get_results(&mut app.conn())
        .unwrap()
}

/// A row at a chosen time (the chain trigger keeps an explicit `occurred_at`).
fn seed_at(app: &TestApp, at: &str, email: &str) -> AuditId {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: AuditId,
    }
    diesel::sql_query(
        "INSERT INTO login_audit (occurred_at, event, email, detail) \
         VALUES ($1::timestamptz, 'link_sent', $2, '') RETURNING id",
    )
    .bind::<diesel::sql_types::Text, _>(at)
    .bind::<diesel::sql_types::Text, _>(email)
    .get_result::<Id>(&mut app.conn())
    .unwrap()
    .id
}

async fn page(browser: &Browser, path: &str) -> (u16, String) {
    let res = browser.get(path).await;
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[actix_web::test]
async fn the_audit_is_newest_first_fifty_a_page_and_older_pages_keep_the_filters() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    let mut ids = seed_many(&app, 120, "bulk@example.org");
    ids.reverse();

    let (status, html) = page(&admin, "/audit?email=bulk%40example.org").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<html"),
        "a plain request gets the whole page"
    );
    assert!(!select(&parse_page(&html), r#"[hx-push-url="true"]"#).is_empty());
    assert_eq!(row_ids(&html), ids[..50].to_vec());
    assert!(html.contains("row 119"));

    let mut seen = row_ids(&html);
    let mut link = older_link(&html).expect("an older link");
    assert!(link.contains("email=bulk%40example.org"), "{link}");
    loop {
        let (status, html) = page(&admin, &link).await;
        assert_eq!(status, 200);
        seen.extend(row_ids(&html));
        match older_link(&html) {
            Some(next) => link = next,
            None => break,
        }
    }
    assert_eq!(seen, ids, "all rows, newest first, each once");
}

#[actix_web::test]
async fn keyset_pages_neither_skip_nor_repeat_rows_while_rows_arrive() {
    let app = spawn_app().await;
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    seed_many(&app, 130, "steady@example.org");

    let (_, html) = page(&auditor, "/audit").await;
    let mut seen = row_ids(&html);
    let mut link = older_link(&html);
    while let Some(path) = link {
        // New events land between page fetches, as they do in a live system.
        seed_many(&app, 7, "newcomer@example.org");
        seed(
            &app,
            AuditEvent::LinkRequested,
            "steady@example.org",
            "10.0.0.1",
            "x",
        );
        let (_, html) = page(&auditor, &path).await;
        seen.extend(row_ids(&html));
        link = older_link(&html);
    }
    // Exactly the rows that existed when the first page was read: none skipped, none twice,
    // none of the newcomers.
    let newest = seen[0];
    let expected: Vec<AuditId> = app
        .audit()
        .iter()
        .rev()
        .map(|row| row.id)
        .filter(|id| *id <= newest)
        .collect();
    assert!(expected.len() > 130);
    assert_eq!(seen, expected);
}

#[actix_web::test]
async fn filters_narrow_the_audit() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    let denied = seed(
        &app,
        AuditEvent::LoginDenied,
        "eve@example.org",
        "203.0.113.9",
        "d",
    );
    let sent = seed(
        &app,
        AuditEvent::LinkSent,
        "bob@example.org",
        "203.0.113.9",
        "s",
    );
    let other_ip = seed(
        &app,
        AuditEvent::LinkSent,
        "bob@example.org",
        "198.51.100.1",
        "o",
    );
    let early = seed_at(&app, "2026-02-28T23:59:59Z", "dated@example.org");
    let first = seed_at(&app, "2026-03-01T00:00:00Z", "dated@example.org");
    let late = seed_at(&app, "2026-03-01T23:59:59.999Z", "dated@example.org");
    let next_day = seed_at(&app, "2026-03-02T00:00:00Z", "dated@example.org");

    let (_, html) = page(&admin, "/audit?event=login_denied").await;
    assert_eq!(row_ids(&html), vec![denied]);
    let filters = parse_page(&html);
    let event = one(&filters, r#"select[name="event"] option[selected]"#);
    assert_eq!(attr(event, "value"), "login_denied");

    let (_, html) = page(&admin, "/audit?email=+bob%40EXAMPLE.org+").await;
    assert_eq!(row_ids(&html), vec![other_ip, sent], "canonical address");

    let (_, html) = page(&admin, "/audit?ip=203.0.113.9").await;
    assert_eq!(row_ids(&html), vec![sent, denied]);

    let (_, html) = page(&admin, "/audit?ip=203.0.113.9&email=bob%40example.org").await;
    assert_eq!(row_ids(&html), vec![sent]);

    // `to` includes its whole day; both bounds are UTC.
    let (_, html) = page(&admin, "/audit?from=2026-03-01&to=2026-03-01").await;
    assert_eq!(row_ids(&html), vec![late, first]);
    let (_, html) = page(&admin, "/audit?to=2026-03-01").await;
    assert_eq!(row_ids(&html), vec![late, first, early]);
    let (_, html) = page(&admin, "/audit?from=2026-03-02&email=dated%40example.org").await;
    assert_eq!(row_ids(&html), vec![next_day]);

    // A member's timeline is one click away from any row with their address.
    let (_, html) = page(&admin, "/audit").await;
    assert!(
        !select(
            &parse_page(&html),
            r#"a[href="/audit?email=eve%40example.org"]"#
        )
        .is_empty(),
        "{html}"
    );
}

#[actix_web::test]
async fn bad_filter_values_get_400_with_the_form_and_nothing_else() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    for (query, message) in [
        ("email=not-an-address", "Email:"),
        ("event=signed_up", "Event:"),
        ("ip=999.1.1.1", "IP:"),
        ("from=01%2F03%2F2026", "From:"),
        ("to=2026-02-30", "To:"),
        ("from=2026-03-02&to=2026-03-01", "after the To date"),
        ("before=abc", "cursor"),
    ] {
        let (status, html) = page(&admin, &format!("/audit?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(html.contains(message), "{query}: {html}");
        let form = r#"form[method="get"][action="/audit"]"#;
        assert_eq!(select(&parse_page(&html), form).len(), 1, "{query}");
        assert!(row_ids(&html).is_empty(), "{query}");
        let res = admin.get(&format!("/audit.csv?{query}")).await;
        assert_eq!(res.status(), 400, "CSV {query}");
    }
    // What was typed comes back escaped, in the form.
    let (status, html) = page(&admin, "/audit?email=%22%3E%3Cscript%3Ex").await;
    assert_eq!(status, 400);
    let page = parse_page(&html);
    assert_eq!(
        attr(one(&page, r#"input[name="email"]"#), "value"),
        "\"><script>x"
    );
    assert_no_injected_elements(&page);
}

#[actix_web::test]
async fn htmx_requests_get_only_the_rows() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    seed_many(&app, 60, "bulk@example.org");
    for path in [
        "/audit",
        "/audit?email=bulk%40example.org",
        "/audit?event=nope",
    ] {
        let res = admin.get(path).htmx().await;
        let status = res.status();
        let html = res.text().await.unwrap();
        assert!(!html.contains("<html"), "{path}: {html}");
        assert!(
            select(&parse_page(&html), "form").is_empty(),
            "{path}: only the rows"
        );
        assert!(
            html.trim_start().starts_with(r#"<div id="audit-rows">"#),
            "{path}: {html}"
        );
        if path.contains("nope") {
            assert_eq!(status, 400);
        } else {
            assert_eq!(status, 200);
            assert_eq!(row_ids(&html).len(), 50);
            let older = older_link(&html).unwrap();
            let page = parse_page(&html);
            assert_eq!(attr(one(&page, "a.button"), "hx-get"), older);
        }
    }
}

#[actix_web::test]
async fn signed_in_rows_link_their_request_and_flag_another_device() {
    let app = spawn_app_with(TestSettings::new().link_binding(LinkBinding::Any)).await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    app.add_member("bob@example.org", Role::Member);
    let asking = app.visitor();
    let phone = app.visitor_as("PhoneBrowser/9.0");
    let before = app.smtp.received().len();
    assert_eq!(asking.request_link("bob@example.org").await.status(), 200);
    let mail = app.sign_in_mail(before + 1).await;
    assert_eq!(phone.confirm_link(&mail.token).await.status(), 303);

    let rows = app.audit();
    let bob_signed_in = rows
        .iter()
        .find(|row| row.event == "signed_in" && row.email.as_deref() == Some("bob@example.org"))
        .unwrap();
    let ada_signed_in = rows
        .iter()
        .find(|row| row.event == "signed_in" && row.email.as_deref() == Some("ada@example.org"))
        .unwrap();
    let request = bob_signed_in.request_id.unwrap();

    let (_, html) = page(&admin, "/audit?event=signed_in").await;
    let audit = parse_page(&html);
    let bob_row = row(&audit, bob_signed_in.id);
    let flags = texts_within(bob_row, ".flag");
    assert_eq!(flags, ["different device"], "{}", bob_row.html());
    let request_link = format!(r#"a[href="/audit?request={request}"]"#);
    assert_eq!(within(bob_row, &request_link).len(), 1);
    let ada_row = row(&audit, ada_signed_in.id);
    assert!(
        !text(ada_row).contains("different device"),
        "{}",
        ada_row.html()
    );

    // The request's own story: requested → sent → signed in.
    let (status, html) = page(&admin, &format!("/audit?request={request}")).await;
    assert_eq!(status, 200);
    let events: Vec<String> = row_ids(&html)
        .into_iter()
        .map(|id| rows.iter().find(|row| row.id == id).unwrap().event.clone())
        .collect();
    // (The other browser's visit without the asking browser's cookie shows as a prefetch.)
    assert_eq!(
        events,
        [
            "signed_in",
            "link_prefetched",
            "link_sent",
            "link_requested"
        ]
    );
}

fn row(page: &Html, id: AuditId) -> ElementRef<'_> {
    one(page, &format!("tr#audit-{id}"))
}

/// Nothing a hostile value could have become: no inline script (the layout's are all
/// `src`), no image, no element carrying an event handler.
fn assert_no_injected_elements(page: &Html) {
    assert!(select(page, "script:not([src])").is_empty());
    assert!(select(page, "img, [onerror]").is_empty());
}

#[actix_web::test]
async fn hostile_user_agents_and_addresses_show_as_text() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    NewAuditRow::new(AuditEvent::LoginDenied)
        .email("<script>alert(1)</script>@example.org")
        .client(&ClientInfo::new(
            Some("203.0.113.9".parse().unwrap()),
            Some("<script>alert(2)</script>\r\nX-Injected: yes"),
        ))
        .detail("<img src=x onerror=alert(3)>")
        .insert(&mut app.conn())
        .unwrap();
    let (_, html) = page(&admin, "/audit").await;
    let audit = parse_page(&html);
    assert_no_injected_elements(&audit);
    let denied = one(&audit, r#"tr[data-event="login_denied"]"#);
    let email = texts_within(denied, r#"a[href^="/audit?email="]"#);
    assert_eq!(email, ["<script>alert(1)</script>@example.org"]);
    // HTML parsing reads CRLF as LF; the bytes show that the CR was kept, not dropped.
    let agent = "<script>alert(2)</script>\nX-Injected: yes";
    assert_eq!(texts_within(denied, "code.raw"), [agent]);
    let summaries = within(denied, "td.agent summary");
    assert_eq!(summaries.len(), 1);
    assert_eq!(attr(summaries[0], "title"), agent);
    assert!(html.contains("\r\nX-Injected: yes"));
    assert_eq!(
        texts_within(denied, "td.detail"),
        ["<img src=x onerror=alert(3)>"]
    );
}

async fn csv(browser: &Browser, path: &str) -> (reqwest::header::HeaderMap, String) {
    let res = browser.get(path).await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    (headers, res.text().await.unwrap())
}

#[actix_web::test]
async fn the_csv_export_streams_every_matching_row_in_batches() {
    let app = spawn_app().await;
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let mut ids = seed_many(&app, 2345, "bulk@example.org");
    ids.reverse();
    seed_many(&app, 3, "other@example.org");

    let (headers, body) = csv(&auditor, "/audit.csv?email=bulk%40example.org").await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        headers["content-disposition"],
        r#"attachment; filename="latchkey-audit.csv""#
    );
    assert!(headers.contains_key("content-security-policy"));
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "id",
            "occurred_at",
            "event",
            "email",
            "ip",
            "user_agent",
            "actor",
            "detail",
            "request_id"
        ]
    );
    let exported: Vec<AuditId> = reader
        .records()
        .map(|record| AuditId::parse(&record.unwrap()[0]).unwrap())
        .collect();
    assert_eq!(exported, ids, "every row once, newest first");

    // Without filters: everything, including the sign-in rows.
    let (_, body) = csv(&auditor, "/audit.csv").await;
    let count = csv::Reader::from_reader(body.as_bytes()).records().count();
    assert_eq!(count, app.audit().len());
}

#[actix_web::test]
async fn csv_cells_are_quoted_and_formulas_neutralised() {
    let app = spawn_app().await;
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let hostile_agent = r#"=HYPERLINK("http://x")"#;
    let detail = "commas, \"quotes\"\nand a newline";
    let id = NewAuditRow::new(AuditEvent::LoginDenied)
        .email("+1@example.org")
        .client(&ClientInfo::new(
            Some("203.0.113.9".parse().unwrap()),
            Some(hostile_agent),
        ))
        .actor("@admin")
        .detail(detail)
        .insert(&mut app.conn())
        .unwrap();
    NewAuditRow::new(AuditEvent::LoginDenied)
        .email("tab@example.org")
        .client(&ClientInfo::new(None, Some("\t=cmd|' /C calc'!A0")))
        .detail("-2+3")
        .insert(&mut app.conn())
        .unwrap();

    let (_, body) = csv(&auditor, "/audit.csv?event=login_denied").await;
    assert!(
        body.contains(r#""'=HYPERLINK(""http://x"")""#),
        "quoted and neutralised: {body}"
    );
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    let tab = &records[0];
    assert_eq!(&tab[5], "'\t=cmd|' /C calc'!A0");
    assert_eq!(&tab[7], "'-2+3");
    let row = &records[1];
    assert_eq!(AuditId::parse(&row[0]), Some(id));
    assert_eq!(&row[2], "login_denied");
    assert_eq!(&row[3], "'+1@example.org");
    assert_eq!(&row[4], "203.0.113.9");
    assert_eq!(&row[5], "'=HYPERLINK(\"http://x\")");
    assert_eq!(&row[6], "'@admin");
    assert_eq!(&row[7], detail, "commas, quotes and newlines survive");
    for record in &records {
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} would run as a formula"
            );
        }
    }
}

#[actix_web::test]
async fn the_filter_form_carries_what_was_typed() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    let (_, html) = page(&admin, "/audit?email=ada%40example.org&ip=%3A%3A1").await;
    let page = parse_page(&html);
    let email = one(
        &page,
        r#"input[name="email"][type="email"][maxlength="254"]"#,
    );
    assert_eq!(attr(email, "value"), "ada@example.org");
    let ip = one(&page, r#"input[name="ip"][maxlength="45"]"#);
    assert_eq!(attr(ip, "value"), "::1");
}

#[actix_web::test]
async fn date_filtered_pages_are_in_time_order_and_neither_skip_nor_repeat() {
    let app = spawn_app().await;
    // 120 rows on one day, written out of time order (ids and times disagree), some sharing
    // a timestamp, plus rows outside the range on both sides. Written before the auditor
    // signs in: on a busy machine seeding outlasts the server's 5-second keep-alive, and the
    // browser's pooled connection would be closed under its first request.
    seed_at(&app, "2026-03-09 23:59:59+00", "before@example.org");
    let mut expected: Vec<(String, AuditId)> = Vec::new();
    for i in 0..120 {
        let at = format!("2026-03-10 {:02}:{:02}:00+00", (i * 7) % 24, (i * 13) % 60);
        let id = seed_at(&app, &at, "inside@example.org");
        expected.push((at, id));
    }
    seed_at(&app, "2026-03-11 00:00:00+00", "after@example.org");
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<AuditId> = expected.into_iter().map(|(_, id)| id).collect();
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;

    let (status, html) = page(&auditor, "/audit?from=2026-03-10&to=2026-03-10").await;
    assert_eq!(status, 200);
    let mut seen = row_ids(&html);
    let mut link = older_link(&html);
    while let Some(path) = link {
        seed_at(&app, "2026-03-10 12:00:00+00", "late@example.org");
        let (_, html) = page(&auditor, &path).await;
        seen.extend(row_ids(&html));
        link = older_link(&html);
    }
    let first_page_ids: std::collections::HashSet<AuditId> = seen.iter().copied().collect();
    assert_eq!(first_page_ids.len(), seen.len(), "a row was shown twice");
    let seen_original: Vec<AuditId> = seen
        .into_iter()
        .filter(|id| expected.contains(id))
        .collect();
    assert_eq!(seen_original, expected);
}
