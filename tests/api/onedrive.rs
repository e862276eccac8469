//! Operator sign-in, the token store, the Graph client and OneDrive uploads, against the
//! emulator and its fault scripting. Graph behaviour cited from microsoftgraph/
//! microsoft-graph-docs-contrib: `api-reference/v1.0/api/driveitem-put-content.md`,
//! `driveitem-createuploadsession.md`, `concepts/throttling.md`, `concepts/errors.md`;
//! identity from MicrosoftDocs/entra-docs `docs/identity-platform/v2-oauth2-auth-code-flow.md`.

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with};
use officebridge::config::Settings;
use officebridge::emulator::seed::{DEMO_CLIENT_ID, DEMO_TENANT_ID, DEMO_USER, Seed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const OPERATOR: &str = "JDOE";

pub struct Linked {
    pub app: TestApp,
    pub emu: String,
    /// Does not follow redirects: the tests read them.
    pub browser: reqwest::Client,
}

pub async fn emulator() -> String {
    officebridge::emulator::spawn("127.0.0.1:0".parse().unwrap(), Seed::demo())
        .await
        .unwrap()
        .0
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The app with the emulator as tenant `DEMO` and operator `JDOE` (= the demo user), not yet signed in.
pub async fn with_tenant(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Option<Linked> {
    let emu = emulator().await;
    let app = spawn_app_with(backend, |s| {
        s.allow_emulator = true;
        s.emulator_url = Some(emu.clone());
        s.public_url = url::Url::parse("http://localhost:0").unwrap();
        tweak(s);
    })
    .await?;
    let created = app
        .admin_post(
            "/api/v1/tenants",
            &json!({
                "code": "DEMO", "description": "the emulator",
                "tenant_id": DEMO_TENANT_ID, "client_id": DEMO_CLIENT_ID,
                "platform": "public_client", "redirect_url": "http://localhost",
                "client_secret": "demo-client-secret",
                "authority": emu, "graph_endpoint": emu,
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let op = app
        .admin_put(
            &format!("/api/v1/operators/{OPERATOR}"),
            &json!({"enabled": true, "tenant": "DEMO", "email": DEMO_USER}),
        )
        .await;
    assert!(op.status == 201 || op.status == 200, "{}", op.text);
    Some(Linked {
        app,
        emu,
        browser: browser(),
    })
}

/// ... and signed in through `/auth/signin` and `/auth/callback`, as a browser would.
pub async fn linked(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Option<Linked> {
    let l = with_tenant(backend, tweak).await?;
    let page = l.sign_in(OPERATOR, DEMO_USER).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Signed in"), "{}", page.text);
    Some(l)
}

impl Linked {
    /// Runs the browser's part of a sign-in and answers the callback page.
    pub async fn sign_in(&self, operator: &str, user: &str) -> Answer {
        let callback = self.authorize(operator, user).await;
        Answer::from(self.browser.get(callback).send().await.unwrap()).await
    }

    /// A sign-in link for the operator, as the ERP gets one (`POST …/signin`, client key).
    pub async fn signin_link(&self, operator: &str) -> String {
        let a = self
            .app
            .client_post_json(&format!("/api/v1/operators/{operator}/signin"), &json!({}))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let url = a.json["url"].as_str().unwrap().to_string();
        assert!(url.contains("/auth/signin?link="), "{url}");
        url
    }

    /// A link → `/auth/signin` → the emulator's sign-in page → the account picked → the callback URL.
    pub async fn authorize(&self, operator: &str, user: &str) -> String {
        let link = self.signin_link(operator).await;
        let start = self.browser.get(link).send().await.unwrap();
        assert_eq!(start.status(), 302, "{:?}", start.text().await);
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        let url = url::Url::parse(&authorize).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(q["code_challenge"].len() >= 43 && q["state"].len() >= 32 && q["nonce"].len() >= 32);
        crate::helpers::pick_account(&self.browser, &authorize, user).await
    }

    /// Every refresh token the emulator issued is revoked (`invalid_grant` from now on).
    pub async fn revoke_refresh_tokens(&self) {
        let r = self
            .browser
            .post(format!("{}/_emulator/refresh-tokens/revoke", self.emu))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn fault(&self, faults: Value) {
        let r = self
            .browser
            .post(format!("{}/_emulator/faults", self.emu))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    pub async fn requests(&self) -> Vec<Value> {
        crate::helpers::emulator_requests(&self.browser, &self.emu).await
    }

    /// The bytes of a file in the demo user's OneDrive, by name.
    pub async fn drive_file(&self, name: &str) -> Option<Vec<u8>> {
        use base64::Engine;
        let files: Value = self
            .browser
            .get(format!("{}/_emulator/drive/{DEMO_USER}", self.emu))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let file = files["files"]
            .as_array()?
            .iter()
            .find(|f| f["path"].as_str().unwrap().rsplit('/').next() == Some(name))?
            .clone();
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(file["content"].as_str().unwrap())
                .unwrap(),
        )
    }

    /// `POST /api/v1/exports?destination=onedrive` for the operator.
    pub async fn export(&self, csv: &str, title: &str, extra: &[(&str, &str)]) -> Answer {
        let mut headers = vec![("x-operator", OPERATOR)];
        headers.extend_from_slice(extra);
        Answer::from(
            self.app
                .client_post(
                    &format!("/api/v1/exports?destination=onedrive&title={title}"),
                    "text/csv",
                    csv.to_string(),
                    &headers,
                )
                .await,
        )
        .await
    }

    /// The same export as a download, to compare bytes with what landed in OneDrive.
    pub async fn download(&self, csv: &str, title: &str) -> Vec<u8> {
        let r = self
            .app
            .client_post(&format!("/api/v1/exports?title={title}"), "text/csv", csv.to_string(), &[])
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    }
}

/// A CSV whose workbook is about `rows` × 60 bytes compressed (random text does not compress).
pub fn csv(rows: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut out = String::from("Id,Text\n");
    for i in 0..rows {
        let text: String = (0..40).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect();
        out.push_str(&format!("{i},{text}\n"));
    }
    out
}

/// Checks that what landed in OneDrive is the export: a valid workbook with the grid's rows,
/// part for part the same bytes as the same grid exported as a download. (Only
/// `docProps/core.xml` may differ: it holds the creation time.)
async fn same_export(l: &Linked, landed: &[u8], data: &str, title: &str) {
    let rows = data.lines().count() - 1;
    same_workbook(landed, rows);
    let downloaded = l.download(data, title).await;
    let parts = |bytes: &[u8]| {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut f = zip.by_index(i).unwrap();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut content).unwrap();
                (f.name().unwrap().to_string(), content)
            })
            .filter(|(name, _)| name != "docProps/core.xml")
            .collect::<Vec<_>>()
    };
    let (a, b) = (parts(landed), parts(&downloaded));
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs between OneDrive and the export");
    }
}

fn same_workbook(landed: &[u8], rows: usize) {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(landed)).expect("OneDrive holds a valid xlsx");
    let mut sheet = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("xl/worksheets/sheet1.xml").unwrap(), &mut sheet).unwrap();
    assert_eq!(sheet.matches("<row ").count(), rows + 1, "header + {rows} rows");
}

fn upload_puts(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().starts_with("/_upload/"))
        .collect()
}

macro_rules! on_both {
    ($($name:ident($setup:ident)),* $(,)?) => {
        $(
            mod $name {
                use $crate::helpers::Backend;

                #[tokio::test]
                async fn sqlite() {
                    let l = (super::$setup)(Backend::Sqlite).await.expect("sqlite always runs");
                    super::$name(l).await;
                }

                #[tokio::test]
                async fn postgres() {
                    match (super::$setup)(Backend::Postgres).await {
                        Some(l) => super::$name(l).await,
                        None => eprintln!("skipped: OFFICEBRIDGE_TEST_POSTGRES_URL is not set"),
                    }
                }
            }
        )*
    };
}

pub(crate) use on_both;

pub async fn small(b: Backend) -> Option<Linked> {
    linked(b, |_| {}).await
}

/// Simple uploads up to 64 KiB, upload sessions in 320 KiB fragments above.
async fn fragmented(b: Backend) -> Option<Linked> {
    linked(b, |s| {
        s.onedrive.simple_upload_limit = 64 * 1024;
        s.onedrive.fragment_size = 320 * 1024;
    })
    .await
}

pub async fn unlinked(b: Backend) -> Option<Linked> {
    with_tenant(b, |_| {}).await
}

on_both!(
    signed_in_export_lands_in_onedrive(small),
    large_export_goes_in_fragments_without_authorization(fragmented),
    throttled_requests_wait_for_retry_after(small),
    a_storm_of_503s_then_success(small),
    a_dropped_fragment_resumes_where_the_session_says(fragmented),
    an_expired_session_restarts(fragmented),
    an_expired_token_is_refreshed_once_mid_upload(fragmented),
    a_revoked_refresh_token_means_signin_required(small),
    never_signed_in_means_signin_required(unlinked),
    callback_states_are_single_use_and_expire(unlinked),
    async_export_to_onedrive(small),
    onedrive_export_input_errors(small),
    concurrent_callers_share_one_refresh(small),
    device_code_signin_links_the_operator(unlinked),
    graph_client_pages_and_keeps_to_four_per_mailbox(small),
    recent_exports_are_listed_newest_first_and_open_in_the_emulators_excel(small),
);

/// The Excel pane's recent exports: the export folder's children newest first
/// (driveitem-list-children.md, `$orderby=lastModifiedDateTime desc`), an empty list before
/// the first export (the folder does not exist yet: Graph's 404), and each `webUrl` opens
/// the emulator's stand-in for Excel for the web, which shows the sheets.
async fn recent_exports_are_listed_newest_first_and_open_in_the_emulators_excel(l: Linked) {
    let none = l.app.client_get_as("/api/v1/exports/recent", Some(OPERATOR)).await;
    assert_eq!(none.status, 200, "{}", none.text);
    assert_eq!(none.json["items"], serde_json::json!([]));
    assert_eq!(none.json["folder"], "/officebridge/exports");
    assert_eq!(l.export(&csv(5), "First", &[]).await.status, 201);
    assert_eq!(l.export(&csv(5), "Second", &[]).await.status, 201);
    let listed = l.app.client_get_as("/api/v1/exports/recent", Some(OPERATOR)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let names: Vec<&str> = listed.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Second.xlsx", "First.xlsx"]);
    let url = listed.json["items"][0]["webUrl"].as_str().unwrap();
    let page = l.browser.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Second.xlsx") && html.contains("<table>"), "{html}");
    assert!(
        html.contains("<h2>Sheet1</h2>") && html.contains("<td>Id</td><td>Text</td>"),
        "the sheet is shown: {html}"
    );
    // Without an operator the ERP gets a 422 naming X-Operator.
    let bare = l.app.client_get_as("/api/v1/exports/recent", None).await;
    bare.assert_problem(422, Some("X-Operator"));
}

/// SPEC §6: `{id, name, size, webUrl}`; the bytes in OneDrive are the workbook.
async fn signed_in_export_lands_in_onedrive(l: Linked) {
    let op = l.app.admin_get(&format!("/api/v1/operators/{OPERATOR}")).await;
    assert_eq!(op.json["signin"], "linked");
    // The refresh token is sealed at rest.
    let stored = l.app.raw_text("SELECT refresh_token FROM operators").await;
    assert!(stored[0].as_deref().unwrap().starts_with("v1."));

    let data = csv(50);
    let first = l.export(&data, "Orders", &[]).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json["name"], "Orders.xlsx");
    assert!(first.json["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(first.json["webUrl"].as_str().unwrap().starts_with("http"), "{}", first.text);
    let landed = l.drive_file("Orders.xlsx").await.expect("the file is in OneDrive");
    assert_eq!(first.json["size"], landed.len());
    same_export(&l, &landed, &data, "Orders").await;

    // Conflict behaviour rename: a second export of the same name does not replace the first.
    let second = l.export(&data, "Orders", &[]).await;
    assert_eq!(second.status, 201, "{}", second.text);
    assert_ne!(second.json["name"], "Orders.xlsx");
    assert!(l.drive_file("Orders.xlsx").await.is_some());
    // One token redemption at sign-in; the cached token served both exports.
    let log = l.requests().await;
    assert_eq!(
        log.iter()
            .filter(|r| r["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token"))
            .count(),
        1
    );
    let puts: Vec<_> = log.iter().filter(|r| r["method"] == "PUT").collect();
    assert!(puts.iter().all(|r| r["path"].as_str().unwrap().contains("/officebridge/exports/")));
}

/// driveitem-createuploadsession.md: fragments of 320 KiB multiples with Content-Range; the
/// upload URL is pre-authenticated and must not get an Authorization header.
async fn large_export_goes_in_fragments_without_authorization(l: Linked) {
    let data = csv(30_000);
    let a = l.export(&data, "Big", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let landed = l.drive_file("Big.xlsx").await.unwrap();
    assert!(landed.len() > 3 * 320 * 1024, "big enough for several fragments: {}", landed.len());
    assert_eq!(a.json["size"], landed.len());
    same_export(&l, &landed, &data, "Big").await;
    let log = l.requests().await;
    let puts = upload_puts(&log);
    assert!(puts.len() >= 3, "{puts:?}");
    assert!(puts.iter().all(|r| r["authorization"] == false), "{puts:?}");
    assert!(puts.iter().all(|r| r["content_range"].as_str().unwrap().starts_with("bytes ")));
    // The upload URL is a credential: the answer never shows it.
    assert!(!a.text.contains("_upload"));
}

/// throttling.md: wait for `Retry-After` (whole or fractional seconds), then retry.
async fn throttled_requests_wait_for_retry_after(l: Linked) {
    l.fault(json!([
        {"method": "PUT", "path": "/v1.0/me/drive/*", "status": 429, "retry_after": "1", "times": 1},
    ]))
    .await;
    let started = Instant::now();
    let data = csv(10);
    let a = l.export(&data, "Throttled", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    l.fault(json!([
        {"method": "PUT", "path": "/v1.0/me/drive/*", "status": 429, "retry_after": "0.5", "times": 2},
    ]))
    .await;
    let started = Instant::now();
    let b = l.export(&csv(10), "Throttled", &[]).await;
    assert_eq!(b.status, 201, "{}", b.text);
    assert!(started.elapsed() >= Duration::from_millis(1000), "two waits of 0.5 s");
    let log = l.requests().await;
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    assert_eq!(throttled, 3);
    same_export(&l, &l.drive_file("Throttled.xlsx").await.unwrap(), &data, "Throttled").await;
}

async fn a_storm_of_503s_then_success(l: Linked) {
    l.fault(json!([{"method": "PUT", "path": "/v1.0/me/drive/*", "status": 503, "retry_after": "0.1", "times": 4}]))
        .await;
    let data = csv(10);
    let a = l.export(&data, "Storm", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    same_export(&l, &l.drive_file("Storm.xlsx").await.unwrap(), &data, "Storm").await;
    // A storm longer than the retry budget ends as 503 problem+json, not a hang or a 500.
    l.fault(json!([{"method": "PUT", "path": "/v1.0/me/drive/*", "status": 503, "retry_after": "0", "times": 50}]))
        .await;
    let b = l.export(&csv(10), "Storm", &[]).await;
    b.assert_problem(503, None);
    assert!(b.json["detail"].as_str().unwrap().contains("serviceNotAvailable"), "{}", b.text);
}

/// A connection dropped in the middle of a fragment: the client asks the session where it
/// stands (`GET` the upload URL → `nextExpectedRanges`) and resumes from there.
async fn a_dropped_fragment_resumes_where_the_session_says(l: Linked) {
    l.fault(json!([{"method": "PUT", "path": "/_upload/*", "drop_connection": true, "times": 1}]))
        .await;
    let data = csv(20_000);
    let a = l.export(&data, "Dropped", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let landed = l.drive_file("Dropped.xlsx").await.unwrap();
    assert_eq!(a.json["size"], landed.len());
    same_export(&l, &landed, &data, "Dropped").await;
    let log = l.requests().await;
    assert!(log.iter().any(|r| r["status"] == 0 && r["faulted"] == true), "the drop happened");
    assert!(
        log.iter()
            .any(|r| r["method"] == "GET" && r["path"].as_str().unwrap().starts_with("/_upload/")),
        "the session status was read before resuming"
    );
}

/// driveitem-createuploadsession.md: a 404 on the upload URL means the session is gone;
/// the upload starts again with a new session.
async fn an_expired_session_restarts(l: Linked) {
    l.fault(json!([{"method": "PUT", "path": "/_upload/*", "status": 404, "times": 1}]))
        .await;
    let data = csv(20_000);
    let a = l.export(&data, "Restarted", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    same_export(&l, &l.drive_file("Restarted.xlsx").await.unwrap(), &data, "Restarted").await;
    let log = l.requests().await;
    let sessions = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(":/createUploadSession"))
        .count();
    assert_eq!(sessions, 2, "a new session after the 404");
}

/// An access token that expires mid-upload: Graph answers 401, the client refreshes once
/// (spending and replacing the refresh token) and continues.
async fn an_expired_token_is_refreshed_once_mid_upload(l: Linked) {
    let before = l.app.raw_text("SELECT refresh_token FROM operators").await;
    l.fault(json!([{"method": "POST", "path": "*/createUploadSession", "status": 401, "times": 1}]))
        .await;
    let data = csv(20_000);
    let a = l.export(&data, "Refreshed", &[]).await;
    assert_eq!(a.status, 201, "{}", a.text);
    same_export(&l, &l.drive_file("Refreshed.xlsx").await.unwrap(), &data, "Refreshed").await;
    let log = l.requests().await;
    let token_calls = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token"))
        .count();
    assert_eq!(token_calls, 2, "the sign-in, then exactly one refresh");
    let after = l.app.raw_text("SELECT refresh_token FROM operators").await;
    assert_ne!(before, after, "the refresh token was replaced");
}

/// v2-oauth2-auth-code-flow.md: a revoked refresh token answers `invalid_grant`; the operator
/// is marked `signin_required` and the API says so with the sign-in link — never a 500.
async fn a_revoked_refresh_token_means_signin_required(l: Linked) {
    l.revoke_refresh_tokens().await;
    // The cached access token is still good until Graph refuses it.
    l.fault(json!([{"method": "PUT", "path": "/v1.0/me/drive/*", "status": 401, "times": 1}]))
        .await;
    let a = l.export(&csv(5), "Revoked", &[]).await;
    a.assert_problem(401, None);
    assert_eq!(a.json["type"], "/problems/signin-required");
    assert!(a.json["signin_url"].as_str().unwrap().contains("/auth/signin?link="));
    let op = l.app.admin_get(&format!("/api/v1/operators/{OPERATOR}")).await;
    assert_eq!(op.json["signin"], "signin_required");
    assert_eq!(l.app.raw_text("SELECT refresh_token FROM operators").await, vec![None]);
    // Signing in again fixes it.
    assert_eq!(l.sign_in(OPERATOR, DEMO_USER).await.status, 200);
    assert_eq!(l.export(&csv(5), "Revoked", &[]).await.status, 201);
}

async fn never_signed_in_means_signin_required(l: Linked) {
    let a = l.export(&csv(5), "Never", &[]).await;
    a.assert_problem(401, None);
    assert_eq!(a.json["type"], "/problems/signin-required");
    // The link in the answer is a working one: it leads to the tenant's sign-in page.
    let link = a.json["signin_url"].as_str().unwrap();
    assert!(link.contains("/auth/signin?link="), "{link}");
    let start = l.browser.get(link).send().await.unwrap();
    assert_eq!(start.status(), 302);
    assert!(start.headers()["location"].to_str().unwrap().starts_with(&l.emu));
    assert!(
        l.requests()
            .await
            .iter()
            .all(|r| !r["path"].as_str().unwrap().starts_with("/v1.0/"))
    );
}

/// A callback with an unknown, reused or expired state is a 400 and stores nothing.
async fn callback_states_are_single_use_and_expire(l: Linked) {
    let callback = l.authorize(OPERATOR, DEMO_USER).await;
    let forged = callback.replace("state=", "state=x");
    let a = Answer::from(l.browser.get(&forged).send().await.unwrap()).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("unknown"));
    let no_state = Answer::from(l.browser.get(l.app.url("/auth/callback?code=abc")).send().await.unwrap()).await;
    assert_eq!(no_state.status, 400);
    assert_eq!(l.app.raw_text("SELECT refresh_token FROM operators").await, vec![None]);

    let ok = Answer::from(l.browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let stored = l.app.raw_text("SELECT refresh_token FROM operators").await;
    let reused = Answer::from(l.browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(reused.status, 400, "a state is used once");
    assert_eq!(l.app.raw_text("SELECT refresh_token FROM operators").await, stored);

    // An expired state (older than 10 minutes) is refused like an unknown one.
    let code = officebridge::domain::OperatorCode::parse(OPERATOR).unwrap();
    l.app
        .store
        .put_pending_signin(
            "expired-state-0123456789",
            &officebridge::store::models::PendingSignin {
                operator: code,
                verifier: officebridge::domain::Secret::new("v".repeat(43)),
                nonce: "n".into(),
                redirect_uri: l.app.url("/auth/callback"),
                expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
            },
            5,
            1000,
        )
        .await
        .unwrap();
    let expired = Answer::from(
        l.browser
            .get(l.app.url("/auth/callback?code=abc&state=expired-state-0123456789"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(expired.status, 400);
    // The state is kept only as a hash, and the verifier sealed.
    let states = l.app.raw_text("SELECT verifier FROM signin_states").await;
    assert!(states.iter().all(|v| v.as_deref().unwrap().starts_with("v1.")));
}

async fn async_export_to_onedrive(l: Linked) {
    let data = csv(100);
    let r = l.export(&data, "Later", &[("prefer", "respond-async")]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        let s = Answer::from(l.app.client_get(&format!("/api/v1/exports/{id}")).await).await;
        status = s.json;
        if status["state"] == "done" || status["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["onedrive"]["name"], "Later.xlsx");
    let landed = l.drive_file("Later.xlsx").await.unwrap();
    assert_eq!(status["onedrive"]["size"], landed.len());
    same_export(&l, &landed, &data, "Later").await;
}

async fn onedrive_export_input_errors(l: Linked) {
    // No X-Operator.
    let a = Answer::from(
        l.app
            .client_post("/api/v1/exports?destination=onedrive", "text/csv", "A\n1\n", &[])
            .await,
    )
    .await;
    a.assert_problem(422, Some("X-Operator"));
    // An operator that does not exist.
    let b = Answer::from(
        l.app
            .client_post(
                "/api/v1/exports?destination=onedrive",
                "text/csv",
                "A\n1\n",
                &[("x-operator", "NOBODY")],
            )
            .await,
    )
    .await;
    b.assert_problem(404, None);
    // An operator without Microsoft 365 enabled.
    l.app
        .admin_put("/api/v1/operators/OFF", &json!({"enabled": false, "tenant": "DEMO"}))
        .await;
    let c = Answer::from(
        l.app
            .client_post(
                "/api/v1/exports?destination=onedrive",
                "text/csv",
                "A\n1\n",
                &[("x-operator", "OFF")],
            )
            .await,
    )
    .await;
    c.assert_problem(422, Some("X-Operator"));
    // Without a link, an unknown operator, a known one and none at all get the same page.
    let get = |path: &'static str| {
        let l = &l;
        async move { Answer::from(l.browser.get(l.app.url(path)).send().await.unwrap()).await }
    };
    let (d, e, f) = (
        get("/auth/signin?operator=NOBODY").await,
        get("/auth/signin").await,
        get("/auth/signin?operator=JDOE").await,
    );
    assert_eq!((d.status, d.content_type.as_str()), (400, "text/html; charset=utf-8"));
    assert!(d.text.contains("Sign-in link needed"), "{}", d.text);
    assert_eq!((&d.text, &d.text), (&e.text, &f.text));
    assert!(!d.text.contains(DEMO_USER));
    // Signing in as someone else than the operator's address replaces nothing.
    let before = l.app.raw_text("SELECT refresh_token FROM operators WHERE code = 'JDOE'").await;
    let other = l.sign_in(OPERATOR, "mfa.user@demo.onmicrosoft.com").await;
    assert_eq!(other.status, 403, "{}", other.text);
    assert!(other.text.contains("but the sign-in was as mfa.user@"), "{}", other.text);
    assert_eq!(
        l.app.raw_text("SELECT refresh_token FROM operators WHERE code = 'JDOE'").await,
        before
    );
}

/// One refresh at a time per operator: callers that arrive while a refresh is in flight wait
/// for it instead of spending the (single-use) refresh token again. A fresh token store over
/// the same database has an empty cache, as after a restart.
async fn concurrent_callers_share_one_refresh(l: Linked) {
    use officebridge::identity::tokens::Tokens;
    let tokens = std::sync::Arc::new(Tokens::new(officebridge::identity::oauth::http_client(), l.app.store.clone()));
    let code = officebridge::domain::OperatorCode::parse(OPERATOR).unwrap();
    let before = token_calls(&l).await;
    let calls = (0..8).map(|_| {
        let (tokens, code) = (tokens.clone(), code.clone());
        tokio::spawn(async move { tokens.operator_token(&code).await.map(|t| t.expose_secret().to_string()) })
    });
    let got: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("a token"))
        .collect();
    assert!(got.iter().all(|t| t == &got[0]), "every caller got the one new token");
    assert_eq!(token_calls(&l).await - before, 1, "exactly one refresh");
    // Cached from now on.
    tokens.operator_token(&code).await.unwrap();
    assert_eq!(token_calls(&l).await - before, 1);
}

async fn token_calls(l: &Linked) -> usize {
    l.requests()
        .await
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token"))
        .count()
}

/// v2-oauth2-device-code.md: the desktop client shows the user code; the server polls (at the
/// interval, through `authorization_pending`) until the user signs in.
async fn device_code_signin_links_the_operator(l: Linked) {
    let started = Answer::from(
        l.app
            .http
            .post(l.app.url(&format!("/api/v1/operators/{OPERATOR}/signin/device")))
            .bearer_auth(&l.app.client_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text);
    let user_code = started.json["user_code"].as_str().unwrap().to_string();
    assert!(started.json["verification_uri"].as_str().unwrap().ends_with("/devicelogin"));
    assert!(started.json.get("device_code").is_none(), "the device code stays on the server");
    // The user opens the verification page and signs in.
    let done = l
        .browser
        .post(format!("{}/devicelogin", l.emu))
        .form(&[("user_code", user_code.as_str()), ("user", DEMO_USER)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let mut signin = Value::Null;
    for _ in 0..80 {
        signin = l.app.admin_get(&format!("/api/v1/operators/{OPERATOR}")).await.json["signin"].clone();
        if signin == "linked" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(signin, "linked");
    assert_eq!(l.export(&csv(3), "Device", &[]).await.status, 201);
    // An unknown operator cannot start one.
    let unknown = Answer::from(
        l.app
            .http
            .post(l.app.url("/api/v1/operators/NOBODY/signin/device"))
            .bearer_auth(&l.app.client_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    unknown.assert_problem(404, None);
}

/// SPEC §6: `officebridge export INPUT --onedrive --operator CODE` uploads like the API and
/// prints `{id, name, size, webUrl}`.
#[tokio::test]
async fn cli_export_to_onedrive() {
    let l = small(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Stock.csv");
    std::fs::write(&input, csv(25)).unwrap();
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_officebridge"));
        cmd.current_dir(dir.path())
            .env("OFFICEBRIDGE_DATABASE_URL", &l.app.database_url)
            .env("OFFICEBRIDGE_MASTER_KEY", l.app.master_key.expose_secret())
            .env("OFFICEBRIDGE_ALLOW_EMULATOR", "true")
            .env("OFFICEBRIDGE_LOG__LEVEL", "warn")
            .args(args);
        async move { tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap() }
    };
    let out = run(vec![
        "export".into(),
        input.display().to_string(),
        "--onedrive".into(),
        "--operator".into(),
        OPERATOR.into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let item: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(item["name"], "Stock.xlsx");
    let landed = l.drive_file("Stock.xlsx").await.unwrap();
    assert_eq!(item["size"], landed.len());
    same_workbook(&landed, 25);
    assert!(!dir.path().join("Stock.xlsx").exists(), "without -o nothing is left here");

    // --onedrive needs --operator; an operator who must sign in is told where.
    let out = run(vec!["export".into(), input.display().to_string(), "--onedrive".into()]).await;
    assert!(!out.status.success());
    l.app
        .admin_put("/api/v1/operators/NEWBIE", &json!({"enabled": true, "tenant": "DEMO"}))
        .await;
    let out = run(vec![
        "export".into(),
        input.display().to_string(),
        "--onedrive".into(),
        "--operator".into(),
        "NEWBIE".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("/auth/signin?link="), "{stderr}");
}

/// concepts/paging.md: `@odata.nextLink` followed as given, as one stream; and
/// concepts/throttling-limits.md: Outlook allows 4 concurrent requests per app and mailbox —
/// the client keeps to it, so 8 concurrent slow calls never meet the emulator's 429.
async fn graph_client_pages_and_keeps_to_four_per_mailbox(l: Linked) {
    use futures_util::TryStreamExt;
    use officebridge::graph::{Graph, Principal, RetryPolicy};
    use officebridge::identity::tokens::Tokens;
    let tokens = std::sync::Arc::new(Tokens::new(officebridge::identity::oauth::http_client(), l.app.store.clone()));
    let graph = std::sync::Arc::new(Graph::new(tokens, RetryPolicy::default()));
    let who = Principal::Operator(officebridge::domain::OperatorCode::parse(OPERATOR).unwrap());
    let all: Vec<Value> = graph
        .pages(&who, format!("{}/v1.0/me/contacts?$top=1", l.emu))
        .try_collect()
        .await
        .unwrap();
    // /me/contacts lists the default Contacts folder (contact-list.md), not its subfolders.
    let seeded = Seed::demo().tenants[0].users[0]
        .contacts
        .iter()
        .filter(|c| c.folder.is_none())
        .count();
    assert!(seeded > 1, "the demo user has several contacts in the Contacts folder");
    assert_eq!(all.len(), seeded, "every page, one contact each");
    let pages = l.requests().await.iter().filter(|r| r["path"] == "/v1.0/me/contacts").count();
    assert_eq!(pages, seeded, "one request per page");

    l.fault(json!([{"method": "GET", "path": "/v1.0/me/people", "delay_ms": 300, "times": 8}]))
        .await;
    let calls = (0..8).map(|_| {
        let (graph, who, url) = (graph.clone(), who.clone(), format!("{}/v1.0/me/people", l.emu));
        tokio::spawn(async move { graph.get_json(&who, &url).await.map(|_| ()) })
    });
    for r in futures_util::future::join_all(calls).await {
        r.unwrap().expect("every call succeeds");
    }
    let log = l.requests().await;
    let people: Vec<_> = log.iter().filter(|r| r["path"] == "/v1.0/me/people").collect();
    assert_eq!(people.len(), 8);
    assert!(people.iter().all(|r| r["status"] == 200), "never more than 4 at once: {people:?}");
}
