//! The store on its own, run against both backends (Atuin's `db_story`).

use crate::helpers::{TestApp, tenant_body};
use crate::on_both_backends;
use officebridge::domain::{CompanyCode, OperatorCode, Secret, TenantCode, TenantInput};
use officebridge::store::Store;
use officebridge::store::models::{NewOperator, SigninState};
use officebridge::store::secrets::{Keyring, MasterKey};

on_both_backends!(
    reseal_moves_every_secret_to_the_new_key,
    companies_upsert,
    moving_an_operator_unlinks_the_account
);

fn hex_of(code: &str) -> String {
    code.bytes().map(|b| format!("{b:02x}")).collect::<String>()
}

fn tenant(code: &str, secret: Option<&str>) -> officebridge::domain::NewTenant {
    let mut body = tenant_body(code);
    // One directory per record: a directory id of the code's own.
    body["tenant_id"] = serde_json::json!(format!("{:0>8}-0000-4000-8000-000000000000", hex_of(code)));
    let mut input: TenantInput = serde_json::from_value(body).unwrap();
    if let Some(s) = secret {
        input.client_secret = Some(Some(officebridge::domain::SecretField::Value(Secret::new(s))));
    }
    input.parse(None, None).unwrap()
}

async fn reseal_moves_every_secret_to_the_new_key(app: TestApp) {
    app.store.create_tenant("t", &tenant("A", Some("secret-a"))).await.unwrap();
    app.store.create_tenant("t", &tenant("B", Some("secret-b"))).await.unwrap();
    app.store.create_tenant("t", &tenant("C", None)).await.unwrap();
    let old = MasterKey::parse(&app.master_key).unwrap();
    let (new, _) = MasterKey::generate();
    let count = app.store.reseal_secrets("t", &Keyring::new(new.clone(), vec![])).await.unwrap();
    assert_eq!(count, 2);
    let stored = app
        .raw_text("SELECT client_secret FROM tenants WHERE client_secret IS NOT NULL")
        .await;
    assert!(
        stored
            .iter()
            .all(|s| s.as_deref().unwrap().starts_with(&format!("v1.{}.", new.id())))
    );

    // Only the new key opens them now.
    let url = Secret::new(app.database_url.clone());
    let with_new = Store::connect(&url, Keyring::new(new, vec![])).await.unwrap();
    let a = TenantCode::parse("A").unwrap();
    assert_eq!(
        with_new.tenant_client_secret(&a).await.unwrap().unwrap().expose_secret(),
        "secret-a"
    );
    let with_old = Store::connect(&url, Keyring::new(old, vec![])).await.unwrap();
    assert!(with_old.tenant_client_secret(&a).await.is_err());
    assert_eq!(app.audit_actions().await[0], "key.rotate");
}

async fn companies_upsert(app: TestApp) {
    let code = CompanyCode::parse("emea").unwrap();
    app.store.put_company("t", &code, "EMEA Ltd").await.unwrap();
    app.store.put_company("t", &code, "EMEA Limited").await.unwrap();
    let all = app.store.list_companies().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].code.as_str(), all[0].name.as_str()), ("EMEA", "EMEA Limited"));
}

async fn moving_an_operator_unlinks_the_account(app: TestApp) {
    app.store.create_tenant("t", &tenant("A", None)).await.unwrap();
    app.store.create_tenant("t", &tenant("B", None)).await.unwrap();
    let op = |t: &str| NewOperator {
        code: OperatorCode::parse("jdoe").unwrap(),
        enabled: true,
        tenant: Some(TenantCode::parse(t).unwrap()),
        email: None,
    };
    app.store.put_operator("t", &op("A")).await.unwrap();
    app.store
        .store_refresh_token(&OperatorCode::parse("jdoe").unwrap(), &Secret::new("refresh-token"))
        .await
        .unwrap();
    let same = app.store.put_operator("t", &op("A")).await.unwrap().0;
    assert_eq!(same.signin, SigninState::Linked);
    let moved = app.store.put_operator("t", &op("B")).await.unwrap().0;
    assert_eq!(moved.signin, SigninState::Never);
    assert_eq!(app.raw_text("SELECT refresh_token FROM operators").await, [None]);
}
