//! OneDrive: simple uploads, items, sharing links and upload sessions.

use super::*;

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-createlink.md — 201 with a
/// permission for a new link, 200 with the same one when the app asks again, roles by type,
/// `embed` refused outside OneDrive personal, Files.ReadWrite needed.
#[tokio::test]
async fn onedrive_create_link() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let item: Value = emu.put_content(&token, "Shared.xlsx", b"PK".to_vec()).await.json().await.unwrap();
    let id = item["id"].as_str().unwrap();
    let link = |body: Value, token: String| {
        let req = emu
            .http
            .post(format!("{}/v1.0/me/drive/items/{id}/createLink", emu.base))
            .bearer_auth(token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = link(json!({"type": "view", "scope": "organization"}), token.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["roles"], json!(["read"]));
    assert_eq!(first["link"]["type"], "view");
    assert_eq!(first["link"]["scope"], "organization");
    assert!(first["link"]["webUrl"].as_str().unwrap().starts_with("http"));
    assert_eq!(first["link"]["application"]["id"], DEMO_CLIENT_ID);
    let (status, again) = link(json!({"type": "view", "scope": "organization"}), token.clone()).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "an existing link is returned");
    let (status, edit) = link(json!({"type": "edit"}), token.clone()).await;
    assert_eq!(
        (status, &edit["roles"], &edit["link"]["scope"]),
        (201, &json!(["write"]), &json!("organization"))
    );
    for bad in [json!({"type": "embed"}), json!({}), json!({"type": "view", "scope": "world"})] {
        let (status, body) = link(bad, token.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalidRequest")), "{body}");
    }
    let missing = emu
        .post_json(
            &token,
            format!("{}/v1.0/me/drive/items/nope/createLink", emu.base),
            &json!({"type": "view"}),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let read_only = emu.user_token("User.Read").await;
    let (status, body) = link(json!({"type": "view"}), read_only).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("accessDenied")));
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-put-content.md (simple upload,
/// `replace` by default, conflict behaviour), driveitem-get.md, resources/driveitem.md.
#[tokio::test]
async fn onedrive_simple_upload_and_items() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let resp = emu
        .put_content(&token, "officebridge/exports/Orders.xlsx", b"PK first".to_vec())
        .await;
    assert_eq!(resp.status(), 201);
    let item: Value = resp.json().await.unwrap();
    assert_eq!((item["name"].as_str(), item["size"].as_u64()), (Some("Orders.xlsx"), Some(8)));
    assert_eq!(
        item["file"]["mimeType"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(item["parentReference"]["path"], "/drive/root:/officebridge/exports");
    assert!(item["webUrl"].as_str().unwrap().contains("Doc.aspx") && item["webUrl"].as_str().unwrap().contains("Orders.xlsx"));
    let id = item["id"].as_str().unwrap().to_string();

    // PUT replaces by default; rename and fail are asked for by query.
    let replaced = emu
        .put_content(&token, "officebridge/exports/Orders.xlsx", b"PK second!".to_vec())
        .await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.json::<Value>().await.unwrap()["id"], id.as_str());
    let unsupported = emu
        .http
        .put(format!("{}/v1.0/me/drive/root:/Orders.xlsx:/thumbnails", emu.base))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), 400);
    let renamed = emu
        .put_content_with(&token, "officebridge/exports/Orders.xlsx", b"PK third".to_vec(), Some("rename"))
        .await;
    assert_eq!(renamed.status(), 201);
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "Orders 1.xlsx");
    let failed = emu
        .put_content_with(&token, "officebridge/exports/Orders.xlsx", b"x".to_vec(), Some("fail"))
        .await;
    assert_eq!(failed.status(), 409);
    assert_eq!(failed.json::<Value>().await.unwrap()["error"]["code"], "nameAlreadyExists");

    let got: Value = emu.get(&token, &format!("/v1.0/me/drive/items/{id}")).await.json().await.unwrap();
    assert_eq!(got["size"], 10);
    let content = emu.get(&token, &format!("/v1.0/me/drive/items/{id}/content")).await;
    assert_eq!(content.bytes().await.unwrap().as_ref(), b"PK second!");
    let missing = emu.get(&token, "/v1.0/me/drive/items/nope").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "itemNotFound");

    // Permissions: User.Read alone cannot write; no token is a 401; the app has no Files role.
    let weak = emu.user_token("User.Read").await;
    assert_eq!(emu.put_content(&weak, "a.xlsx", vec![1]).await.status(), 403);
    assert_eq!(
        emu.http
            .put(format!("{}/v1.0/me/drive/root:/a.xlsx:/content", emu.base))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let app = emu.app_token().await;
    let resp = emu
        .http
        .put(format!("{}/v1.0/users/{DEMO_USER}/drive/root:/a.xlsx:/content", emu.base))
        .bearer_auth(&app)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-createuploadsession.md
/// (fragments, nextExpectedRanges, 416, Authorization on the upload URL, status, cancel, deferCommit).
#[tokio::test]
async fn onedrive_upload_sessions_follow_the_fragment_rules() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let unit = 327_680usize;
    let file: Vec<u8> = (0..(2 * unit + 1000)).map(|i| (i % 251) as u8).collect();
    let create = |body: Value| {
        emu.http
            .post(format!(
                "{}/v1.0/me/drive/root:/officebridge/exports/Big.xlsx:/createUploadSession",
                emu.base
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = session["uploadUrl"].as_str().unwrap().to_string();
    assert!(session["expirationDateTime"].is_string());
    let put = |range: (usize, usize), auth: bool| {
        let mut req = emu
            .http
            .put(&url)
            .header("content-range", format!("bytes {}-{}/{}", range.0, range.1 - 1, file.len()))
            .body(file[range.0..range.1].to_vec());
        if auth {
            req = req.bearer_auth(&token);
        }
        req.send()
    };
    assert_eq!(
        put((0, unit), true).await.unwrap().status(),
        401,
        "the upload URL must not get the Authorization header"
    );
    let resp = put((0, 1000), false).await.unwrap();
    assert_eq!(resp.status(), 400, "a fragment that is not the last must be a multiple of 320 KiB");
    let resp = put((0, unit), false).await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["nextExpectedRanges"],
        json!([format!("{unit}-")])
    );
    assert_eq!(put((0, unit), false).await.unwrap().status(), 416, "a fragment already received");
    assert_eq!(
        put((2 * unit, file.len()), false).await.unwrap().status(),
        416,
        "a fragment out of order"
    );
    let status: Value = emu.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["nextExpectedRanges"], json!([format!("{unit}-")]));
    assert_eq!(put((unit, 2 * unit), false).await.unwrap().status(), 202);
    let done = put((2 * unit, file.len()), false).await.unwrap();
    assert_eq!(done.status(), 201);
    let item: Value = done.json().await.unwrap();
    assert_eq!(
        (item["name"].as_str(), item["size"].as_u64()),
        (Some("Big.xlsx"), Some(file.len() as u64))
    );
    let stored = emu
        .http
        .get(format!("{}/v1.0/me/drive/items/{}/content", emu.base, item["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.bytes().await.unwrap().to_vec(),
        file,
        "the bytes in OneDrive equal the bytes sent"
    );
    assert_eq!(emu.http.get(&url).send().await.unwrap().status(), 404, "a finished session is gone");

    // The name is taken now: the default conflict behaviour of a session is to fail.
    let taken = create(json!({})).await.unwrap();
    assert_eq!(taken.status(), 409);
    // Cancel.
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancel = session["uploadUrl"].as_str().unwrap();
    assert_eq!(emu.http.delete(cancel).send().await.unwrap().status(), 204);
    assert_eq!(emu.http.get(cancel).send().await.unwrap().status(), 404);
    // deferCommit: the last fragment answers 202, an empty POST commits.
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}, "deferCommit": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deferred = session["uploadUrl"].as_str().unwrap();
    let resp = emu
        .http
        .put(deferred)
        .header("content-range", "bytes 0-9/10")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let committed = emu.http.post(deferred).header("content-length", "0").send().await.unwrap();
    assert_eq!(committed.status(), 201);
    assert_eq!(committed.json::<Value>().await.unwrap()["name"], "Big 1.xlsx");
    let drive: Value = emu
        .get_unauthenticated(format!("{}/_emulator/drive/{DEMO_USER}", emu.base))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drive["open_upload_sessions"], 0);
    assert_eq!(drive["files"].as_array().unwrap().len(), 2);
}
