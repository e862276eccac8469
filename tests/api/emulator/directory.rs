//! Contacts, people and the directory.

use super::*;

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/user-list-contacts.md, user-list-contactfolders.md,
/// contactfolder-list-childfolders.md, user-list-people.md, user-list.md, orgcontact-list.md,
/// concepts/aad-advanced-queries.md (ConsistencyLevel), concepts/paging.md (@odata.nextLink).
#[tokio::test]
async fn contacts_people_and_directory_search() {
    let emu = emulator().await;
    let token = emu.user_token("Contacts.Read People.Read User.ReadBasic.All").await;
    let get = |url: String, extra: Option<(&'static str, &'static str)>| {
        let mut req = emu
            .http
            .get(if url.starts_with("http") {
                url
            } else {
                format!("{}{url}", emu.base)
            })
            .bearer_auth(&token);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send()
    };
    let json_of = |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap()) };
    let names = |v: &Value| {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["displayName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    // The default Contacts folder, one page at a time.
    let (_, first) = json_of(get("/v1.0/me/contacts?$top=1".into(), None).await.unwrap()).await;
    assert_eq!(names(&first), ["Ada Lovelace"]);
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();
    let (_, second) = json_of(get(next, None).await.unwrap()).await;
    assert_eq!(names(&second), ["Alan Turing"]);
    assert!(second.get("@odata.nextLink").is_none());
    let (_, selected) = json_of(get("/v1.0/me/contacts?$select=displayName".into(), None).await.unwrap()).await;
    let keys: Vec<&String> = selected["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["displayName", "id"]);
    let (_, filtered) = json_of(
        get(
            "/v1.0/me/contacts?$filter=emailAddresses/any(a:a/address eq 'ALAN@fabrikam.com')".into(),
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(names(&filtered), ["Alan Turing"]);
    let (status, bad) = json_of(get("/v1.0/me/contacts?$filter=displayName eq 'x'".into(), None).await.unwrap()).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("ErrorInvalidUrlQueryFilter")));

    // Folders and child folders.
    let (_, folders) = json_of(get("/v1.0/me/contactFolders".into(), None).await.unwrap()).await;
    assert_eq!(names(&folders), ["Customers"]);
    let customers = folders["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_customers) = json_of(get(format!("/v1.0/me/contactFolders/{customers}/contacts"), None).await.unwrap()).await;
    assert_eq!(names(&in_customers), ["Grace Hopper"]);
    let (_, children) = json_of(
        get(format!("/v1.0/me/contactFolders/{customers}/childFolders"), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(names(&children), ["Key accounts"]);
    let key_accounts = children["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_key) = json_of(get(format!("/v1.0/me/contactFolders/{key_accounts}/contacts"), None).await.unwrap()).await;
    assert_eq!(names(&in_key), ["Katherine Johnson"]);

    // People: relevance puts personal contacts first; search matches word prefixes.
    let (_, people) = json_of(get("/v1.0/me/people?$search=\"gr\"".into(), None).await.unwrap()).await;
    assert_eq!(names(&people), ["Grace Hopper"]);
    assert_eq!(people["value"][0]["personType"]["subclass"], "PersonalContact");
    let (_, colleagues) = json_of(get("/v1.0/me/people?$search=mfa".into(), None).await.unwrap()).await;
    assert_eq!(colleagues["value"][0]["personType"]["subclass"], "OrganizationUser");

    // The directory: $search needs ConsistencyLevel: eventual.
    let (status, refused) = json_of(get("/v1.0/users?$search=\"displayName:mfa\"".into(), None).await.unwrap()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("Request_UnsupportedQuery")));
    let (status, found) = json_of(
        get(
            "/v1.0/users?$search=\"displayName:mfa\"&$count=true".into(),
            Some(("ConsistencyLevel", "eventual")),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (names(&found), found["@odata.count"].as_u64()),
        (vec!["MFA User".to_string()], Some(1))
    );

    // Organisational contacts need OrgContact.Read.All (the demo app has it as an application role).
    let (status, _) = json_of(get("/v1.0/contacts".into(), None).await.unwrap()).await;
    assert_eq!(status, 403);
    let app = emu.app_token().await;
    let org: Value = emu.get(&app, "/v1.0/contacts").await.json().await.unwrap();
    assert_eq!(org["value"][0]["mail"], "ap@contoso.example");
    let theirs: Value = emu
        .get(&app, &format!("/v1.0/users/{DEMO_USER}/contacts"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        theirs["value"].as_array().unwrap().len(),
        2,
        "application permission reads a mailbox's contacts"
    );
}
