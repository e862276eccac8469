//! Contact lookup (issue 15) against the emulator: the five sources at once, merged by
//! address and ranked, each source's failure reported on its own, the personal-contacts
//! index kept with `contacts/delta`, browsing with a cursor, ERP contacts, application
//! lookups. Graph behaviour from microsoft-graph-docs-contrib `user-list-people.md`,
//! `concepts/people-example.md`, `concepts/aad-advanced-queries.md`, `contact-delta.md`,
//! `concepts/throttling.md` (429 and `Retry-After`).

use crate::helpers::Backend;
use crate::onedrive::{Linked, OPERATOR, linked, on_both, with_tenant};
use officebridge::emulator::seed::DEMO_USER;
use serde_json::{Value, json};

on_both!(
    a_search_merges_every_source_by_address(ready),
    each_source_fails_on_its_own_and_the_answer_comes_at_the_budget(ready),
    a_throttled_source_is_skipped_until_its_retry_after(ready),
    the_index_follows_changes_in_outlook_through_delta(ready),
    browsing_pages_through_every_folder_with_a_cursor(ready),
    bad_searches_and_bad_erp_lists_are_refused(ready),
    an_application_lookup_reads_the_mailbox_with_the_apps_permissions(ready),
);

/// Linked operator, company ACME with two ERP contacts, a 300 ms budget per source.
async fn ready(b: Backend) -> Option<Linked> {
    let l = linked(b, |s| {
        s.contacts.source_budget_ms = 300;
        s.mail.workers = 0;
    })
    .await?;
    let a = l.app.admin_put("/api/v1/companies/ACME", &json!({"name": "Acme Ltd"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let r = l
        .app
        .client_put(
            "/api/v1/companies/ACME/contacts",
            "application/json",
            json!([
                {"key": "C4711-AP", "name": "Jo Smith", "address": "Jo.Smith@fabrikam.com", "account": "4711", "role": "accounts payable"},
                {"key": "S0042-PO", "name": "Jonas Berg", "address": "jonas@supplier.example", "account": "S0042", "role": "purchasing"},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    Some(l)
}

async fn search(l: &Linked, query: &str) -> Value {
    let r = l
        .app
        .client_get_as(&format!("/api/v1/contacts/search?{query}"), Some(OPERATOR))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

fn result<'a>(answer: &'a Value, address: &str) -> Vec<&'a Value> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["address"].as_str().unwrap().eq_ignore_ascii_case(address))
        .collect()
}

async fn a_search_merges_every_source_by_address(l: Linked) {
    let a = search(&l, "q=jo&company=ACME&limit=50").await;
    let s = &a["sources"];
    assert_eq!(s["personal"]["status"], "ok", "{a}");
    assert_eq!(s["people"]["status"], "ok", "{a}");
    assert_eq!(s["directory"]["status"], "ok", "{a}");
    assert_eq!(s["erp"]["status"], "ok", "{a}");
    // The demo app has no delegated OrgContact.Read.All: that source says so, the rest answer.
    assert_eq!(s["org_contacts"]["status"], "error", "{a}");
    assert_eq!(s["org_contacts"]["error"]["kind"], "permission_denied");
    assert_eq!(s["org_contacts"]["error"]["status"], 403);
    assert!(
        s["org_contacts"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OrgContact.Read.All"),
        "{a}"
    );
    assert_eq!(a["partial"], false);
    // jo.smith@fabrikam.com: two personal contacts (two names), people, and the ERP — one entry.
    let jo = result(&a, "jo.smith@fabrikam.com");
    assert_eq!(jo.len(), 1, "{a}");
    assert_eq!(jo[0]["sources"], json!(["personal", "people", "erp"]));
    assert_eq!(jo[0]["name"], "Jo Smith", "the operator's own contact names it");
    assert_eq!(jo[0]["erp"]["account"], "4711");
    assert_eq!(jo[0]["erp"]["role"], "accounts payable");
    // Same first name, other people: never merged by name.
    assert_eq!(result(&a, "jonas@supplier.example").len(), 1);

    // Without a company the ERP source is disabled.
    let a = search(&l, "q=ja").await;
    assert_eq!(a["sources"]["erp"]["status"], "disabled");
    // A guest is found by its mail, never its #EXT# principal name; no mailbox, no result.
    let jack = result(&a, "jack@fabrikam.com");
    assert_eq!(jack.len(), 1, "{a}");
    assert_eq!(jack[0]["kind"], "guest");
    assert!(!a.to_string().contains("#EXT#"));
    assert!(!a.to_string().to_lowercase().contains("jamie.scanner"), "{a}");
    // People the operator works with rank before the rest of the directory.
    let order: Vec<&str> = a["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    let pos = |x: &str| {
        order
            .iter()
            .position(|o| o.starts_with(x))
            .unwrap_or_else(|| panic!("{x} in {order:?}"))
    };
    assert!(pos("jane.doe") < pos("james.brown"), "{order:?}");

    // The exact address comes first.
    let a = search(&l, &format!("q=james.brown@{}", officebridge::emulator::seed::DEMO_DOMAIN)).await;
    assert_eq!(a["results"][0]["name"], "James Brown", "{a}");

    // What the operator mailed through officebridge ranks first among equal matches.
    let before = search(&l, "q=ja").await;
    let last = before["results"].as_array().unwrap().last().unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    l.app
        .raw_exec(&format!(
            "INSERT INTO operator_recipients (operator, address, sends, last_ms) VALUES ('{OPERATOR}', '{last}', 3, 1)"
        ))
        .await;
    let after = search(&l, "q=ja").await;
    assert_eq!(after["results"][0]["address"], last.as_str(), "{after}");
}

async fn each_source_fails_on_its_own_and_the_answer_comes_at_the_budget(l: Linked) {
    // The directory hangs for 5 s; people fails with a 503: the search still answers.
    l.fault(json!([
        {"method": "GET", "path": "/v1.0/users", "delay_ms": 5000, "times": 1},
        {"method": "GET", "path": "/v1.0/me/people", "status": 503, "times": 1},
    ]))
    .await;
    let started = std::time::Instant::now();
    let a = search(&l, "q=gr").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "answered at the budget, not the slow source"
    );
    assert_eq!(a["sources"]["directory"]["status"], "timeout", "{a}");
    assert_eq!(a["partial"], true);
    assert_eq!(a["sources"]["people"]["status"], "error");
    assert_eq!(a["sources"]["people"]["error"]["kind"], "unavailable");
    assert_eq!(a["sources"]["personal"]["status"], "ok");
    assert_eq!(result(&a, "grace@northwind.example").len(), 1, "{a}");
}

async fn a_throttled_source_is_skipped_until_its_retry_after(l: Linked) {
    l.fault(json!([{"method": "GET", "path": "/v1.0/me/people", "status": 429, "retry_after": "7", "times": 1}]))
        .await;
    let a = search(&l, "q=ad").await;
    assert_eq!(a["sources"]["people"], json!({"status": "throttled", "retry_after": 7}), "{a}");
    let asked = |log: &Vec<Value>| log.iter().filter(|r| r["path"] == "/v1.0/me/people").count();
    let before = asked(&l.requests().await);
    let a = search(&l, "q=ada").await;
    assert_eq!(a["sources"]["people"]["status"], "throttled");
    assert!(a["sources"]["people"]["retry_after"].as_u64().unwrap() <= 7);
    assert_eq!(asked(&l.requests().await), before, "not asked again before its Retry-After");
    assert_eq!(a["sources"]["personal"]["status"], "ok");
}

async fn the_index_follows_changes_in_outlook_through_delta(l: Linked) {
    let a = search(&l, "q=ada").await;
    assert_eq!(result(&a, "ada@fabrikam.com").len(), 1, "{a}");
    let log = l.requests().await;
    assert!(
        log.iter().any(|r| r["path"].as_str().unwrap().ends_with("/contacts/delta")),
        "indexed through delta"
    );
    // The user edits the contacts in Outlook; the index is older than refresh_secs (0 here).
    l.app.raw_exec("UPDATE contact_folders SET refreshed_ms = 0").await;
    let r = l
        .browser
        .put(format!("{}/_emulator/users/{DEMO_USER}/contacts", l.emu))
        .json(&json!([{"display_name": "Adam Newman", "email": "adam@fabrikam.com", "company": "Fabrikam"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The search that finds the index stale answers from it and refreshes in the background;
    // the refresh's rounds are the deltas from the stored deltaLinks.
    let mut found = false;
    for _ in 0..100 {
        let a = search(&l, "q=ada").await;
        if result(&a, "adam@fabrikam.com").len() == 1 && result(&a, "ada@fabrikam.com").is_empty() {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(found, "the change reached the index");
    let rows = l.app.raw_text("SELECT delta_link FROM contact_folders").await;
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.as_deref().is_some_and(|d| d.contains("deltatoken"))),
        "{rows:?}"
    );
}

async fn browsing_pages_through_every_folder_with_a_cursor(l: Linked) {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/contacts?limit=2".to_string(),
            Some(c) => format!("/api/v1/contacts?limit=2&cursor={c}"),
        };
        let r = l.app.client_get_as(&path, Some(OPERATOR)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json["items"].as_array().unwrap().len() <= 2);
        all.extend(r.json["items"].as_array().unwrap().iter().cloned());
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let names: Vec<&str> = all.iter().map(|c| c["name"].as_str().unwrap()).collect();
    // Every folder, by name; the contact without an address is not a recipient.
    assert_eq!(
        names,
        [
            "Ada Lovelace",
            "Alan Turing",
            "Grace Hopper",
            "Jasper Quinn",
            "Jo Smith",
            "Joanna Smith",
            "Katherine Johnson"
        ]
    );
    let katherine = all.iter().find(|c| c["name"] == "Katherine Johnson").unwrap();
    assert_eq!(katherine["folder"], "Customers/Key accounts");
    let folder = katherine["folder_id"].as_str().unwrap();
    let r = l
        .app
        .client_get_as(&format!("/api/v1/contacts?folder={folder}"), Some(OPERATOR))
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1, "{}", r.text);
    // A cursor of one listing is refused on another, and garbage is refused.
    let first = l.app.client_get_as("/api/v1/contacts?limit=1", Some(OPERATOR)).await;
    let c = first.json["next_cursor"].as_str().unwrap();
    let foreign = l
        .app
        .client_get_as(&format!("/api/v1/contacts?folder={folder}&cursor={c}"), Some(OPERATOR))
        .await;
    foreign.assert_problem(422, Some("cursor"));
    let bad = l.app.client_get_as("/api/v1/contacts?cursor=not-a-cursor", Some(OPERATOR)).await;
    bad.assert_problem(422, Some("cursor"));
}

async fn bad_searches_and_bad_erp_lists_are_refused(l: Linked) {
    let long = "a".repeat(257);
    for (query, field) in [
        ("q=", "q"),
        ("q=%20%20", "q"),
        (&*format!("q={long}"), "q"),
        ("q=ja&limit=0", "limit"),
        ("q=ja&limit=51", "limit"),
        ("q=ja&company=NOPE", "company"),
        ("q=ja&tenant=NOPE&mailbox=a@b.example", "tenant"),
        ("q=ja&tenant=DEMO", "mailbox"),
        ("q=ja&mailbox=a@b.example", "tenant"),
        ("q=ja&tenant=DEMO&mailbox=not-an-address", "mailbox"),
        ("q=ja&tenant=DEMO&mailbox=someone@elsewhere.example", "mailbox"),
    ] {
        let r = l
            .app
            .client_get_as(&format!("/api/v1/contacts/search?{query}"), Some(OPERATOR))
            .await;
        r.assert_problem(422, Some(field));
    }
    let r = l.app.client_get_as("/api/v1/contacts/search?q=ja", None).await;
    r.assert_problem(422, Some("X-Operator"));
    // Quotes, backslashes, OR and topic: are the operator's text, not Graph syntax.
    let a = search(&l, "q=%22jane%22%20OR%20%22mail%3Aj%5C%22%20topic%3Ax").await;
    assert_eq!(a["sources"]["directory"]["status"], "ok", "{a}");
    assert_eq!(a["results"], json!([]), "{a}");
    let a = search(&l, "q=jane%22").await;
    assert_eq!(a["sources"]["directory"]["status"], "ok", "{a}");

    // ERP lists: the line at fault named, nothing replaced.
    let put = |body: String, ct: &'static str| {
        let app = &l.app;
        async move { app.client_put("/api/v1/companies/ACME/contacts", ct, body).await }
    };
    let r = put(
        "{\"key\":\"A\",\"name\":\"A\",\"address\":\"a@x.example\"}\n{\"key\":\"B\",\"name\":\"B\",\"address\":\"not an address\"}\n"
            .into(),
        "application/x-ndjson",
    )
    .await;
    r.assert_problem(422, Some("line 2"));
    let r = put(
        json!([{"key": "A", "name": "A", "address": "a@x.example"}, {"key": "A", "name": "B", "address": "b@x.example"}]).to_string(),
        "application/json",
    )
    .await;
    r.assert_problem(422, Some("[1]"));
    assert!(r.text.contains("already used by [0]"), "{}", r.text);
    let kept = l.app.client_get_as("/api/v1/companies/ACME/contacts", None).await;
    assert_eq!(kept.json.as_array().unwrap().len(), 2, "nothing replaced: {}", kept.text);
    let r = put("[]".into(), "application/json").await;
    assert_eq!(r.status, 200);
    let r = l.app.client_get_as("/api/v1/companies/NOPE/contacts", None).await;
    assert_eq!(r.status, 404);
    // NDJSON replaces the list too.
    let r = put(
        "{\"key\":\"K1\",\"name\":\"Kim\",\"address\":\"kim@x.example\",\"account\":\"1\"}\n".into(),
        "application/x-ndjson",
    )
    .await;
    assert_eq!((r.status, r.json["contacts"].as_u64()), (200, Some(1)), "{}", r.text);
}

async fn an_application_lookup_reads_the_mailbox_with_the_apps_permissions(l: Linked) {
    let r = l
        .app
        .client_get_as(&format!("/api/v1/contacts/search?q=gr&tenant=DEMO&mailbox={DEMO_USER}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json;
    assert_eq!(a["sources"]["people"]["status"], "unsupported", "{a}");
    assert_eq!(a["sources"]["personal"]["status"], "ok", "{a}");
    assert_eq!(a["sources"]["org_contacts"]["status"], "ok", "application permission: {a}");
    assert_eq!(result(&a, "grace@northwind.example").len(), 1, "{a}");
    // An operator of another tenant cannot reach this tenant's mailbox.
    let t = l.app.admin_post("/api/v1/tenants", &crate::helpers::tenant_body("OTHER")).await;
    assert_eq!(t.status, 201, "{}", t.text);
    let op = l
        .app
        .admin_put("/api/v1/operators/ALIEN", &json!({"enabled": true, "tenant": "OTHER"}))
        .await;
    assert!(op.status == 201 || op.status == 200, "{}", op.text);
    let r = l
        .app
        .client_get_as(
            &format!("/api/v1/contacts/search?q=gr&tenant=DEMO&mailbox={DEMO_USER}"),
            Some("ALIEN"),
        )
        .await;
    r.assert_problem(403, None);
}

/// Not signed in at all: the search is a 401 with the link that fixes it.
#[tokio::test]
async fn an_operator_never_signed_in_must_sign_in_first() {
    let l = with_tenant(Backend::Sqlite, |_| {}).await.unwrap();
    let r = l.app.client_get_as("/api/v1/contacts/search?q=ada", Some(OPERATOR)).await;
    r.assert_problem(401, None);
    assert!(r.json["signin_url"].is_string(), "{}", r.text);
}
