//! The real `officebridge` binary: `serve --dev`, production start-up rules, the CLI, key
//! rotation, and a whole scenario's logs searched for secrets.

use crate::helpers::{Answer, Backend, fresh_database, tenant_body};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_officebridge");

/// A command with a clean environment: no OFFICEBRIDGE_* leaking in from the test runner.
fn officebridge(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("OFFICEBRIDGE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a CLI command to completion: (success, stdout, stderr).
fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = officebridge(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A running `officebridge serve`, with everything it printed collected.
struct Server {
    child: Child,
    base: String,
    output: Arc<Mutex<String>>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("officebridge listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start:\n{}", output.lock().unwrap()));
        Self { child, base, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGTERM, then wait: graceful shutdown must end the process.
    fn stop(mut self) -> String {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "server exited with {status}");
                std::thread::sleep(Duration::from_millis(100));
                return self.output();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not stop on SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn serve_dev_answers_healthz_within_two_seconds_and_writes_dev_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = officebridge(dir.path());
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0"]);
    let started = Instant::now();
    let server = Server::start(cmd);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", server.base)).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "no /healthz within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/dev-keys.json")).unwrap()).unwrap();
    let (admin, client) = (keys["admin"].as_str().unwrap(), keys["client"].as_str().unwrap());
    assert!(server.output().contains(admin), "the dev keys are printed once");
    assert!(dir.path().join("data/master.key").exists() && dir.path().join("data/officebridge.db").exists());
    let ok = http
        .get(format!("{}/api/v1/tenants", server.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let forbidden = http
        .get(format!("{}/api/v1/tenants", server.base))
        .bearer_auth(client)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    // In dev mode the in-process emulator may be named as a tenant's endpoints (tenant DEMO
    // is), but no other loopback address: whatever else listens there would get the secret.
    let mut body = tenant_body("EMU");
    body["authority"] = json!("http://127.0.0.1:9");
    body["graph_endpoint"] = json!("http://127.0.0.1:9");
    let refused = http
        .post(format!("{}/api/v1/tenants", server.base))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let refused = Answer::from(refused).await;
    refused.assert_problem(422, Some("authority"));
    assert!(refused.text.contains("the configured Microsoft 365 emulator"), "{}", refused.text);
    // public_url follows --listen in dev mode: a sign-in link comes back to this port
    // (issue 18: it pointed at localhost:8080 whatever the port).
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let link: Value = http
        .post(format!("{}/api/v1/operators/DEMO/signin", server.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://localhost:{port}/auth/signin?link=")), "{url}");
    // Tenant DEMO is the in-process emulator and operator DEMO is signed in: an export lands
    // in OneDrive right after start.
    let exported = onedrive_export(&http, &server.base, client).await;
    assert_eq!(exported["name"], "Dev.xlsx");
    assert!(exported["webUrl"].as_str().unwrap().starts_with("http"));
    server.stop();

    // A second start keeps the same keys and does not print them again.
    let mut cmd = officebridge(dir.path());
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0"]);
    let again = Server::start(cmd);
    let keys2: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/dev-keys.json")).unwrap()).unwrap();
    assert_eq!(keys, keys2);
    let r = http
        .get(format!("{}/api/v1/tenants/DEMO", again.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The emulator moved to a new port and forgot its tokens; the seeding followed it.
    assert_eq!(onedrive_export(&http, &again.base, client).await["name"], "Dev.xlsx");
    assert!(!again.stop().contains(admin));
}

async fn onedrive_export(http: &reqwest::Client, base: &str, client_key: &str) -> Value {
    let r = http
        .post(format!("{base}/api/v1/exports?destination=onedrive&title=Dev"))
        .bearer_auth(client_key)
        .header("x-operator", "DEMO")
        .header("content-type", "text/csv")
        .body("Item,Qty\nBolt,3\n")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

#[test]
fn a_public_url_that_is_not_a_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(
        dir.path(),
        &["--dev", "serve", "--listen", "127.0.0.1:0", "--public-url", "officebridge here"],
        None,
    );
    assert!(!ok && err.contains("--public-url") && err.contains("is not a URL"), "{err}");
    let (ok, _, err) = run(dir.path(), &["--dev", "serve", "--public-url", "ftp://example.com"], None);
    assert!(!ok && err.contains("http or https"), "{err}");
}

#[test]
fn production_refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"], None);
    assert!(!ok);
    assert!(
        err.contains("no master key") && err.contains("head -c 32 /dev/urandom | base64"),
        "{err}"
    );
    let (ok, _, err) = run(dir.path(), &["--config", "missing.toml", "migrate"], None);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn default_config_prints_the_commented_example() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &["default-config"], None);
    assert!(ok);
    assert_eq!(out, officebridge::config::EXAMPLE_TOML);
    assert!(out.contains("# sqlite://PATH") && out.contains("master_key_file"));
}

#[test]
fn cli_administers_tenants_operators_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = run(
        d,
        &[
            "--dev",
            "tenants",
            "add",
            "--code",
            "contoso",
            "--tenant-id",
            "contoso.onmicrosoft.com",
            "--client-id",
            "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a",
            "--client-secret-file",
            "-",
        ],
        Some("cli-secret-value\n"),
    );
    assert!(ok, "{err}");
    assert!(!out.contains("cli-secret-value"));
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (t["code"].as_str(), t["client_secret"]["set"].as_bool()),
        (Some("CONTOSO"), Some(true))
    );

    let (ok, _, err) = run(
        d,
        &[
            "--dev",
            "tenants",
            "add",
            "--code",
            "bad",
            "--tenant-id",
            "x.com",
            "--client-id",
            "nope",
        ],
        None,
    );
    assert!(!ok && err.contains("client_id: must be a GUID"), "{err}");

    let (ok, out, _) = run(d, &["--dev", "tenants", "update", "CONTOSO", "--description", "Prod"], None);
    assert!(ok);
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (t["description"].as_str(), t["client_secret"]["set"].as_bool()),
        (Some("Prod"), Some(true)),
        "update keeps the rest"
    );

    let (ok, out, err) = run(
        d,
        &[
            "--dev",
            "operators",
            "set",
            "jdoe",
            "--tenant",
            "CONTOSO",
            "--email",
            "jdoe@contoso.com",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["signin"], "never");
    let (ok, _, err) = run(d, &["--dev", "tenants", "remove", "CONTOSO"], None);
    assert!(!ok && err.contains("jdoe"), "{err}");

    let (ok, key, err) = run(d, &["--dev", "apikeys", "create", "--name", "erp", "--role", "client"], None);
    assert!(ok && err.contains("shown only now"), "{err}");
    let (_, list, _) = run(d, &["--dev", "apikeys", "list"], None);
    assert!(list.contains("\"erp\"") && !list.contains(key.trim()));
    let (ok, _, _) = run(d, &["--dev", "apikeys", "revoke", "erp"], None);
    assert!(ok);
    let (_, list, _) = run(d, &["--dev", "apikeys", "list"], None);
    assert!(serde_json::from_str::<Value>(&list).unwrap()[0]["revoked_at"].is_string());

    // rotate-key re-seals the secret; the tenant still decrypts with the replaced dev key.
    let before = std::fs::read_to_string(d.join("data/master.key")).unwrap();
    let (ok, _, err) = run(d, &["--dev", "rotate-key"], None);
    assert!(ok && err.contains("re-encrypted 1 secret"), "{err}");
    let after = std::fs::read_to_string(d.join("data/master.key")).unwrap();
    assert_ne!(before, after);
    let (ok, out, err) = run(d, &["--dev", "tenants", "show", "CONTOSO"], None);
    assert!(ok && out.contains("\"set\": true"), "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = rt.block_on(async {
        let ring = officebridge::store::secrets::Keyring::new(
            officebridge::store::secrets::MasterKey::parse(&officebridge::domain::Secret::new(after.trim())).unwrap(),
            vec![],
        );
        let url = officebridge::domain::Secret::new(format!("sqlite://{}/data/officebridge.db", d.display()));
        let store = officebridge::store::Store::connect(&url, ring).await.unwrap();
        store
            .tenant_client_secret(&officebridge::domain::TenantCode::parse("CONTOSO").unwrap())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(secret.expose_secret(), "cli-secret-value");
}

/// A whole administrative scenario at debug level, in JSON logs, on PostgreSQL when
/// available: no secret may appear anywhere in what the server printed.
#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let backend = if crate::helpers::postgres_base_url().is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let database_url = fresh_database(backend, dir.path()).await.unwrap();
    let (_, master_key) = officebridge::store::secrets::MasterKey::generate();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, master_key.expose_secret()).unwrap();
    let (ok, admin_key, err) = {
        let mut cmd = officebridge(dir.path());
        cmd.env("OFFICEBRIDGE_DATABASE_URL", &database_url)
            .env("OFFICEBRIDGE_MASTER_KEY_FILE", &key_file);
        let out = cmd
            .args(["apikeys", "create", "--name", "ops", "--role", "admin"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(ok, "{err}");

    let mut cmd = officebridge(dir.path());
    cmd.env("OFFICEBRIDGE_DATABASE_URL", &database_url)
        .env("OFFICEBRIDGE_MASTER_KEY_FILE", &key_file)
        .env("OFFICEBRIDGE_LOG__FORMAT", "json")
        .env("RUST_LOG", "debug")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let server = Server::start(cmd);
    let http = reqwest::Client::new();
    let client_secret = "Qx9~client.secret-VALUE-7781";
    let mut body = tenant_body("CONTOSO");
    body["client_secret"] = json!(client_secret);
    let created = Answer::from(
        http.post(format!("{}/api/v1/tenants", server.base))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 201);
    // A conflict and a validation error echo input back in their own way.
    Answer::from(
        http.post(format!("{}/api/v1/tenants", server.base))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_problem(409, None);
    body["code"] = json!("OTHER");
    body["graph_endpoint"] = json!("http://169.254.169.254/");
    Answer::from(
        http.post(format!("{}/api/v1/tenants", server.base))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_problem(422, None);
    let new_key = Answer::from(
        http.post(format!("{}/api/v1/apikeys", server.base))
            .bearer_auth(&admin_key)
            .json(&json!({"name": "erp", "role": "client"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let client_key = new_key.json["key"].as_str().unwrap().to_string();
    let _ = http
        .get(format!("{}/api/v1/tenants", server.base))
        .bearer_auth(&client_key)
        .send()
        .await
        .unwrap();
    let _ = http
        .get(format!("{}/api/v1/tenants", server.base))
        .bearer_auth("obk_wrong-key-guess")
        .send()
        .await
        .unwrap();
    // An email profile's password, saved, refused (a conflict) and replaced.
    let profile_password = "Pw!email-profile-4417";
    let put = |path: &str, body: Value| {
        http.put(format!("{}{path}", server.base))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
    };
    assert_eq!(put("/api/v1/companies/ACME", json!({"name": "Acme"})).await.unwrap().status(), 201);
    let profile = json!({"name": "P", "provider": "smtp", "apply_to": "system", "functions": ["default"],
        "smtp": {"host": "mail.example.com", "from": "a@example.com", "auth": "password", "username": "u", "password": profile_password}});
    let saved = http
        .post(format!("{}/api/v1/profiles", server.base))
        .bearer_auth(&admin_key)
        .json(&profile)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    let mut clash = profile.clone();
    clash["name"] = json!("P2");
    let refused = http
        .post(format!("{}/api/v1/profiles", server.base))
        .bearer_auth(&admin_key)
        .json(&clash)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(put("/api/v1/profiles/P", profile.clone()).await.unwrap().status(), 200);
    let audit = Answer::from(
        http.get(format!("{}/api/v1/audit", server.base))
            .bearer_auth(&admin_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let logs = server.stop();

    assert!(
        logs.contains("\"route\":\"/api/v1/tenants\""),
        "expected JSON request spans in:\n{logs}"
    );
    for secret in [
        client_secret,
        profile_password,
        master_key.expose_secret(),
        &admin_key,
        &client_key,
        "obk_wrong-key-guess",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs: {secret}");
        assert!(!audit.text.contains(secret), "a secret reached the audit log");
    }
}

/// Companies and email profiles from the command line (issue 12): the same rules as the API,
/// errors naming the field or the profile already holding a function, no password printed.
#[test]
fn cli_administers_companies_and_email_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = run(d, &["--dev", "companies", "set", "acme", "--name", "Acme Ltd"], None);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["code"], "ACME");
    let profile = json!({
        "name": "ACME-AR", "provider": "smtp", "apply_to": {"companies": ["ACME"]},
        "functions": ["documents_accounts_receivable"],
        "smtp": {"host": "mail.acme.example", "port": 25, "from": "ar@acme.example",
                 "auth": "password", "username": "ar", "password": "cli-profile-pw"}
    });
    let (ok, out, err) = run(d, &["--dev", "profiles", "add", "-"], Some(&profile.to_string()));
    assert!(ok, "{err}");
    assert!(!out.contains("cli-profile-pw") && !err.contains("cli-profile-pw"));
    assert!(err.contains("warning: smtp.port"), "port 25 is a warning: {err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["smtp"]["password"],
        json!({"set": true})
    );

    let (ok, out, err) = run(
        d,
        &[
            "--dev",
            "profiles",
            "resolve",
            "--company",
            "ACME",
            "--function",
            "documents_accounts_receivable",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"profile": "ACME-AR", "provider": "smtp", "scope": "company", "function": "documents_accounts_receivable"})
    );
    let (ok, _, err) = run(
        d,
        &["--dev", "profiles", "resolve", "--company", "ACME", "--function", "all_reports"],
        None,
    );
    assert!(!ok && err.contains("all_reports") && err.contains("ACME"), "{err}");

    // The same claim again: refused, naming the first; a bad field: named.
    let mut second = profile.clone();
    second["name"] = json!("ACME-AR-2");
    let (ok, _, err) = run(d, &["--dev", "profiles", "add", "-"], Some(&second.to_string()));
    assert!(!ok && err.contains("'ACME-AR'"), "{err}");
    second["smtp"]["port"] = json!(0);
    let (ok, _, err) = run(d, &["--dev", "profiles", "add", "-"], Some(&second.to_string()));
    assert!(!ok && err.contains("smtp.port"), "{err}");

    let (ok, _, err) = run(d, &["--dev", "companies", "remove", "ACME"], None);
    assert!(!ok && err.contains("ACME-AR"), "a company in use is kept: {err}");

    let (ok, out, err) = run(d, &["--dev", "templates", "list"], None);
    assert!(ok && out.contains("\"document\""), "{err}");
    let vars = json!({"document": {"kind": "Statement", "number": "S-9"}, "recipient": {"name": "Ann"}});
    let (ok, out, err) = run(
        d,
        &["--dev", "templates", "preview", "document", "--company", "ACME", "--variables", "-"],
        Some(&vars.to_string()),
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["subject"],
        "Statement S-9 from Acme Ltd"
    );
    let (ok, _, err) = run(
        d,
        &["--dev", "templates", "preview", "document", "--company", "ACME", "--variables", "-"],
        Some(r#"{"recipient": {"name": "Ann"}}"#),
    );
    assert!(!ok && err.contains("document."), "the missing variable is named: {err}");
    let (ok, out, _) = run(d, &["--dev", "profiles", "list"], None);
    assert!(ok && !out.contains("cli-profile-pw"));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len(), 1);
    // rotate-key re-seals the profile's password too.
    let (ok, _, err) = run(d, &["--dev", "rotate-key"], None);
    assert!(ok && err.contains("re-encrypted 1 secret"), "{err}");
    let key = std::fs::read_to_string(d.join("data/master.key")).unwrap();
    let password = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ring = officebridge::store::secrets::Keyring::new(
            officebridge::store::secrets::MasterKey::parse(&officebridge::domain::Secret::new(key.trim())).unwrap(),
            vec![],
        );
        let url = officebridge::domain::Secret::new(format!("sqlite://{}/data/officebridge.db", d.display()));
        let store = officebridge::store::Store::connect(&url, ring).await.unwrap();
        store
            .profile_secret(&officebridge::domain::ProfileName::parse("ACME-AR").unwrap())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(password.expose_secret(), "cli-profile-pw");
    let (ok, _, err) = run(d, &["--dev", "profiles", "remove", "acme-ar"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = run(d, &["--dev", "companies", "remove", "ACME"], None);
    assert!(ok, "{err}");
}

/// How the drain below delivers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// To nodemailer's smtp-server, `on_ambiguous: resend`.
    Smtp,
    /// Through Graph direct to the emulator (running in this test process, so it outlives
    /// every kill).
    Graph,
}

/// SQLite, and PostgreSQL when the suite has it.
fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Sqlite];
    if crate::helpers::postgres_base_url().is_some() {
        b.push(Backend::Postgres);
    }
    b
}

#[tokio::test]
async fn kill_9_at_random_points_of_an_smtp_drain_loses_nothing() {
    for b in backends() {
        kill_9_during_a_drain(b, Via::Smtp).await;
    }
}

#[tokio::test]
async fn kill_9_at_random_points_of_a_graph_drain_loses_nothing_and_doubles_nothing() {
    for b in backends() {
        kill_9_during_a_drain(b, Via::Graph).await;
    }
}

/// The real binary draining 300 queued messages, killed with SIGKILL at random moments and
/// started again each time: every message is sent. Through Graph none arrives twice (each
/// step is recorded before the next and a crashed send is found in Sent Items). Through
/// SMTP a message arrives twice only when its delivery was caught in the RFC 1047 window —
/// the process stopped after "submitting" was committed — and the profile says `resend`,
/// which its attempts record.
async fn kill_9_during_a_drain(backend: Backend, via: Via) {
    use rand::Rng;
    const KILLS: usize = 6;
    let peer = match via {
        Via::Smtp => match crate::smtp::SmtpPeer::start().await {
            Some(p) => Some(p),
            None => return,
        },
        Via::Graph => None,
    };
    let emu = match via {
        Via::Graph => Some(crate::onedrive::emulator().await),
        Via::Smtp => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let database_url = fresh_database(backend, d).await.unwrap();
    let (_, master_key) = officebridge::store::secrets::MasterKey::generate();
    let env = |cmd: &mut Command| {
        cmd.env("OFFICEBRIDGE_DATABASE_URL", &database_url)
            .env("OFFICEBRIDGE_MASTER_KEY", master_key.expose_secret())
            .env("OFFICEBRIDGE_DATA_DIR", d)
            .env("OFFICEBRIDGE_MAIL__WORKERS", "4")
            .env("OFFICEBRIDGE_MAIL__LEASE_SECS", "1")
            .env("OFFICEBRIDGE_MAIL__RETRY_BASE_MS", "20")
            .env("OFFICEBRIDGE_MAIL__SENT_GRACE_MS", "300")
            .env("OFFICEBRIDGE_MAIL__POLL_MS", "50");
        if let Some(emu) = &emu {
            cmd.env("OFFICEBRIDGE_ALLOW_EMULATOR", "true").env("OFFICEBRIDGE_EMULATOR_URL", emu);
        }
    };
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = officebridge(d);
        env(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    cli(&["migrate"], None);
    let key = cli(&["apikeys", "create", "--name", "erp", "--role", "client"], None);
    let admin = cli(&["apikeys", "create", "--name", "ops", "--role", "admin"], None);
    cli(&["companies", "set", "ACME", "--name", "Acme Ltd"], None);
    let start = || {
        let mut cmd = officebridge(d);
        env(&mut cmd);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        Server::start(cmd)
    };
    let mut server = start();
    let http = reqwest::Client::new();
    let admin_post = |path: &str, body: Value| http.post(format!("{}{path}", server.base)).bearer_auth(&admin).json(&body).send();
    let profile = match (&peer, &emu) {
        (Some(peer), _) => json!({"name": "SINK", "provider": "smtp", "apply_to": "system", "functions": ["default"],
            "smtp": {"host": "127.0.0.1", "port": peer.port("plain"), "security": "none", "allow_insecure": true,
                     "auth": "none", "from": crate::smtp::SMTP_USER, "on_ambiguous": "resend"}}),
        (None, Some(emu)) => {
            let t = Answer::from(
                admin_post(
                    "/api/v1/tenants",
                    json!({"code": "DEMO", "tenant_id": officebridge::emulator::seed::DEMO_TENANT_ID,
                           "client_id": officebridge::emulator::seed::DEMO_CLIENT_ID, "platform": "public_client",
                           "redirect_url": "http://localhost", "client_secret": "demo-client-secret",
                           "authority": emu, "graph_endpoint": emu}),
                )
                .await
                .unwrap(),
            )
            .await;
            assert_eq!(t.status, 201, "{}", t.text);
            json!({"name": "DIRECT", "provider": "graph_direct", "apply_to": "system", "functions": ["default"],
                   "graph_direct": {"tenant": "DEMO", "from": officebridge::emulator::seed::DEMO_USER}})
        }
        _ => unreachable!(),
    };
    let p = Answer::from(admin_post("/api/v1/profiles", profile).await.unwrap()).await;
    assert_eq!(p.status, 201, "{}", p.text);

    // Through Graph every 20th message carries a 3.5 MB file (an upload session, killed
    // mid-way some of the time).
    let file: Vec<u8> = (0..3_500_000usize).map(|i| ((i * 31 + i / 7919) % 251) as u8).collect();
    let upload = match via {
        Via::Graph => {
            let a = Answer::from(
                http.post(format!("{}/api/v1/uploads?name=statement.pdf", server.base))
                    .bearer_auth(&key)
                    .header("content-type", "application/pdf")
                    .body(file.clone())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(a.status, 201, "{}", a.text);
            Some(a.json["id"].clone())
        }
        Via::Smtp => None,
    };
    // Queued while the server runs (and its workers already drain).
    let mut ids = Vec::new();
    let mut with_file = std::collections::HashSet::new();
    for chunk in (0..300).collect::<Vec<_>>().chunks(25) {
        let posts = chunk.iter().map(|i| {
            let mut body = json!({"company": "ACME", "function": "default", "to": ["ap@fabrikam.com"],
                                  "subject": format!("Statement {i}"), "text": "Your statement."});
            if let Some(up) = upload.as_ref().filter(|_| i % 20 == 0) {
                body["attachments"] = json!([{"upload": up}]);
            }
            http.post(format!("{}/api/v1/mail", server.base))
                .bearer_auth(&key)
                .json(&body)
                .send()
        });
        for (i, r) in chunk.iter().zip(futures_util::future::join_all(posts).await) {
            let a = Answer::from(r.unwrap()).await;
            assert_eq!(a.status, 202, "{}", a.text);
            let id = a.json["id"].as_str().unwrap().to_string();
            if upload.is_some() && i % 20 == 0 {
                with_file.insert(id.clone());
            }
            ids.push(id);
        }
    }
    // Killed at random moments of the drain, started again each time.
    let mut rng = rand::thread_rng();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        server = start();
    }
    // Left to finish: every lease a killed process held expires after 1 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut states = std::collections::HashMap::new();
    loop {
        states.clear();
        for id in &ids {
            let a = Answer::from(
                http.get(format!("{}/api/v1/mail/{id}", server.base))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            states.insert(id.clone(), a.json);
        }
        if states.values().all(|m| m["state"] == "sent") || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // How many copies of each message arrived.
    let copies: std::collections::HashMap<String, usize> = match (&peer, &emu) {
        (Some(peer), _) => ids
            .iter()
            .map(|id| {
                let mid = officebridge::mail::smtp::message_id(id, crate::smtp::SMTP_USER);
                (id.clone(), peer.copies(&mid).len())
            })
            .collect(),
        (None, Some(emu)) => {
            let b = crate::mail::emulator_mailbox(&http, emu).await;
            assert!(b["drafts"].as_array().unwrap().is_empty(), "no draft left behind");
            let mut n = std::collections::HashMap::new();
            for m in b["sent"].as_array().unwrap() {
                for p in m["singleValueExtendedProperties"].as_array().into_iter().flatten() {
                    let id = p["value"].as_str().unwrap().to_string();
                    let atts = m["attachments"].as_array().map_or(0, Vec::len);
                    if with_file.contains(&id) {
                        use base64::Engine;
                        assert_eq!(atts, 1, "one attachment, not two: {id}");
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(m["attachments"][0]["contentBytes"].as_str().unwrap())
                            .unwrap();
                        assert!(bytes == file, "message {id}: the attachment is byte-identical");
                    } else {
                        assert_eq!(atts, 0, "{id}");
                    }
                    *n.entry(id).or_default() += 1;
                }
            }
            assert_eq!(with_file.len(), 15, "every 20th message had the file");
            n
        }
        _ => unreachable!(),
    };
    let (mut twice, mut extra) = (0, 0);
    for id in &ids {
        let m = &states[id];
        assert_eq!(m["state"], "sent", "every message is sent: {m}");
        let copies = copies.get(id).copied().unwrap_or(0);
        assert!(copies >= 1, "message {id} arrived: {m}");
        if copies > 1 {
            assert_eq!(via, Via::Smtp, "Graph never sends twice: {m}");
            twice += 1;
            extra += copies - 1;
            // Each kill catches a message in the window at most once.
            assert!(copies <= 1 + KILLS, "{copies} copies: {m}");
            let explained = m["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["outcome"] == "ambiguous" || a["detail"].as_str().is_some_and(|d| d.contains("sent again")));
            assert!(explained, "a second copy only from the RFC 1047 window, and said so: {m}");
        }
    }
    let arrived: usize = copies.values().sum();
    assert_eq!(arrived, 300 + extra, "no copy the messages above do not account for");
    // At most one message per worker (4) is in the window when a kill comes.
    assert!(extra <= KILLS * 4, "{extra} extra copies from {KILLS} kills");
    eprintln!(
        "kill -9 ×{KILLS} during a 300-message {via:?} drain ({backend:?}): 300 sent, {twice} caught in the window and sent again ({extra} extra copies)"
    );
    drop(server);
}
