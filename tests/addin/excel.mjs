// Drives the Excel pane on the Office stand-in's page in Debian's chromium (playwright-core,
// no browser download), as a person would, and reports what it saw as one JSON line. The
// Rust test (tests/api/addin.rs) sets the server up, shares the grids and checks the report.
// Usage: node excel.mjs '{"base", "emulator", "screenshots", "big", "small", "user"}'
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.screenshots, { recursive: true });
const out = { steps: [] };
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("pageerror", (e) => out.steps.push({ pageerror: String(e) }));
const shot = (name) => page.screenshot({ path: `${cfg.screenshots}/${name}.png` });
const pane = () => page.frameLocator("#pane");
const standIn = (fn, arg) => page.evaluate(fn, arg);

async function open(query = "") {
  await page.goto(`${cfg.base}/addin/dev/excel${query}`);
  await pane().locator("#account").waitFor();
}

try {
  // 1. Signed in through the stand-in's SSO: the operator, tenant and account shown.
  await open();
  await pane().locator("#account .who").waitFor({ timeout: 20000 });
  out.account = await pane().locator("#account").innerText();
  out.firstTokenCall = await standIn(() => window.officebridgeStandIn.stats.tokenCalls[0]);
  await pane().locator(`#grids li[data-grid="${cfg.big}"]`).waitFor();
  out.grids = await pane().locator("#grids li .name").allInnerTexts();
  await shot("1-signed-in");

  // 2. The 100,000-row grid inserted in blocks under 5 MB.
  const started = Date.now();
  await pane().locator(`#grids li[data-grid="${cfg.big}"] button`).click();
  await pane().locator("#progress").waitFor({ state: "visible", timeout: 20000 }).catch(() => {});
  await shot("2-inserting");
  await pane().locator("#status.ok").waitFor({ timeout: 240000 });
  out.insertSeconds = (Date.now() - started) / 1000;
  out.insertStatus = await pane().locator("#status").innerText();
  out.insertReport = await page.frame({ url: /addin\/excel/ }).evaluate(() => window.officebridgePane.lastInsert);
  out.stats = await standIn(() => {
    const s = window.officebridgeStandIn.stats;
    return { syncs: s.syncs, refused: s.refused, largestRequest: s.largestRequest, maxRequest: Math.max(...s.requests), formulas: s.formulas };
  });
  // Every value in the workbook against the grid as the test generated it.
  out.check = await standIn(({ rows }) => {
    const book = window.officebridgeStandIn.workbook;
    const table = book.tables[0];
    const sheet = book.sheets.find((s) => s.name === table.sheet);
    const at = (r, c) => { const x = sheet.cells.get(`${r},${c}`); return x ? x.value : ""; };
    const formulas = [...sheet.cells.values()].filter((x) => x.formula).length;
    let mismatches = [];
    for (let i = 0; i < rows; i++) {
      const r = i + 1;
      const want = [`S-${i}`, i, i * 0.25, 46000 + (i % 365), i % 1000 === 0 ? "=1+1" : `n${i}`];
      for (let c = 0; c < want.length; c++) if (at(r, c) !== want[c] && mismatches.length < 5) mismatches.push({ r, c, got: at(r, c), want: want[c] });
    }
    return {
      table: table.name, tableRows: table.rows, sheet: sheet.name, mismatches, formulas,
      header: [0, 1, 2, 3, 4].map((c) => at(0, c)), formats: [0, 1, 2, 3, 4].map((c) => sheet.cells.get(`1,${c}`).format),
      textCell: at(1, 4),
    };
  }, { rows: 100000 });
  await shot("3-inserted");

  // 3. An edit published: first with a cell that does not fit (refused, shown at its cell),
  // then fixed (published).
  await standIn(() => {
    const book = window.officebridgeStandIn.workbook;
    const sheet = book.sheets.find((s) => s.name === book.tables[0].sheet);
    sheet.cells.get("2,1").value = 999; // S-1's Qty
    sheet.cells.get("5,1").value = "many"; // S-4's Qty: not an integer
    window.officebridgeRender(book);
  });
  await pane().locator("#publish-now").click();
  await pane().locator("#report table[data-kind=problems]").waitFor({ timeout: 60000 });
  out.refusedPublish = {
    head: await pane().locator("#report p").first().innerText(),
    problems: await pane().locator("#report table[data-kind=problems] tr").allInnerTexts(),
    fill: await standIn(() => {
      const book = window.officebridgeStandIn.workbook;
      return book.sheets.find((s) => s.name === book.tables[0].sheet).cells.get("5,1").fill;
    }),
  };
  await shot("4-cell-problem");
  await standIn(() => {
    const book = window.officebridgeStandIn.workbook;
    book.sheets.find((s) => s.name === book.tables[0].sheet).cells.get("5,1").value = 4;
  });
  await pane().locator("#publish-now").click();
  await pane().locator("#report p.ok").waitFor({ timeout: 60000 });
  out.published = {
    head: await pane().locator("#report p").first().innerText(),
    changes: await pane().locator("#report table[data-kind=changes] tr").allInnerTexts(),
  };
  await shot("5-published");

  // 4. A small grid with Excel refusing large requests: the pane halves its blocks and retries.
  await standIn(() => (window.officebridgeStandIn.limitBytes = 40000));
  const refusedBefore = await standIn(() => window.officebridgeStandIn.stats.refused);
  await pane().locator(`#grids li[data-grid="${cfg.small}"] button`).click();
  await pane().locator("#status.ok").waitFor({ timeout: 60000 });
  out.small = await standIn((before) => {
    const s = window.officebridgeStandIn;
    const table = s.workbook.tables[1];
    const sheet = s.workbook.sheets.find((x) => x.name === table.sheet);
    let wrong = 0;
    for (let i = 0; i < 2000; i++) if (sheet.cells.get(`${i + 1},0`).value !== `T-${i}`) wrong++;
    return { refused: s.stats.refused - before, rows: table.rows - 1, wrong };
  }, refusedBefore);
  await standIn(() => (window.officebridgeStandIn.limitBytes = 0));

  // 4b. Cancel: the big grid again, cancelled as soon as it starts; nothing of it stays.
  const sheetsBefore = await standIn(() => window.officebridgeStandIn.workbook.sheets.length);
  await pane().locator(`#grids li[data-grid="${cfg.big}"] button`).click();
  await pane().locator("#progress").waitFor({ state: "visible", timeout: 20000 });
  await pane().locator("#cancel").click();
  await pane().locator("#status", { hasText: "Cancelled" }).waitFor({ timeout: 60000 });
  out.cancel = {
    status: await pane().locator("#status").innerText(),
    sheetsBefore,
    sheetsAfter: await standIn(() => window.officebridgeStandIn.workbook.sheets.length),
    tables: await standIn(() => window.officebridgeStandIn.workbook.tables.length),
  };

  // 5. SSO failures, each with Microsoft's documented answer.
  out.sso = {};
  for (const code of [13001, 13002, 13003]) {
    await open(`?sso=${code}`);
    await pane().locator("#account .problem").waitFor({ timeout: 20000 });
    const buttons = await pane().locator("#account button").allInnerTexts();
    out.sso[code] = { message: await pane().locator("#account .problem").innerText(), buttons };
    await shot(`6-sso-${code}`);
    await pane().locator("#account button").first().click();
    await pane().locator("#account .who").waitFor({ timeout: 20000 });
    out.sso[code].after = await pane().locator("#account .who").innerText();
    out.sso[code].calls = await standIn(() => window.officebridgeStandIn.stats.tokenCalls);
  }

  // 6. A claims challenge (Conditional Access wants MFA): passed back to getAccessToken.
  await fetch(`${cfg.emulator}/_emulator/users/${cfg.user}/mfa`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ required: true }) });
  await open();
  await pane().locator("#account .who").waitFor({ timeout: 20000 });
  out.challenge = await standIn(() => window.officebridgeStandIn.stats.tokenCalls.map((c) => c.authChallenge || null));
  await fetch(`${cfg.emulator}/_emulator/users/${cfg.user}/mfa`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ required: false }) });
  await shot("7-after-claims-challenge");
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
  await shot("error").catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
