//! Outlook mail: sendMail, drafts, attachments and their upload sessions, folders.

use super::*;

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/user-sendmail.md (202, no body,
/// saveToSentItems), user-post-messages.md, message-get.md, message-send.md, message-delete.md,
/// resources/message.md (x- headers); Exchange Online limits (4 MB request, 500 recipients).
#[tokio::test]
async fn mail_send_drafts_and_limits() {
    let emu = emulator().await;
    let token = emu.user_token("Mail.Send Mail.ReadWrite").await;
    let post =
        |path: String, token: String, body: Value| emu.http.post(format!("{}{path}", emu.base)).bearer_auth(token).json(&body).send();
    let message = |to: Vec<&str>| {
        json!({
            "subject": "Invoice INV-1001",
            "body": {"contentType": "HTML", "content": "<p>Please find attached.</p>"},
            "toRecipients": to.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>(),
            "internetMessageHeaders": [{"name": "x-officebridge-id", "value": "m-1"}],
            "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "INV-1001.pdf", "contentType": "application/pdf", "contentBytes": "JVBERi0xLjQ="}]
        })
    };
    let sent = post(
        "/v1.0/me/sendMail".into(),
        token.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"])}),
    )
    .await
    .unwrap();
    assert_eq!(sent.status(), 202);
    assert!(sent.bytes().await.unwrap().is_empty(), "sendMail answers no body");
    let quiet = post(
        "/v1.0/me/sendMail".into(),
        token.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"]), "saveToSentItems": false}),
    )
    .await
    .unwrap();
    assert_eq!(quiet.status(), 202);
    let mailbox: Value = emu
        .get_unauthenticated(format!("{}/_emulator/mail/{DEMO_USER}", emu.base))
        .await
        .json()
        .await
        .unwrap();
    let sent = mailbox["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["subject"], "Invoice INV-1001");
    assert_eq!(sent[0]["attachments"][0]["contentBytes"], "JVBERi0xLjQ=");
    assert_eq!(
        (sent[0]["savedToSentItems"].as_bool(), sent[1]["savedToSentItems"].as_bool()),
        (Some(true), Some(false))
    );

    let expect = |status: u16, code: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), status);
            assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], code);
        }
    };
    expect(400, "ErrorInvalidRecipients")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": message(vec![])}))
            .await
            .unwrap(),
    )
    .await;
    expect(400, "ErrorInvalidRecipients")(
        post(
            "/v1.0/me/sendMail".into(),
            token.clone(),
            json!({"message": message(vec!["not an address"])}),
        )
        .await
        .unwrap(),
    )
    .await;
    let many: Vec<String> = (0..501).map(|i| format!("r{i}@fabrikam.com")).collect();
    expect(400, "ErrorTooManyRecipients")(
        post(
            "/v1.0/me/sendMail".into(),
            token.clone(),
            json!({"message": message(many.iter().map(String::as_str).collect())}),
        )
        .await
        .unwrap(),
    )
    .await;
    let mut bad_header = message(vec!["ap@fabrikam.com"]);
    bad_header["internetMessageHeaders"] = json!([{"name": "Priority", "value": "urgent"}]);
    expect(400, "InvalidInternetMessageHeader")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": bad_header}))
            .await
            .unwrap(),
    )
    .await;
    let mut big = message(vec!["ap@fabrikam.com"]);
    big["attachments"][0]["contentBytes"] = json!("A".repeat(4 * 1024 * 1024 + 4));
    expect(413, "RequestEntityTooLarge")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": big}))
            .await
            .unwrap(),
    )
    .await;

    // Drafts: create, read, send; delete another.
    let draft = post("/v1.0/me/messages".into(), token.clone(), message(vec!["ap@fabrikam.com"]))
        .await
        .unwrap();
    assert_eq!(draft.status(), 201);
    let draft: Value = draft.json().await.unwrap();
    assert_eq!(draft["isDraft"], true);
    let id = draft["id"].as_str().unwrap();
    let got: Value = emu.get(&token, &format!("/v1.0/me/messages/{id}")).await.json().await.unwrap();
    assert_eq!(got["subject"], "Invoice INV-1001");
    assert_eq!(
        post(format!("/v1.0/me/messages/{id}/send"), token.clone(), json!({}))
            .await
            .unwrap()
            .status(),
        202
    );
    // Sending moves the draft to Sent Items, and a moved item's default id changes
    // (concepts/outlook-immutable-id.md): the draft's id is no longer found.
    let after: Value = emu.get(&token, &format!("/v1.0/me/messages/{id}")).await.json().await.unwrap();
    assert_eq!(after["error"]["code"], "ErrorItemNotFound", "{after}");
    let other: Value = post("/v1.0/me/messages".into(), token.clone(), json!({"subject": "draft"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete = |id: String| {
        emu.http
            .delete(format!("{}/v1.0/me/messages/{id}", emu.base))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete(other["id"].as_str().unwrap().into()).await.unwrap().status(), 204);
    assert_eq!(delete(other["id"].as_str().unwrap().into()).await.unwrap().status(), 404);

    // Application permission sends as a mailbox; /me needs a user; Mail.Send is required.
    let app = emu.app_token().await;
    let as_app = post(
        format!("/v1.0/users/{DEMO_USER}/sendMail"),
        app.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"])}),
    )
    .await
    .unwrap();
    assert_eq!(as_app.status(), 202);
    assert_eq!(
        post("/v1.0/me/sendMail".into(), app, json!({"message": message(vec!["a@b.com"])}))
            .await
            .unwrap()
            .status(),
        400
    );
    let weak = emu.user_token("User.Read").await;
    expect(403, "ErrorAccessDenied")(
        post("/v1.0/me/sendMail".into(), weak, json!({"message": message(vec!["a@b.com"])}))
            .await
            .unwrap(),
    )
    .await;
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/message-post-attachments.md (under
/// 3 MB, 201), attachment-createuploadsession.md (3–150 MB, 201 uploadSession),
/// concepts/outlook-large-attachments.md (PUT ranges without Authorization, at most 4 MB, 200
/// with nextExpectedRanges, final 201 with Location and no body), mailfolder well-known names.
#[tokio::test]
async fn message_attachments_and_folders() {
    use base64::engine::general_purpose::STANDARD;
    let emu = emulator().await;
    let token = emu.user_token("Mail.ReadWrite Mail.Send").await;
    let url = |p: &str| format!("{}/v1.0/me/{p}", emu.base);
    let draft: Value = emu
        .post_json(
            &token,
            url("messages"),
            &json!({"subject": "Invoice", "toRecipients": [{"emailAddress": {"address": "ap@contoso.example"}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = draft["id"].as_str().unwrap().to_string();

    // A small attachment is posted whole.
    let small = emu.post_json(&token, url(&format!("messages/{id}/attachments")), &json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentType": "text/plain", "contentBytes": STANDARD.encode("hello")})).await;
    assert_eq!(small.status(), 201);
    let small: Value = small.json().await.unwrap();
    assert_eq!((small["name"].as_str(), small["size"].as_u64()), (Some("a.txt"), Some(5)));

    // 3 MB or more must use an upload session.
    let big = vec![7u8; 3 * 1024 * 1024 + 10];
    let refused = emu.post_json(&token, url(&format!("messages/{id}/attachments")), &json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin", "contentBytes": STANDARD.encode(&big[..3 * 1024 * 1024])})).await;
    assert_eq!(refused.status(), 413);
    let session = |size: u64| {
        let req = emu
            .http
            .post(url(&format!("messages/{id}/attachments/createUploadSession")))
            .bearer_auth(&token)
            .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(session(1000).await.status(), 400, "under 3 MB is refused");
    assert_eq!(session(151 * 1024 * 1024).await.status(), 400, "over 150 MB is refused");
    let created = session(big.len() as u64).await;
    assert_eq!(created.status(), 201);
    let upload: Value = created.json().await.unwrap();
    assert_eq!(upload["nextExpectedRanges"], json!(["0-"]));
    let upload_url = upload["uploadUrl"].as_str().unwrap().to_string();
    let put = |from: usize, to: usize, auth: bool| {
        let mut req = emu
            .http
            .put(&upload_url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("bytes {from}-{}/{}", to - 1, big.len()))
            .body(big[from..to].to_vec());
        if auth {
            req = req.bearer_auth(&token);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(put(0, 1024, true).await.status(), 401, "no Authorization on the upload URL");
    let too_big = emu
        .http
        .put(&upload_url)
        .header("content-range", format!("bytes 0-{}/{}", 4 * 1024 * 1024, big.len()))
        .body(vec![0u8; 4 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413, "fragments of at most 4 MB");
    let first = put(0, 2 * 1024 * 1024, false).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap()["nextExpectedRanges"], json!(["2097152"]));
    assert_eq!(put(0, 1024, false).await.status(), 416, "bytes in order");
    let last = put(2 * 1024 * 1024, big.len(), false).await;
    assert_eq!(last.status(), 201);
    assert!(
        last.headers()["location"]
            .to_str()
            .unwrap()
            .contains(&format!("/messages/{id}/attachments/"))
    );
    assert!(last.bytes().await.unwrap().is_empty());
    assert_eq!(put(0, 1024, false).await.status(), 404, "the finished session is gone");

    let listed: Value = emu
        .http
        .get(url(&format!("messages/{id}/attachments")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "big.bin"]);
    let stored = STANDARD.decode(listed["value"][1]["contentBytes"].as_str().unwrap()).unwrap();
    assert!(stored == big, "the attachment holds the uploaded bytes");

    // Drafts and Sent Items.
    let folder = |name: &str| {
        let req = emu.http.get(url(&format!("mailFolders/{name}/messages"))).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(folder("drafts").await.1["value"].as_array().unwrap().len(), 1);
    assert_eq!(folder("SentItems").await.1["value"].as_array().unwrap().len(), 0);
    let sent = emu
        .http
        .post(url(&format!("messages/{id}/send")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert_eq!(folder("drafts").await.1["value"].as_array().unwrap().len(), 0);
    let sent_items = folder("sentitems").await.1;
    assert_eq!(sent_items["value"][0]["attachments"].as_array().unwrap().len(), 2);
    assert_eq!(folder("nowhere").await.0, 404);
    // A session for a message that does not exist.
    let orphan = emu
        .post_json(
            &token,
            url("messages/nope/attachments/createUploadSession"),
            &json!({"AttachmentItem": {"attachmentType": "file", "name": "x", "size": 4_000_000}}),
        )
        .await;
    assert_eq!(orphan.status(), 404);
}
