//! What `serve --dev` provides on top of the product: a master key in the data folder, API
//! keys printed once, tenant `DEMO` pointing at the in-process Microsoft 365 emulator and
//! operator `DEMO` already signed in. Built only with the `emulator` feature; nothing in the
//! product depends on it.

use crate::app::write_private;
use crate::config::Settings;
use crate::domain::Secret;
use crate::store::Store;
use crate::store::models::Role;
use crate::store::secrets::MasterKey;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Fills in what `--dev` provides: a master key kept in the data folder (generated on first
/// start) and the Microsoft 365 emulator allowed as a tenant endpoint (its address is set
/// once it listens).
pub fn prepare_dev(settings: &mut Settings) -> anyhow::Result<()> {
    settings.dev = true;
    settings.allow_emulator = true;
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    if settings.master_key.is_none() {
        let path = settings.data_dir.join("master.key");
        if !path.exists() {
            let (_, encoded) = MasterKey::generate();
            write_private(&path, encoded.expose_secret())?;
            tracing::warn!(path = %path.display(), "dev mode: generated a master key; production needs its own (see the README)");
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        settings.master_key = Some(Secret::new(text.trim().to_string()));
    }
    Ok(())
}

/// The dev API keys, as written to `<data_dir>/dev-keys.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DevKeys {
    pub admin: String,
    pub client: String,
}

/// Makes sure `<data_dir>/dev-keys.json` holds a live admin and client key. Returns the keys
/// when they were just created (so the caller prints them once), `None` when the file's
/// keys still work.
pub async fn ensure_dev_keys(store: &Store, data_dir: &Path) -> anyhow::Result<Option<DevKeys>> {
    let path = data_dir.join("dev-keys.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(keys) = serde_json::from_str::<DevKeys>(&text)
        && store
            .authenticate_api_key(&keys.admin)
            .await?
            .is_some_and(|k| k.role == Role::Admin)
        && store
            .authenticate_api_key(&keys.client)
            .await?
            .is_some_and(|k| k.role == Role::Client)
    {
        return Ok(None);
    }
    let mut created = Vec::new();
    for (name, role) in [("dev-admin", Role::Admin), ("dev-client", Role::Client)] {
        // A stale key of the same name (its file was lost) is retired first.
        let _ = store.revoke_api_key("serve --dev", name).await;
        let (_, token) = store.create_api_key("serve --dev", name, role).await?;
        created.push(token.expose_secret().to_string());
    }
    let keys = DevKeys {
        admin: created[0].clone(),
        client: created[1].clone(),
    };
    write_private(&path, &serde_json::to_string_pretty(&keys)?)?;
    Ok(Some(keys))
}

/// Says where the emulator is and what the demo tenant is, for a person setting up a tenant.
fn announce_emulator(base: &str) {
    use crate::emulator::seed::{DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_TENANT_ID, DEMO_USER};
    println!("Microsoft 365 emulator listening on {base}");
    println!("  demo tenant {DEMO_DOMAIN} ({DEMO_TENANT_ID}), app {DEMO_CLIENT_ID} (secret demo-client-secret), user {DEMO_USER}");
}

/// `officebridge emulator`: the emulator alone, until a signal.
pub async fn run_emulator(listen: SocketAddr, seed: Option<PathBuf>) -> anyhow::Result<()> {
    crate::telemetry::init_logs(&crate::config::LogSettings {
        format: crate::config::LogFormat::Text,
        level: "info".into(),
    });
    let seed = match seed {
        Some(path) => crate::emulator::seed::Seed::load(&path)?,
        None => crate::emulator::seed::Seed::demo(),
    };
    let (base, server) = crate::emulator::spawn(listen, seed).await?;
    announce_emulator(&base);
    tokio::select! {
        () = crate::app::shutdown_signal() => Ok(()),
        r = server => r.map_err(Into::into),
    }
}

/// The in-process emulator of `serve --dev`.
pub struct DevEmulator {
    pub base: String,
    _server: tokio::task::JoinHandle<()>,
}

/// Starts the emulator on a port of its own before the application is built: tenant DEMO
/// points at it, and it is the one loopback address a tenant may use.
pub async fn start_emulator(settings: &mut Settings) -> anyhow::Result<DevEmulator> {
    let (base, server) = crate::emulator::spawn("127.0.0.1:0".parse().expect("valid"), crate::emulator::seed::Seed::demo()).await?;
    settings.emulator_url = Some(base.clone());
    Ok(DevEmulator { base, _server: server })
}

/// Company ACME with two ERP contacts (one shares an address with a personal contact of the
/// demo user), unless the company already has some.
async fn seed_dev_company(store: &Store) -> anyhow::Result<()> {
    use crate::store::contacts::ErpContact;
    let code = crate::domain::CompanyCode::parse("ACME").map_err(anyhow::Error::msg)?;
    store.put_company("dev", &code, "Acme Ltd").await?;
    if store.list_erp_contacts(&code).await?.is_empty() {
        let contact = |key: &str, name: &str, address: &str, account: &str, role: &str| ErpContact {
            key: key.into(),
            name: name.into(),
            address: address.into(),
            account: Some(account.into()),
            role: Some(role.into()),
        };
        let contacts = [
            contact("C4711-AP", "Jo Smith", "jo.smith@fabrikam.com", "4711", "accounts payable"),
            contact("S0042-PO", "Jonas Berg", "jonas@supplier.example", "S0042", "purchasing"),
        ];
        store.replace_erp_contacts("dev", &code, &contacts).await?;
    }
    Ok(())
}

/// Seeds tenant and operator DEMO and the dev API keys, and says so.
pub async fn provision(store: &Store, emulator: &DevEmulator, data_dir: &Path) -> anyhow::Result<()> {
    announce_emulator(&emulator.base);
    seed_dev_tenant(store, &emulator.base).await?;
    println!("dev mode: tenant {DEV_TENANT} is the emulator; operator {DEV_OPERATOR} is signed in as its demo user");
    seed_dev_company(store).await?;
    seed_dev_grid(store).await?;
    println!(
        "dev mode: company ACME publishes ERP contacts; search them with the mailbox: \
         GET /api/v1/contacts/search?q=jo&company=ACME with X-Operator: {DEV_OPERATOR}"
    );
    match ensure_dev_keys(store, data_dir).await? {
        Some(keys) => {
            println!("dev mode: API keys created (also in {}):", data_dir.join("dev-keys.json").display());
            println!("  admin:  {}", keys.admin);
            println!("  client: {}", keys.client);
        }
        None => println!("dev mode: API keys are in {}", data_dir.join("dev-keys.json").display()),
    }
    Ok(())
}

/// Shares a price list with operator DEMO for the Excel pane (once: not again while one is
/// there).
async fn seed_dev_grid(store: &Store) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    if !store.list_grids(DEV_OPERATOR, now).await?.is_empty() {
        return Ok(());
    }
    let mut ndjson = String::from(
        r#"{"name":"Price list","key":"sku","columns":[{"key":"sku","header":"SKU","type":"text"},{"key":"item","header":"Item","type":"text"},{"key":"price","header":"Price","type":"currency","currency":"EUR"},{"key":"stock","header":"In stock","type":"integer"},{"key":"next","header":"Next delivery","type":"date"}]}"#,
    );
    for i in 1..=250u32 {
        let next = now.date_naive() + chrono::Duration::days(i64::from(i % 30));
        let row = serde_json::json!([
            format!("SKU-{i:04}"),
            format!("Item {i}"),
            f64::from(i) * 1.5,
            i * 7 % 120,
            next.to_string()
        ]);
        ndjson.push('\n');
        ndjson.push_str(&row.to_string());
    }
    let record = crate::store::grids::GridRecord {
        id: uuid::Uuid::new_v4().to_string(),
        operator: DEV_OPERATOR.into(),
        name: String::new(),
        key: String::new(),
        columns: String::new(),
        rows: 0,
        created_at: now,
        expires_at: now + chrono::Duration::days(30),
    };
    let input = move || Ok(std::io::Cursor::new(ndjson.into_bytes()));
    crate::grids::share(
        store,
        "dev",
        record,
        crate::export::read::InputFormat::Ndjson,
        input,
        Default::default(),
        1_000_000,
    )
    .await?;
    Ok(())
}

/// The tenant and operator `serve --dev` provides.
pub const DEV_TENANT: &str = "DEMO";
pub const DEV_OPERATOR: &str = "DEMO";

/// Points tenant `DEMO` at the in-process emulator (its port changes on every start) and
/// links operator `DEMO` to the emulator's demo user, so a OneDrive export works at once.
/// The sign-in is the real authorization-code + PKCE exchange; only the account picker is
/// answered by code, through the emulator's sign-in request header.
pub async fn seed_dev_tenant(store: &Store, emulator: &str) -> anyhow::Result<()> {
    use crate::domain::{OperatorCode, TenantCode};
    use crate::emulator::seed::{DEMO_CLIENT_ID, DEMO_TENANT_ID, DEMO_USER};
    use crate::identity::oauth;
    use crate::store::models::NewOperator;
    let actor = "serve --dev";
    let input: crate::domain::TenantInput = serde_json::from_value(serde_json::json!({
        "code": DEV_TENANT,
        "description": "The built-in Microsoft 365 emulator (serve --dev)",
        "tenant_id": DEMO_TENANT_ID,
        "client_id": DEMO_CLIENT_ID,
        "platform": "public_client",
        "redirect_url": "http://localhost",
        "client_secret": "demo-client-secret",
        "authority": emulator,
        "graph_endpoint": emulator,
    }))?;
    let tenant = input
        .parse(None, Some(emulator))
        .map_err(|e| anyhow::anyhow!("the dev tenant does not parse: {e:?}"))?;
    let code = TenantCode::parse(DEV_TENANT).map_err(anyhow::Error::msg)?;
    match store.get_tenant(&code).await {
        Ok(_) => store.replace_tenant(actor, &tenant).await?,
        Err(crate::store::StoreError::NotFound { .. }) => store.create_tenant(actor, &tenant).await?,
        Err(e) => return Err(e.into()),
    };
    let operator = OperatorCode::parse(DEV_OPERATOR).map_err(anyhow::Error::msg)?;
    store
        .put_operator(
            actor,
            &NewOperator {
                code: operator.clone(),
                enabled: true,
                tenant: Some(code),
                email: Some(crate::domain::EmailAddress::parse(DEMO_USER).map_err(anyhow::Error::msg)?),
            },
        )
        .await?;

    // The shared client follows no redirects, so the emulator's answer to the account picker
    // (a redirect carrying the code) is read, not followed.
    let http = oauth::http_client();
    let endpoints = oauth::Endpoints::microsoft(emulator, DEMO_TENANT_ID);
    let app = oauth::ClientApp {
        client_id: DEMO_CLIENT_ID.into(),
        secret: None,
    };
    let pkce = oauth::pkce();
    let redirect_uri = "http://localhost/auth/callback";
    let scope = crate::identity::tokens::DELEGATED_SCOPES;
    let state = oauth::random_token();
    let url = oauth::authorize_url(
        &endpoints,
        &app,
        &oauth::AuthorizeRequest {
            redirect_uri,
            scope,
            state: &state,
            nonce: &oauth::random_token(),
            challenge: &pkce.challenge,
            login_hint: Some(DEMO_USER),
        },
    )?;
    let page = http.get(&url).send().await?;
    let request = page
        .headers()
        .get("x-emulator-signin-request")
        .and_then(|v| v.to_str().ok())
        .context("the emulator did not show its sign-in page")?
        .to_string();
    let back = http
        .post(&endpoints.authorize)
        .form(&[("request", request.as_str()), ("user", DEMO_USER)])
        .send()
        .await?;
    let location = back
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("the emulator did not redirect back")?;
    let location = url::Url::parse(location)?;
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("the emulator sent no code")?;
    let tokens = oauth::redeem_code(&http, &endpoints, &app, &code, &pkce.verifier, redirect_uri, scope).await?;
    let refresh = tokens.refresh_token.context("the emulator issued no refresh token")?;
    store.store_refresh_token(&operator, &refresh).await?;
    Ok(())
}
