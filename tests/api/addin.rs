//! The Office add-in's manifests (SPEC §3.6), validated offline as Microsoft would: the XML
//! ones with xmllint against Microsoft's XSDs (`../shared/reference/office-addin-xsd`), plus
//! the rules those schemas do not enforce (office-js-docs-pr `docs/develop/xml-manifest-overview.md`,
//! `docs/testing/troubleshoot-manifest.md`, the element pages under `docs/reference/manifest/`);
//! the unified one with ajv against the schema bundled in npm `@microsoft/app-manifest`
//! (`tests/addin/validate-unified.mjs`). Microsoft's `office-addin-manifest validate` posts
//! XML manifests to an online service and cannot run here.

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with, tool_available};
use quick_xml::events::Event;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const XSD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/office-addin-xsd");

/// One XML element, as far as the rules need it.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    /// The names of the elements it sits in, outermost first.
    ancestors: Vec<String>,
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or_default().to_string()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Every element of the document, in order, with its attributes and text.
fn elements(xml: &str) -> Vec<Element> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out: Vec<Element> = Vec::new();
    // The open elements: their names and indexes in `out`.
    let mut open: Vec<(String, usize)> = Vec::new();
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (e, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Text(t) => {
                if let Some((_, i)) = open.last() {
                    out[*i].text.push_str(&unescape(t.as_ref()));
                }
                continue;
            }
            Event::End(_) => {
                open.pop();
                continue;
            }
            Event::Eof => return out,
            _ => continue,
        };
        out.push(Element {
            name: local(e.name().as_ref()),
            attrs: e
                .attributes()
                .map(|a| {
                    let a = a.expect("well-formed attribute");
                    (local(a.key.as_ref()), unescape(&a.value))
                })
                .collect(),
            text: String::new(),
            ancestors: open.iter().map(|(n, _)| n.clone()).collect(),
        });
        if !empty {
            open.push((out.last().unwrap().name.clone(), out.len() - 1));
        }
    }
}

/// `host[:port]` of a URL, the port only when it is not the scheme's.
fn host_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap()),
        None => u.host_str().unwrap().to_string(),
    }
}

/// The rules Microsoft's XSDs do not enforce; every broken one is named.
fn semantic_problems(xml: &str, client_id: &str) -> Vec<String> {
    let els = elements(xml);
    let mut problems = Vec::new();
    let first = |name: &str| els.iter().find(|e| e.name == name && e.ancestors.len() == 1);
    // Id: a GUID (id.md).
    match first("Id") {
        Some(id) if uuid::Uuid::parse_str(id.text.trim()).is_ok() && id.text.trim().len() == 36 => {}
        other => problems.push(format!("Id is not a GUID: {other:?}")),
    }
    // Version: one to four numbers of at most five digits (version.md).
    let version = first("Version").map(|v| v.text.trim().to_string()).unwrap_or_default();
    let parts: Vec<&str> = version.split('.').collect();
    if parts.is_empty()
        || parts.len() > 4
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        problems.push(format!("Version {version:?} is not one to four numbers of at most five digits"));
    }
    // DisplayName at most 125 characters, Description at most 250 (displayname.md, description.md).
    for (name, max) in [("DisplayName", 125), ("Description", 250)] {
        let value = first(name).and_then(|e| e.attrs.get("DefaultValue")).cloned().unwrap_or_default();
        if value.is_empty() || value.chars().count() > max {
            problems.push(format!("{name} must be 1 to {max} characters: {value:?}"));
        }
    }
    // Every URL https and at most 2,018 characters (sourcelocation.md, iconurl.md, url.md).
    let url_elements = ["SourceLocation", "IconUrl", "HighResolutionIconUrl", "SupportUrl", "Image", "Url"];
    for e in els.iter().filter(|e| url_elements.contains(&e.name.as_str())) {
        if let Some(url) = e.attrs.get("DefaultValue") {
            if !url.starts_with("https://") || url.len() > 2018 {
                problems.push(format!("{} {url:?} must be https and at most 2018 characters", e.name));
            }
        }
    }
    // Every resid at most 32 characters and defined in Resources (resources.md).
    let defined: BTreeSet<&str> = els
        .iter()
        .filter(|e| e.ancestors.iter().any(|a| a == "Resources"))
        .filter_map(|e| e.attrs.get("id").map(String::as_str))
        .collect();
    for e in &els {
        if let Some(resid) = e.attrs.get("resid") {
            if resid.chars().count() > 32 {
                problems.push(format!("resid {resid:?} is longer than 32 characters"));
            }
            if !defined.contains(resid.as_str()) {
                problems.push(format!("resid {resid:?} is not defined in Resources"));
            }
        }
    }
    for e in els
        .iter()
        .filter(|e| e.ancestors.iter().any(|a| a == "Resources") && e.attrs.contains_key("id"))
    {
        if e.attrs["id"].chars().count() > 32 {
            problems.push(format!("resource id {:?} is longer than 32 characters", e.attrs["id"]));
        }
    }
    // AppDomain: with its protocol, without a path (appdomain.md).
    for d in els.iter().filter(|e| e.name == "AppDomain") {
        let url = url::Url::parse(d.text.trim());
        let ok = url
            .as_ref()
            .is_ok_and(|u| u.scheme() == "https" && u.path() == "/" && !d.text.trim().ends_with('/'));
        if !ok {
            problems.push(format!("AppDomain {:?} must be an https origin without a path", d.text));
        }
    }
    // WebApplicationInfo: the resource on the panes' host and port, ending with the client
    // id, and the id the client id (webapplicationinfo.md; troubleshoot-sso-in-office-add-ins.md,
    // 13004: "including port, if any").
    let pane_hosts: BTreeSet<String> = els
        .iter()
        .filter(|e| e.name == "SourceLocation" || (e.name == "Url" && e.ancestors.iter().any(|a| a == "Urls")))
        .filter_map(|e| e.attrs.get("DefaultValue"))
        .map(|u| host_of(u))
        .collect();
    let resource = els
        .iter()
        .find(|e| e.name == "Resource" && e.ancestors.iter().any(|a| a == "WebApplicationInfo"));
    match resource {
        Some(r) => {
            let text = r.text.trim();
            let host = text
                .strip_prefix("api://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            if !pane_hosts.iter().all(|h| h == host) || !text.ends_with(&format!("/{client_id}")) {
                problems.push(format!(
                    "Resource {text:?} must be api://<the panes' host {pane_hosts:?}>/…/{client_id}"
                ));
            }
        }
        None => problems.push("no WebApplicationInfo Resource".into()),
    }
    let wai_id = els
        .iter()
        .find(|e| e.name == "Id" && e.ancestors.iter().any(|a| a == "WebApplicationInfo"));
    if wai_id.map(|e| e.text.trim()) != Some(client_id) {
        problems.push(format!("WebApplicationInfo Id is not the client id: {wai_id:?}"));
    }
    // Every ribbon icon in the mandatory sizes 16, 32 and 80 (icon.md).
    for (i, icon) in els.iter().enumerate().filter(|(_, e)| e.name == "Icon") {
        let depth = icon.ancestors.len();
        let sizes: BTreeSet<&str> = els[i + 1..]
            .iter()
            .take_while(|e| e.ancestors.len() > depth)
            .filter(|e| e.name == "Image")
            .filter_map(|e| e.attrs.get("size").map(String::as_str))
            .collect();
        for size in ["16", "32", "80"] {
            if !sizes.contains(size) {
                problems.push(format!("an Icon lacks the {size} px image"));
            }
        }
    }
    problems
}

/// xmllint's verdict on one manifest against Microsoft's schemas.
fn xmllint(xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.xml");
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(Path::new(XSD_DIR).join("OfficeAppManifestV1_1.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ajv_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/addin/validate-unified.mjs")
}

/// ajv's verdict on a unified manifest against the bundled schema of its manifestVersion.
fn ajv(json: &str) -> Result<Value, Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, json).unwrap();
    let out = std::process::Command::new("node")
        .arg(ajv_script())
        .arg(&file)
        .output()
        .expect("node runs");
    let verdict: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| json!({"stdout": String::from_utf8_lossy(&out.stdout), "stderr": String::from_utf8_lossy(&out.stderr)}));
    if out.status.success() { Ok(verdict) } else { Err(verdict) }
}

fn validators_available() -> bool {
    let xmllint = std::process::Command::new("xmllint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/addin/node_modules/ajv-draft-04")
        .exists();
    tool_available(Path::new(XSD_DIR).exists(), "../shared/reference beside the checkout")
        && tool_available(xmllint, "xmllint (Debian libxml2-utils)")
        && tool_available(node_modules, "ajv and @microsoft/app-manifest (npm ci --prefix tests/addin)")
}

async fn app_at(public_url: &str, tweak: impl FnOnce(&mut officebridge::config::Settings)) -> TestApp {
    let url = url::Url::parse(public_url).unwrap();
    spawn_app_with(Backend::Sqlite, |s| {
        s.public_url = url;
        s.public_url_explicit = true;
        tweak(s);
    })
    .await
    .unwrap()
}

async fn add_tenant(app: &TestApp, code: &str, client_id: &str) {
    let mut body = crate::helpers::tenant_body(code);
    body["client_id"] = json!(client_id);
    body["tenant_id"] = json!(uuid::Uuid::new_v4().to_string());
    let t = app.admin_post("/api/v1/tenants", &body).await;
    assert_eq!(t.status, 201, "{}", t.text);
}

async fn fetch(app: &TestApp, path: &str) -> Answer {
    Answer::from(reqwest::get(app.url(path)).await.unwrap()).await
}

#[tokio::test]
async fn the_manifests_validate_for_every_public_url_and_client_id() {
    if !validators_available() {
        return;
    }
    for (public_url, client_id) in [
        ("https://erp.example.com", "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a"),
        ("https://officebridge.contoso.com:8443/ob/", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        ("https://xn--bcher-kva.example/", "11111111-2222-4333-8444-555555555555"),
    ] {
        let app = app_at(public_url, |s| s.addin.name = "Fabrikam & Co ERP".into()).await;
        add_tenant(&app, "CONTOSO", client_id).await;
        let base = public_url.trim_end_matches('/');
        for (path, main_element) in [
            ("/addin/excel/manifest.xml", "TaskPaneApp"),
            ("/addin/outlook/manifest.xml", "MailApp"),
        ] {
            let a = fetch(&app, path).await;
            assert_eq!(a.status, 200, "{path}: {}", a.text);
            assert!(a.content_type.starts_with("application/xml"), "{}", a.content_type);
            assert!(a.text.contains(&format!("xsi:type=\"{main_element}\"")), "{}", a.text);
            xmllint(&a.text).unwrap_or_else(|e| panic!("{public_url} {path}: xmllint: {e}\n{}", a.text));
            let problems = semantic_problems(&a.text, client_id);
            assert!(problems.is_empty(), "{public_url} {path}: {problems:#?}");
            assert!(a.text.contains(&format!("{base}/addin/")), "{}", a.text);
            assert!(a.text.contains("Fabrikam &amp; Co ERP"), "the name escaped: {}", a.text);
        }
        let excel = fetch(&app, "/addin/excel/manifest.xml").await.text;
        // The ribbon button on the Home tab opens the pane (create-addin-commands.md).
        assert!(
            excel.contains("<OfficeTab id=\"TabHome\">") && excel.contains("xsi:type=\"ShowTaskpane\""),
            "{excel}"
        );
        assert!(
            excel.contains("<Scope>access_as_user</Scope>") || excel.contains("<Scope>openid</Scope>"),
            "{excel}"
        );
        let outlook = fetch(&app, "/addin/outlook/manifest.xml").await.text;
        assert!(
            outlook.contains("MessageComposeCommandSurface") && outlook.contains("<Permissions>ReadWriteItem</Permissions>"),
            "{outlook}"
        );
        // Two add-ins, two ids.
        let id = |xml: &str| elements(xml).into_iter().find(|e| e.name == "Id").unwrap().text;
        assert_ne!(id(&excel), id(&outlook));

        let unified = fetch(&app, "/addin/manifest.json").await;
        assert_eq!(unified.status, 200, "{}", unified.text);
        assert_eq!(unified.content_type, "application/json");
        let verdict = ajv(&unified.text).unwrap_or_else(|v| panic!("{public_url}: ajv: {v:#}\n{}", unified.text));
        assert!(verdict["schema"].as_str().unwrap().contains("v1.24"), "{verdict}");
        let m = &unified.json;
        assert_eq!(m["webApplicationInfo"]["id"], client_id);
        assert_eq!(m["id"], id(&excel).trim(), "the unified manifest is the Excel add-in's id");
        let scopes: Vec<&Value> = m["extensions"][0]["ribbons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["requirements"]["scopes"][0])
            .collect();
        assert_eq!(scopes, [&json!("workbook"), &json!("mail")], "both hosts in the one extension");
        // The icons it and the XML name are served, as PNGs, without Cache-Control.
        for size in ["16", "32", "64", "80", "128", "192"] {
            let icon = reqwest::get(app.url(&format!("/addin/icons/icon-{size}.png"))).await.unwrap();
            assert_eq!(icon.status(), 200);
            assert!(icon.headers().get("cache-control").is_none());
            assert_eq!(icon.headers()["content-type"], "image/png");
            let bytes = icon.bytes().await.unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            assert_eq!(width.to_string(), size, "icon-{size}.png is {width} px wide");
        }
        assert_eq!(fetch(&app, "/addin/icons/nope.png").await.status, 404);
    }
}

/// What the validators refuse, they refuse: a manifest broken in one rule fails.
#[tokio::test]
async fn the_validators_catch_a_broken_manifest() {
    if !validators_available() {
        return;
    }
    let app = app_at("https://erp.example.com", |_| {}).await;
    let client_id = "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a";
    add_tenant(&app, "CONTOSO", client_id).await;
    let excel = fetch(&app, "/addin/excel/manifest.xml").await.text;
    // Out of the schema's order: WebApplicationInfo before Resources.
    let moved = {
        let start = excel.find("<WebApplicationInfo>").unwrap();
        let end = excel.find("</WebApplicationInfo>").unwrap() + "</WebApplicationInfo>".len();
        let wai = &excel[start..end];
        excel.replacen(wai, "", 1).replacen("<Resources>", &format!("{wai}<Resources>"), 1)
    };
    assert!(xmllint(&moved).is_err());
    // Rules beyond the schema.
    let undefined = excel.replacen("resid=\"OB.Group.Label\"", "resid=\"OB.Nowhere\"", 1);
    assert!(semantic_problems(&undefined, client_id).iter().any(|p| p.contains("OB.Nowhere")));
    let foreign = excel.replace("api://erp.example.com/", "api://elsewhere.example.com/");
    assert!(semantic_problems(&foreign, client_id).iter().any(|p| p.contains("Resource")));
    let plain = excel.replace(
        "https://erp.example.com/addin/icons/icon-16.png",
        "http://erp.example.com/addin/icons/icon-16.png",
    );
    assert!(semantic_problems(&plain, client_id).iter().any(|p| p.contains("https")));
    let unified = fetch(&app, "/addin/manifest.json").await.json;
    let mut bad = unified.clone();
    bad["name"]["short"] = json!("a name far longer than the thirty characters allowed");
    assert!(ajv(&bad.to_string()).is_err());
}

#[tokio::test]
async fn a_manifest_needs_an_https_public_url_and_one_tenant() {
    // Plain http outside --dev: 503 naming the setting.
    let app = app_at("http://erp.example.com", |_| {}).await;
    add_tenant(&app, "CONTOSO", "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a").await;
    for path in ["/addin/excel/manifest.xml", "/addin/outlook/manifest.xml", "/addin/manifest.json"] {
        let a = fetch(&app, path).await;
        a.assert_problem(503, None);
        assert!(a.json["detail"].as_str().unwrap().contains("public_url"), "{}", a.text);
    }
    // No tenant yet: 503 saying so; several: 422 until one is named.
    let app = app_at("https://erp.example.com", |_| {}).await;
    let none = fetch(&app, "/addin/excel/manifest.xml").await;
    none.assert_problem(503, None);
    assert!(none.json["detail"].as_str().unwrap().contains("tenant"), "{}", none.text);
    add_tenant(&app, "CONTOSO", "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a").await;
    add_tenant(&app, "FABRIKAM", "72f988bf-86f1-41af-91ab-2d7cd011db47").await;
    fetch(&app, "/addin/excel/manifest.xml").await.assert_problem(422, Some("tenant"));
    let named = fetch(&app, "/addin/excel/manifest.xml?tenant=FABRIKAM").await;
    assert_eq!(named.status, 200, "{}", named.text);
    assert!(
        named.text.contains("<Id>72f988bf-86f1-41af-91ab-2d7cd011db47</Id>"),
        "{}",
        named.text
    );
    fetch(&app, "/addin/excel/manifest.xml?tenant=NOPE").await.assert_problem(404, None);
    fetch(&app, "/addin/excel/manifest.xml?tenant=bad%20code")
        .await
        .assert_problem(422, Some("tenant"));
    fetch(&app, "/addin/excel/manifest.xml?colour=red")
        .await
        .assert_problem(422, Some("query"));
}

/// The Excel pane on the Office stand-in's page, driven in Debian's chromium by
/// `tests/addin/excel.mjs` (playwright-core): it signs in through the stand-in's SSO, lists the
/// operator's grids, inserts a 100,000-row grid in requests under Excel on the web's 5 MB
/// (office-js-docs-pr `docs/concepts/resource-limits-and-performance-optimization.md`) with
/// every value as shared and no formula made of text, publishes an edit (a cell problem first,
/// shown at its cell), halves its blocks when Excel refuses one, answers SSO errors 13001,
/// 13002 and 13003 as `docs/develop/troubleshoot-sso-in-office-add-ins.md` says, and passes a
/// claims challenge back to `getAccessToken`. Screenshots: `target/addin-screenshots/excel/`.
#[tokio::test]
async fn the_excel_pane_inserts_a_grid_and_publishes_an_edit_in_a_browser() {
    use officebridge::emulator::Emulator;
    use officebridge::emulator::seed::{DEMO_CLIENT_ID, DEMO_TENANT_ID, DEMO_USER, Seed};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = Path::new("/usr/bin/chromium").exists();
    let playwright = root.join("tests/addin/node_modules/playwright-core").exists();
    if !tool_available(chromium, "chromium (Debian package chromium)")
        || !tool_available(playwright, "playwright-core (npm ci --prefix tests/addin)")
    {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emu_url = format!("http://{}", listener.local_addr().unwrap());
    let router = Emulator::new(Seed::demo(), &emu_url).router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let emu = emu_url.clone();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.dev = true;
        s.allow_emulator = true;
        s.emulator_url = Some(emu.clone());
    })
    .await
    .unwrap();
    let t = app
        .admin_post(
            "/api/v1/tenants",
            &json!({"code": "DEMO", "tenant_id": DEMO_TENANT_ID, "client_id": DEMO_CLIENT_ID,
                    "platform": "public_client", "redirect_url": "http://localhost",
                    "client_secret": "demo-client-secret", "authority": emu_url, "graph_endpoint": emu_url}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let op = app
        .admin_put(
            "/api/v1/operators/JDOE",
            &json!({"enabled": true, "tenant": "DEMO", "email": DEMO_USER}),
        )
        .await;
    assert!(op.status < 300, "{}", op.text);
    // The big grid: 100,000 rows, a formula-looking note every 1,000th.
    let mut big = String::from(
        r#"{"name":"Stock","key":"sku","columns":[{"key":"sku","header":"SKU","type":"text"},{"key":"qty","header":"Qty","type":"integer"},{"key":"price","header":"Price","type":"currency","currency":"EUR"},{"key":"due","header":"Due","type":"date"},{"key":"note","header":"Note","type":"text"}]}"#,
    );
    big.push('\n');
    for i in 0..100_000u32 {
        let due = chrono::NaiveDate::from_ymd_opt(1899, 12, 30).unwrap() + chrono::Duration::days(46_000 + i64::from(i % 365));
        let note = if i % 1000 == 0 { "=1+1".to_string() } else { format!("n{i}") };
        big.push_str(&json!([format!("S-{i}"), i, f64::from(i) * 0.25, due.to_string(), note]).to_string());
        big.push('\n');
    }
    let share = |body: String, content_type: &'static str, query: &'static str| {
        app.http
            .post(app.url(&format!("/api/v1/grids{query}")))
            .bearer_auth(&app.client_key)
            .header("x-operator", "JDOE")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let big = Answer::from(share(big, "application/x-ndjson", "").await.unwrap()).await;
    assert_eq!(big.status, 201, "{}", big.text);
    let mut small = String::from("Code,Text\n");
    for i in 0..2000 {
        small.push_str(&format!("T-{i},{}\n", "x".repeat(40)));
    }
    let small = Answer::from(share(small, "text/csv", "?key=Code&sheet=Codes").await.unwrap()).await;
    assert_eq!(small.status, 201, "{}", small.text);
    let shots = root.join("target/addin-screenshots/excel");
    let cfg = json!({
        "base": app.address, "emulator": emu_url, "screenshots": shots, "user": DEMO_USER,
        "big": big.json["id"], "small": small.json["id"],
    });
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/addin/excel.mjs"))
        .arg(cfg.to_string())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|_| panic!("the driver printed no report: {stdout}\n{}", String::from_utf8_lossy(&run.stderr)));
    assert!(report["error"].is_null(), "the browser run failed: {report:#}");
    assert!(report["steps"].as_array().unwrap().is_empty(), "page errors: {report:#}");

    // Signed in, with the account shown, through getAccessToken with the sign-in prompt allowed.
    let account = report["account"].as_str().unwrap();
    assert!(
        account.contains("Demo Operator") && account.contains("JDOE") && account.contains("DEMO"),
        "{account}"
    );
    assert_eq!(report["firstTokenCall"]["allowSignInPrompt"], true);
    assert_eq!(report["grids"], json!(["Codes", "Stock"]), "newest first");
    // Inserted whole, every request under 5 MB, nothing refused, no formula made of text.
    let check = &report["check"];
    assert_eq!(check["mismatches"], json!([]), "{report:#}");
    assert_eq!(check["formulas"], 0);
    assert_eq!(report["stats"]["formulas"], 0);
    assert_eq!(check["textCell"], "=1+1", "the formula-looking note is text");
    assert_eq!(check["tableRows"], 100_001);
    assert_eq!(check["header"], json!(["SKU", "Qty", "Price", "Due", "Note"]));
    assert_eq!(check["formats"][0], "@");
    assert_eq!(check["formats"][3], "yyyy-mm-dd");
    assert_eq!(report["stats"]["refused"], 0);
    let largest = report["stats"]["maxRequest"].as_u64().unwrap();
    assert!(largest < 5 * 1024 * 1024, "a request of {largest} bytes");
    let requests = report["insertReport"]["requests"].as_u64().unwrap();
    assert!(
        report["insertStatus"]
            .as_str()
            .unwrap()
            .contains(&format!("{requests} Excel requests")),
        "{report:#}"
    );
    assert!(requests >= 5, "100,000 rows in one request? {report:#}");
    // The edit: refused while a cell does not fit (shown at its cell), then published.
    let refused = &report["refusedPublish"];
    assert!(refused["head"].as_str().unwrap().starts_with("Not published"), "{refused}");
    assert!(refused["problems"][1].as_str().unwrap().contains("B6"), "the cell named: {refused}");
    assert!(refused["problems"][1].as_str().unwrap().contains("many"), "{refused}");
    assert_eq!(refused["fill"], "#FDE7E9");
    assert!(
        report["published"]["head"]
            .as_str()
            .unwrap()
            .starts_with("Published: 1 changed, 0 added, 0 deleted"),
        "{report:#}"
    );
    let picked = app
        .client_get(&format!("/api/v1/grids/{}/changes", big.json["id"].as_str().unwrap()))
        .await;
    let picked = Answer::from(picked).await;
    assert_eq!(picked.status, 200, "{}", picked.text);
    assert_eq!(
        picked.json["changes"],
        json!({"added": [], "changed": [{"key": "S-1", "fields": {"qty": {"from": 1, "to": 999}}}], "deleted": []})
    );
    // Excel refusing large requests: halved and retried, every row there.
    assert!(report["small"]["refused"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["small"]["rows"], 2000);
    assert_eq!(report["small"]["wrong"], 0);
    // Cancelled: nothing of the grid stays, the tables already there do.
    let cancel = &report["cancel"];
    assert!(cancel["status"].as_str().unwrap().starts_with("Cancelled"), "{cancel}");
    assert_eq!(cancel["sheetsAfter"], cancel["sheetsBefore"], "{cancel}");
    assert_eq!(cancel["tables"], 2, "{cancel}");
    // SSO errors: the documented answers, then signed in on the button.
    for (code, words, button) in [
        ("13001", "not signed in to Office", "Sign in"),
        ("13002", "cancelled", "Sign in"),
        ("13003", "work or school account", "Switch account"),
    ] {
        let s = &report["sso"][code];
        assert!(s["message"].as_str().unwrap().contains(words), "{code}: {s}");
        assert_eq!(s["buttons"][0], button, "{code}: {s}");
        assert!(s["after"].as_str().unwrap().contains("Demo Operator"), "{code}: {s}");
    }
    let switched = report["sso"]["13003"]["calls"].as_array().unwrap();
    assert_eq!(switched.last().unwrap()["forceAddAccount"], true, "{switched:?}");
    // The claims challenge went back to getAccessToken, decoded.
    let challenges: Vec<&Value> = report["challenge"].as_array().unwrap().iter().filter(|c| !c.is_null()).collect();
    assert_eq!(challenges.len(), 1, "{report:#}");
    let claims: Value = serde_json::from_str(challenges[0].as_str().unwrap()).unwrap();
    assert!(claims["access_token"]["capolids"].is_object(), "{claims}");
    for shot in ["1-signed-in", "3-inserted", "4-cell-problem", "5-published", "6-sso-13003"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "screenshot {shot}");
    }
}
