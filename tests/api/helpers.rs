//! `spawn_app()`: the real server on port 0 with a fresh database — a SQLite file in a
//! temporary folder, or a PostgreSQL schema of its own — and typed helpers around it.

use officebridge::app::Application;
use officebridge::config::Settings;
use officebridge::domain::Secret;
use officebridge::store::Store;
use officebridge::store::models::Role;
use officebridge::store::secrets::MasterKey;
use serde_json::Value;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    /// The metrics listener, when `metrics.listen` was set.
    pub metrics_address: Option<String>,
    pub http: reqwest::Client,
    pub admin_key: String,
    pub client_key: String,
    pub store: Store,
    /// The outbox's delivery, for tests that drain it instead of waiting.
    pub outbox: std::sync::Arc<officebridge::mail::outbox::Outbox>,
    pub database_url: String,
    pub master_key: Secret,
    pub backend: Backend,
    /// What the server was started with, for [`TestApp::spawn_peer`].
    settings: Settings,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The PostgreSQL server to test against, from `OFFICEBRIDGE_TEST_POSTGRES_URL`. Unset, the
/// PostgreSQL variants are skipped — except under CI, where that is a failure.
pub fn postgres_base_url() -> Option<String> {
    match std::env::var("OFFICEBRIDGE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must test PostgreSQL: set OFFICEBRIDGE_TEST_POSTGRES_URL (the README's test command does)")
        }
        _ => None,
    }
}

/// Whether an outside tool a test needs (`what`) is here. Missing, the test is skipped —
/// except under CI, where the README's test command installs it, so there it is a failure.
pub fn tool_available(available: bool, what: &str) -> bool {
    if !available {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{what} is required under CI (the README's test command, scripts/test, installs it)"
        );
        eprintln!("skipped: {what} is not installed");
    }
    available
}

/// Whether `python3` can import every module in `modules` (`"openpyxl"`, `"authlib, requests"`).
pub fn python_has(modules: &str) -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    tool_available(available, &format!("python3 with {modules}"))
}

/// A database URL of a fresh, empty database for one test.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}/officebridge.db", dir.display())),
        Backend::Postgres => {
            let base = postgres_base_url()?;
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("PostgreSQL is reachable at OFFICEBRIDGE_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create test schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// `spawn_app` with settings adjusted by `tweak` before the server starts.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = fresh_database(backend, dir.path()).await?;
    let (_, master_key) = MasterKey::generate();
    let mut settings = Settings::load(None).expect("default settings load");
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = dir.path().to_path_buf();
    settings.database_url = Secret::new(database_url.clone());
    settings.master_key = Some(master_key.clone());
    settings.allow_emulator = false;
    tweak(&mut settings);
    launch(settings, backend, dir, None).await
}

/// Starts the server on `settings`; `keys` are the API keys of an app already on that
/// database (a peer), else new ones are made.
async fn launch(settings: Settings, backend: Backend, dir: tempfile::TempDir, keys: Option<(String, String)>) -> Option<TestApp> {
    let database_url = settings.database_url.expose_secret().to_string();
    let master_key = settings.master_key.clone().expect("a master key");
    let app = Application::build(settings.clone()).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    let store = app.store().clone();
    let outbox = app.outbox();
    let (admin_key, client_key) = match keys {
        Some(k) => k,
        None => {
            let (admin, admin_key) = store.create_api_key("test", "test-admin", Role::Admin).await.unwrap();
            let (_, client_key) = store.create_api_key("test", "test-client", Role::Client).await.unwrap();
            assert_eq!(admin.role, Role::Admin);
            (admin_key.expose_secret().to_string(), client_key.expose_secret().to_string())
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    Some(TestApp {
        address,
        metrics_address,
        http: reqwest::Client::new(),
        admin_key,
        client_key,
        store,
        outbox,
        database_url,
        master_key,
        backend,
        settings,
        dir,
        shutdown: Some(tx),
        running: Some(running),
    })
}

impl TestApp {
    /// A second instance on the same database, with the same settings but its own data
    /// folder and port, as a load balancer's second instance would run (SPEC §3.7).
    pub async fn spawn_peer(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = self.settings.clone();
        settings.data_dir = dir.path().to_path_buf();
        tweak(&mut settings);
        launch(settings, self.backend, dir, Some((self.admin_key.clone(), self.client_key.clone())))
            .await
            .expect("the peer starts")
    }
}

impl TestApp {
    /// Shuts the application down as SIGTERM does and waits until `run` has returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.running.take() {
            Some(running) => running.await.expect("run does not panic"),
            None => Ok(()),
        }
    }
}

/// A response read whole: status, content type and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }

    pub fn location(&self) -> Option<String> {
        self.header("location")
    }

    pub async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            content_type,
            text,
            json,
            headers,
        }
    }

    /// Asserts a problem+json answer with this status naming `field` among its errors.
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.content_type, "application/problem+json", "{}", self.text);
        assert_eq!(self.json["status"], status);
        assert!(
            self.json["type"].as_str().is_some_and(|t| t.starts_with("/problems/")),
            "{}",
            self.text
        );
        assert!(self.json["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", self.text);
        if let Some(field) = field {
            let fields: Vec<&str> = self.json["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(fields.contains(&field), "expected field {field} in {}", self.text);
        }
    }
}

impl TestApp {
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    async fn send(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
        let mut req = self.http.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Answer::from(req.send().await.expect("request sent")).await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, Some(&self.admin_key), None).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(&self.admin_key), Some(body)).await
    }

    pub async fn admin_put(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(&self.admin_key), Some(body)).await
    }

    pub async fn admin_delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, Some(&self.admin_key), None).await
    }

    pub async fn get_with(&self, path: &str, key: Option<&str>) -> Answer {
        self.send(reqwest::Method::GET, path, key, None).await
    }

    /// Sends raw bytes with a content type (for malformed bodies).
    pub async fn admin_raw(&self, method: reqwest::Method, path: &str, content_type: &str, body: &str) -> Answer {
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_key)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Answer::from(resp).await
    }

    /// Posts a body with a content type and extra headers, with the client key.
    pub async fn client_post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.client_key)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// Posts a JSON body with the client key.
    pub async fn client_post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(&self.client_key), Some(body)).await
    }

    pub async fn client_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.client_key)
            .send()
            .await
            .expect("request sent")
    }

    /// Puts a body with a content type, with the client key.
    pub async fn client_put(&self, path: &str, content_type: &str, body: String) -> Answer {
        let resp = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.client_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        Answer::from(resp).await
    }

    /// `GET` with the client key, acting for `operator` (`X-Operator`) when given.
    pub async fn client_get_as(&self, path: &str, operator: Option<&str>) -> Answer {
        let mut req = self.http.get(self.url(path)).bearer_auth(&self.client_key);
        if let Some(op) = operator {
            req = req.header("X-Operator", op);
        }
        Answer::from(req.send().await.expect("request sent")).await
    }

    /// Runs one statement straight on the database, bypassing the app.
    pub async fn raw_exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Reads one text column straight from the database, bypassing the app.
    pub async fn raw_text(&self, sql: &str) -> Vec<Option<String>> {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
        }
    }

    /// The audited actions, newest first, leaving out `spawn_app`'s own setup.
    pub async fn audit_actions(&self) -> Vec<String> {
        self.store
            .list_audit(1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.actor != "test")
            .map(|e| e.action)
            .collect()
    }
}

/// Completes the emulator's sign-in page as a browser would: opens `authorize_url` (the
/// account picker, which must list `user`), picks `user`, approves MFA when asked, and answers
/// the redirect's `Location` (the app's redirect URI with the code). `http` must not follow
/// redirects.
pub async fn pick_account(http: &reqwest::Client, authorize_url: &str, user: &str) -> String {
    let page = http.get(authorize_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let request = page.headers()["x-emulator-signin-request"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(user), "the account picker lists {user}");
    let endpoint = authorize_url.split('?').next().unwrap();
    let post = |form: Vec<(&'static str, String)>| http.post(endpoint).form(&form).send();
    let mut resp = post(vec![("request", request.clone()), ("user", user.to_string())]).await.unwrap();
    if resp.headers().get("x-emulator-mfa").is_some() {
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("Approve"));
        resp = post(vec![("request", request), ("user", user.to_string()), ("mfa", "approved".into())])
            .await
            .unwrap();
    }
    assert_eq!(resp.status(), 302);
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// The emulator's request log (`GET /_emulator/requests`).
pub async fn emulator_requests(http: &reqwest::Client, emulator: &str) -> Vec<Value> {
    let r = http.get(format!("{emulator}/_emulator/requests")).send().await.unwrap();
    r.json::<Vec<Value>>().await.unwrap()
}

/// A valid tenant body.
pub fn tenant_body(code: &str) -> Value {
    serde_json::json!({
        "code": code,
        "description": "Contoso production tenant",
        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "client_id": "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a",
        "platform": "public_client",
        "redirect_url": "https://localhost"
    })
}

/// Runs each named scenario `async fn name(app: TestApp)` once per backend, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::helpers::{spawn_app, Backend};

                #[tokio::test]
                async fn sqlite() {
                    super::$name(spawn_app(Backend::Sqlite).await.expect("sqlite always runs")).await;
                }

                #[tokio::test]
                async fn postgres() {
                    match spawn_app(Backend::Postgres).await {
                        Some(app) => super::$name(app).await,
                        None => eprintln!("skipped: OFFICEBRIDGE_TEST_POSTGRES_URL is not set"),
                    }
                }
            }
        )*
    };
}
