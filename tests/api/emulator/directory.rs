//! Contacts, people and the directory.

use super::*;

impl Emu {
    async fn get_json(&self, token: &str, url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let mut req = self.http.get(url).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn names(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["displayName"].as_str().map(String::from))
        .collect()
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/user-list-contacts.md ($top, $select,
/// $filter), user-list-contactfolders.md (the default folder is not listed),
/// contactfolder-list-childfolders.md, contact-delta.md (nextLink, deltaLink, @removed),
/// concepts/paging.md.
#[tokio::test]
async fn personal_contacts_folders_filters_and_delta() {
    let emu = emulator().await;
    let token = emu.user_token("Contacts.Read").await;
    let get = |url: String| {
        let (emu, token) = (&emu, token.clone());
        async move { emu.get_json(&token, &url, &[]).await }
    };

    // The default Contacts folder, one page at a time.
    let (_, first) = get("/v1.0/me/contacts?$top=2".into()).await;
    assert_eq!(names(&first), ["Ada Lovelace", "Alan Turing"]);
    let (_, second) = get(first["@odata.nextLink"].as_str().unwrap().into()).await;
    assert_eq!(names(&second), ["Joanna Smith", "Reception desk"]);
    assert!(second.get("@odata.nextLink").is_none());
    assert_eq!(second["value"][1]["emailAddresses"], json!([]), "a contact without an address");
    let (_, selected) = get("/v1.0/me/contacts?$select=displayName".into()).await;
    let keys: Vec<&String> = selected["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["displayName", "id"]);

    // Filters: an address, a name prefix; a prefix of an address is refused.
    let (_, by_address) = get("/v1.0/me/contacts?$filter=emailAddresses/any(a:a/address eq 'ALAN@fabrikam.com')".into()).await;
    assert_eq!(names(&by_address), ["Alan Turing"]);
    let (_, by_name) = get("/v1.0/me/contacts?$filter=startswith(displayName,'jo')".into()).await;
    assert_eq!(names(&by_name), ["Joanna Smith"]);
    for bad in [
        "startswith(emailAddresses/any(a:a/address),'al')",
        "startswith(emailAddress,'al')",
        "displayName eq 'x'",
    ] {
        let (status, refused) = get(format!("/v1.0/me/contacts?$filter={bad}")).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some("ErrorInvalidUrlQueryFilter")),
            "{bad}"
        );
    }

    // Folders: the default one is left out; child folders nest.
    let (_, folders) = get("/v1.0/me/contactFolders".into()).await;
    assert_eq!(names(&folders), ["Customers", "Suppliers"]);
    let customers = folders["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_customers) = get(format!("/v1.0/me/contactFolders/{customers}/contacts")).await;
    assert_eq!(names(&in_customers), ["Grace Hopper"]);
    let (_, children) = get(format!("/v1.0/me/contactFolders/{customers}/childFolders")).await;
    assert_eq!(names(&children), ["Key accounts"]);
    let key_accounts = children["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_key) = get(format!("/v1.0/me/contactFolders/{key_accounts}/contacts")).await;
    assert_eq!(names(&in_key), ["Katherine Johnson"]);

    // The default folder's id comes from a contact's parentFolderId; delta works on it.
    let (_, one) = get("/v1.0/me/contacts?$top=1&$select=parentFolderId".into()).await;
    let default = one["value"][0]["parentFolderId"].as_str().unwrap().to_string();
    assert!(!folders["value"].as_array().unwrap().iter().any(|f| f["id"] == default.as_str()));
    let delta = |url: String| {
        let (emu, token) = (&emu, token.clone());
        async move { emu.get_json(&token, &url, &[("Prefer", "odata.maxpagesize=3")]).await }
    };
    let (_, p1) = delta(format!("/v1.0/me/contactFolders/{default}/contacts/delta")).await;
    assert_eq!(names(&p1).len(), 3);
    let (_, p2) = delta(p1["@odata.nextLink"].as_str().unwrap().into()).await;
    assert_eq!(names(&p2).len(), 1);
    let delta_link = p2["@odata.deltaLink"].as_str().unwrap().to_string();
    // Nothing changed: an empty round.
    let (_, same) = delta(delta_link.clone()).await;
    assert_eq!(same["value"], json!([]));
    let delta_link = same["@odata.deltaLink"].as_str().unwrap().to_string();
    // The user removes Alan and adds Ada Byron in Outlook.
    let r = emu
        .http
        .put(format!("{}/_emulator/users/{DEMO_USER}/contacts", emu.base))
        .json(&json!([
            {"display_name": "Ada Lovelace", "email": "ada@fabrikam.com", "company": "Fabrikam"},
            {"display_name": "Ada Byron", "email": "byron@fabrikam.com", "company": "Fabrikam"},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut changes = Vec::new();
    let mut url = delta_link;
    loop {
        let (_, page) = delta(url).await;
        changes.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => {
                assert!(page["@odata.deltaLink"].is_string());
                break;
            }
        }
    }
    let added: Vec<&str> = changes.iter().filter_map(|c| c["displayName"].as_str()).collect();
    let removed = changes.iter().filter(|c| c["@removed"]["reason"] == "deleted").count();
    // Ada Lovelace is unchanged: only the addition and the three removals.
    assert_eq!((added, removed), (vec!["Ada Byron"], 3), "{changes:?}");
    // An unknown delta token is 410, as Graph answers a sync state it no longer has.
    let (status, gone) = delta(format!("/v1.0/me/contactFolders/{default}/contacts/delta?$deltatoken=nope")).await;
    assert_eq!((status, gone["error"]["code"].as_str()), (410, Some("SyncStateNotFound")));
}

/// concepts/people-example.md and concepts/search-query-parameter.md: word prefixes of names
/// and addresses, fuzzy matching, negative relevance when searching, at most 250, the
/// X-PeopleQuery-QuerySources header; user-list-people.md.
#[tokio::test]
async fn people_search_follows_the_people_api() {
    let emu = emulator().await;
    let token = emu.user_token("People.Read").await;
    let (_, mine) = emu.get_json(&token, "/v1.0/me/people", &[]).await;
    // The mailbox: the people the user works with first, then personal contacts; no directory.
    assert_eq!(names(&mine)[..2], ["Jane Doe", "MFA User"]);
    assert!(!names(&mine).contains(&"James Brown".to_string()));
    let (_, with_directory) = emu
        .get_json(
            &token,
            "/v1.0/me/people?$top=50",
            &[("X-PeopleQuery-QuerySources", "Mailbox,Directory")],
        )
        .await;
    let all = names(&with_directory);
    assert!(
        all.contains(&"James Brown".to_string()) && !all.contains(&"Jamie Scanner".to_string()),
        "{all:?}"
    );

    let (_, ja) = emu.get_json(&token, "/v1.0/me/people?$search=\"ja\"", &[]).await;
    assert_eq!(names(&ja), ["Jane Doe", "Jasper Quinn"]);
    assert!(
        ja["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["scoredEmailAddresses"][0]["relevanceScore"].as_f64().unwrap() < 0.0)
    );
    let (_, fuzzy) = emu.get_json(&token, "/v1.0/me/people?$search=\"grase\"", &[]).await;
    assert_eq!(names(&fuzzy), ["Grace Hopper"], "one letter off still finds her");
    let (_, by_address) = emu
        .get_json(&token, "/v1.0/me/people?$search=\"katherine@northwind.example\"", &[])
        .await;
    assert_eq!(names(&by_address), ["Katherine Johnson"]);
    let (status, skip) = emu.get_json(&token, "/v1.0/me/people?$search=\"ja\"&$skip=1", &[]).await;
    assert_eq!((status, skip["error"]["code"].as_str()), (400, Some("BadRequest")));
}

/// concepts/search-query-parameter.md (tokenisation; other properties as startswith),
/// concepts/aad-advanced-queries.md (ConsistencyLevel: eventual for $search and $count),
/// user-list.md ($top 1–999, userType, mail), orgcontact-list.md, auth-limit-mailbox-access.md.
#[tokio::test]
async fn directory_search_tokenises_and_needs_eventual_consistency() {
    let emu = emulator().await;
    let token = emu.user_token("User.ReadBasic.All").await;
    let eventual = [("ConsistencyLevel", "eventual")];
    let (status, refused) = emu.get_json(&token, "/v1.0/users?$search=\"displayName:jane\"", &[]).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("Request_UnsupportedQuery")));
    let (status, _) = emu.get_json(&token, "/v1.0/users?$count=true", &[]).await;
    assert_eq!(status, 400);
    let (_, ja) = emu
        .get_json(
            &token,
            "/v1.0/users?$search=\"displayName:ja\" OR \"mail:ja\"&$count=true&$top=2",
            &eventual,
        )
        .await;
    assert_eq!(names(&ja), ["Jane Doe", "James Brown"]);
    assert_eq!(ja["@odata.count"], 5, "Jane, James, Janet, Jamie, Jack");
    let (_, page2) = emu.get_json(&token, ja["@odata.nextLink"].as_str().unwrap(), &eventual).await;
    assert!(page2.get("@odata.count").is_none(), "the count is on the first page only");
    let (_, all) = emu
        .get_json(&token, "/v1.0/users?$search=\"displayName:ja\"&$top=10", &eventual)
        .await;
    let jack = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["displayName"] == "Jack Guest")
        .unwrap();
    assert_eq!(
        (jack["userType"].as_str(), jack["mail"].as_str()),
        (Some("Guest"), Some("jack@fabrikam.com"))
    );
    assert!(jack["userPrincipalName"].as_str().unwrap().contains("#EXT#"));
    let jamie = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["displayName"] == "Jamie Scanner")
        .unwrap();
    assert!(jamie["mail"].is_null(), "a user without a mailbox");
    // Tokens: "Doe" is a word; "oe" is not a word's prefix; mail matches as startswith.
    let (_, doe) = emu.get_json(&token, "/v1.0/users?$search=\"displayName:doe\"", &eventual).await;
    assert_eq!(names(&doe), ["Jane Doe"]);
    let (_, oe) = emu.get_json(&token, "/v1.0/users?$search=\"displayName:oe\"", &eventual).await;
    assert_eq!(names(&oe), Vec::<String>::new());
    let (_, mail) = emu.get_json(&token, "/v1.0/users?$search=\"mail:doe\"", &eventual).await;
    assert_eq!(names(&mail), Vec::<String>::new(), "mail is a prefix of the whole address");
    // Quotes and OR inside a term stay text.
    let (_, quoted) = emu
        .get_json(&token, "/v1.0/users?$search=\"displayName:jane\\\" OR \\\"mail:j\"", &eventual)
        .await;
    assert_eq!(names(&quoted), Vec::<String>::new());
    let (status, big) = emu.get_json(&token, "/v1.0/users?$top=1000", &eventual).await;
    assert_eq!((status, big["error"]["code"].as_str()), (400, Some("Request_UnsupportedQuery")));

    // Organisational contacts need OrgContact.Read.All; the demo app has it as an application role.
    let (status, _) = emu.get_json(&token, "/v1.0/contacts", &[]).await;
    assert_eq!(status, 403);
    let app = emu.app_token().await;
    let (_, org) = emu.get_json(&app, "/v1.0/contacts?$search=\"displayName:jade\"", &eventual).await;
    assert_eq!(org["value"][0]["mail"], "jade@wingtip.example");
    let (_, theirs) = emu.get_json(&app, &format!("/v1.0/users/{DEMO_USER}/contacts"), &[]).await;
    assert_eq!(
        theirs["value"].as_array().unwrap().len(),
        4,
        "application permission reads a mailbox's contacts"
    );
    let (_, folders) = emu.get_json(&app, &format!("/v1.0/users/{DEMO_USER}/contactFolders"), &[]).await;
    assert_eq!(names(&folders), ["Customers", "Suppliers"]);
}

/// auth-limit-mailbox-access.md: an application access policy limits an app to some mailboxes;
/// Graph answers the others 403 ErrorAccessDenied "Access to OData is disabled."
#[tokio::test]
async fn an_application_access_policy_limits_the_mailboxes() {
    let emu = emulator().await;
    let (status, body) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", officebridge::emulator::seed::DEMO_MAILER_CLIENT_ID),
                ("client_secret", officebridge::emulator::seed::DEMO_MAILER_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mailer = body["access_token"].as_str().unwrap();
    let r = emu
        .http
        .post(format!("{}/v1.0/users/jane.doe@{DEMO_DOMAIN}/sendMail", emu.base))
        .bearer_auth(mailer)
        .json(&json!({"message": {"subject": "x", "toRecipients": [{"emailAddress": {"address": "a@b.example"}}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["message"].as_str()),
        (Some("ErrorAccessDenied"), Some("Access to OData is disabled."))
    );
}
