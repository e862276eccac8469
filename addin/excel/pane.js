// The Excel task pane: who is signed in, the grids the ERP shared with this operator, each
// inserted into a new worksheet as an Excel table in blocks Excel on the web accepts, and the
// edited table published back as a change set with every cell problem shown at its cell.
//
// Excel on the web refuses a request (one context.sync) whose payload passes 5 MB, and a
// response that large (office-js-docs-pr docs/concepts/resource-limits-and-performance-
// optimization.md, "Excel add-ins"): blocks are sized by their measured payload, halved and
// retried on RequestPayloadSizeLimitExceeded or a GeneralException, and grown again while
// they stay small.
import { Session, ApiProblem, renderAccount } from "/addin/common/session.js";

const session = new Session();
const $ = (id) => document.getElementById(id);
/** The most a block's payload may measure: under Excel on the web's 5 MB, with room for the request's own frame. */
const PAYLOAD_LIMIT = 4_500_000;
const API_BLOCK = 5000;
const TABLE_PREFIX = "OB_";
let cancelled = false;

const bytes = (value) => new Blob([JSON.stringify(value)]).size;

function status(text, cls = "detail") {
  const el = $("status");
  el.textContent = text;
  el.className = cls;
}

function describe(e) {
  if (e instanceof ApiProblem) {
    const fields = (e.problem.errors || []).map((f) => `${f.field}: ${f.message}`).join("; ");
    return fields ? `${e.message} (${fields})` : e.message;
  }
  if (e && e.advice) return e.advice.message;
  return (e && (e.message || e.code)) || String(e);
}

Office.onReady((info) => {
  if (info.host !== Office.HostType.Excel) {
    status("This pane runs in Excel.", "problem");
    return;
  }
  $("cancel").addEventListener("click", () => (cancelled = true));
  $("publish-now").addEventListener("click", () => publish());
  signIn();
});

async function signIn({ switchAccount = false } = {}) {
  try {
    if (switchAccount) await session.accessToken({ switchAccount: true });
    const me = await session.api("/api/v1/me");
    renderAccount($("account"), me, null, onAccount);
    await loadGrids();
    await findPublishable();
    await loadRecent();
  } catch (e) {
    renderAccount($("account"), null, e.advice ? e : { message: describe(e) }, onAccount);
    $("grids").replaceChildren();
  }
}

function onAccount(kind) {
  if (kind === "signout") {
    session.signOut();
    renderAccount($("account"), null, null, onAccount);
    $("grids").replaceChildren();
    $("publish").hidden = true;
    return;
  }
  signIn({ switchAccount: kind === "switch" });
}

async function loadGrids() {
  const { items } = await session.api("/api/v1/grids");
  const list = $("grids");
  list.replaceChildren();
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "detail";
    li.textContent = "Nothing shared with you yet.";
    list.append(li);
  }
  for (const grid of items) {
    const li = document.createElement("li");
    li.dataset.grid = grid.id;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = grid.name;
    const detail = document.createElement("div");
    detail.className = "detail";
    detail.textContent = `${grid.rows.toLocaleString("en")} rows · ${grid.columns.length} columns · until ${new Date(grid.expires_at).toLocaleString()}`;
    const button = document.createElement("button");
    button.textContent = "Insert";
    button.addEventListener("click", () => insert(grid));
    li.append(name, detail, button);
    list.append(li);
  }
}

/** The workbooks exported to this operator's OneDrive, newest first, each opening in Excel for the web. */
async function loadRecent() {
  const list = $("recent");
  try {
    const { items, folder } = await session.api("/api/v1/exports/recent");
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "detail";
      li.textContent = `Nothing exported to ${folder} yet.`;
      list.append(li);
    }
    for (const item of items.slice(0, 10)) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = item.webUrl;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = item.name;
      const detail = document.createElement("div");
      detail.className = "detail";
      detail.textContent = `${(item.size / 1024).toFixed(0)} KB · ${item.lastModifiedDateTime ? new Date(item.lastModifiedDateTime).toLocaleString() : ""}`;
      li.append(a, detail);
      list.append(li);
    }
  } catch (e) {
    list.replaceChildren();
    const li = document.createElement("li");
    li.className = "problem";
    li.textContent = `Recent exports could not be listed: ${describe(e)}`;
    list.append(li);
  }
}

function uniqueName(wanted, taken) {
  const base = (wanted || "Grid").replace(/[\\/?*[\]:]/g, "_").slice(0, 28) || "Grid";
  let name = base;
  for (let i = 2; taken.some((t) => t.toLowerCase() === name.toLowerCase()); i++) name = `${base} (${i})`.slice(0, 31);
  return name;
}

function tableName(gridId) {
  return TABLE_PREFIX + gridId.replace(/-/g, "_");
}

function gridOf(table) {
  return table.startsWith(TABLE_PREFIX) ? table.slice(TABLE_PREFIX.length).replace(/_/g, "-") : null;
}

function progress(title, done, total, requests) {
  $("progress").hidden = false;
  $("progress-title").textContent = title;
  $("progress-bar").value = total ? Math.round((done / total) * 100) : 100;
  $("progress-text").textContent = `${done.toLocaleString("en")} of ${total.toLocaleString("en")} rows · ${requests} Excel requests`;
}

/** True when Excel refused the block for its size (or failed in a way a smaller one may not). */
function tooBig(e) {
  const code = e && (e.code || (e.debugInfo && e.debugInfo.code));
  return code === "RequestPayloadSizeLimitExceeded" || code === "ResponsePayloadSizeLimitExceeded" || code === "GeneralException";
}

async function insert(grid) {
  cancelled = false;
  const report = { requests: 0, blocks: 0, largestPayload: 0, halvings: 0 };
  status("");
  try {
    await Excel.run(async (context) => {
      const sheets = context.workbook.worksheets;
      sheets.load("items/name");
      await context.sync();
      report.requests++;
      const sheet = sheets.add(uniqueName(grid.name, sheets.items.map((s) => s.name)));
      const width = grid.columns.length;
      const header = sheet.getRangeByIndexes(0, 0, 1, width);
      header.values = [grid.columns.map((c) => c.header)];
      header.format.font.bold = true;
      await context.sync();
      report.requests++;
      let written = 0;
      let size = 1000;
      const pending = [];
      let next = 0;
      const formatRow = grid.columns.map((c) => c.format || "General");
      const rowFormat = bytes(formatRow);
      while (written < grid.rows) {
        if (cancelled) break;
        // Rows from the API a block at a time, kept only until written.
        while (pending.length < size && next !== null && next < grid.rows) {
          const block = await session.api(`/api/v1/grids/${grid.id}/rows?offset=${next}&limit=${API_BLOCK}`);
          pending.push(...block.rows);
          next = block.next_offset;
        }
        let take = Math.min(size, pending.length);
        let values = pending.slice(0, take);
        // What the block sends: its values and, per row, the columns' formats.
        let payload = bytes(values) + take * rowFormat;
        while (payload > PAYLOAD_LIMIT && take > 1) {
          take = Math.ceil(take / 2);
          values = pending.slice(0, take);
          payload = bytes(values) + take * rowFormat;
          report.halvings++;
        }
        const range = sheet.getRangeByIndexes(1 + written, 0, take, width);
        // The formats first: a text column's cells are text before the values arrive.
        range.numberFormat = values.map(() => formatRow);
        range.values = values;
        try {
          await context.sync();
        } catch (e) {
          report.requests++;
          if (tooBig(e) && take > 1) {
            size = Math.ceil(take / 2);
            report.halvings++;
            continue;
          }
          throw e;
        }
        report.requests++;
        report.blocks++;
        report.largestPayload = Math.max(report.largestPayload, payload);
        pending.splice(0, take);
        written += take;
        if (payload < PAYLOAD_LIMIT / 4) size = Math.min(size * 2, 20000);
        progress(`Inserting ${grid.name}`, written, grid.rows, report.requests);
      }
      if (cancelled) {
        sheet.delete();
        await context.sync();
        report.requests++;
        return;
      }
      const table = sheet.tables.add(sheet.getRangeByIndexes(0, 0, grid.rows + 1, width), true);
      table.name = tableName(grid.id);
      sheet.getRangeByIndexes(0, 0, Math.min(grid.rows + 1, 100), width).format.autofitColumns();
      sheet.activate();
      await context.sync();
      report.requests++;
    });
  } catch (e) {
    $("progress").hidden = true;
    status(`The grid could not be inserted: ${describe(e)}`, "problem");
    window.officebridgePane = { lastInsert: { ...report, error: describe(e) } };
    return;
  }
  window.officebridgePane = { lastInsert: report };
  $("progress").hidden = true;
  if (cancelled) {
    status(`Cancelled: nothing of ${grid.name} was kept.`);
    return;
  }
  status(`Inserted ${grid.rows.toLocaleString("en")} rows of ${grid.name} in ${report.requests} Excel requests.`, "ok");
  await findPublishable();
}

/** The grid tables in this workbook (named OB_<grid id>). */
async function gridTables() {
  return Excel.run(async (context) => {
    const tables = context.workbook.tables;
    tables.load("items/name");
    await context.sync();
    return tables.items.map((t) => t.name).filter(gridOf);
  });
}

async function findPublishable() {
  const tables = await gridTables();
  $("publish").hidden = tables.length === 0;
  $("publish-grid").textContent = tables.length ? `The table of ${tables.length === 1 ? "this grid" : `${tables.length} grids`} in this workbook.` : "";
}

/** A table's header and values, read in blocks under the response limit. */
async function readTable(name) {
  return Excel.run(async (context) => {
    const table = context.workbook.tables.getItem(name);
    const header = table.getHeaderRowRange().load("values, rowIndex, columnIndex");
    const body = table.getDataBodyRange().load("rowCount, columnCount, rowIndex, columnIndex");
    const sheet = table.worksheet;
    await context.sync();
    const rows = [];
    let size = 5000;
    for (let r = 0; r < body.rowCount; ) {
      const take = Math.min(size, body.rowCount - r);
      const block = sheet.getRangeByIndexes(body.rowIndex + r, body.columnIndex, take, body.columnCount).load("values");
      try {
        await context.sync();
      } catch (e) {
        if (tooBig(e) && take > 1) {
          size = Math.ceil(take / 2);
          continue;
        }
        throw e;
      }
      rows.push(...block.values);
      r += take;
    }
    return { header: header.values[0], rows, origin: { row: header.rowIndex, column: header.columnIndex } };
  });
}

function cellName(row, column) {
  let letters = "";
  for (let n = column + 1; n > 0; n = Math.floor((n - 1) / 26)) letters = String.fromCharCode(65 + ((n - 1) % 26)) + letters;
  return `${letters}${row + 1}`;
}

async function publish() {
  const withProblems = $("with-problems").checked;
  const out = $("report");
  out.replaceChildren();
  for (const name of await gridTables()) {
    const id = gridOf(name);
    try {
      const table = await readTable(name);
      const answer = await session.api(`/api/v1/grids/${id}/changes`, {
        method: "POST",
        body: JSON.stringify({ header: table.header, rows: table.rows, publish_with_problems: withProblems }),
      });
      await markProblems(name, table, answer.problems);
      showReport(out, answer, table);
      window.officebridgePane = { ...(window.officebridgePane || {}), lastPublish: answer };
    } catch (e) {
      const p = document.createElement("p");
      p.className = "problem";
      p.textContent = `Not published: ${describe(e)}`;
      out.append(p);
    }
  }
}

/** Each cell problem at its cell: the cell filled red and its reason in the pane. */
async function markProblems(name, table, problems) {
  await Excel.run(async (context) => {
    const t = context.workbook.tables.getItem(name);
    t.getDataBodyRange().format.fill.clear();
    const sheet = t.worksheet;
    const keys = table.header.map((h) => h.trim().toLowerCase());
    for (const p of problems) {
      const col = keys.indexOf(p.column.toLowerCase());
      if (col < 0) continue;
      p.cell = cellName(table.origin.row + p.row - 1, table.origin.column + col);
      sheet.getRange(p.cell).format.fill.color = "#FDE7E9";
    }
    await context.sync();
  });
}

function showReport(out, answer, table) {
  const c = answer.changes;
  const head = document.createElement("p");
  head.className = answer.published ? "ok" : "problem";
  head.textContent = answer.published
    ? `Published: ${c.changed.length} changed, ${c.added.length} added, ${c.deleted.length} deleted.`
    : `Not published: ${answer.problems.length} cell${answer.problems.length === 1 ? "" : "s"} to fix first (or publish with problems).`;
  out.append(head);
  const rows = [];
  for (const p of answer.problems) rows.push([p.cell || `row ${p.row}`, p.column, p.value, p.reason]);
  if (rows.length) out.append(reportTable(["Cell", "Column", "Value", "Problem"], rows, "problems"));
  const changes = [];
  for (const r of c.changed) for (const [field, d] of Object.entries(r.fields)) changes.push([String(r.key), field, JSON.stringify(d.from), JSON.stringify(d.to)]);
  for (const a of c.added) changes.push([String(Object.values(a)[0]), "(added)", "", ""]);
  for (const k of c.deleted) changes.push([String(k), "(deleted)", "", ""]);
  if (changes.length) out.append(reportTable(["Key", "Field", "From", "To"], changes, "changes"));
}

function reportTable(header, rows, kind) {
  const t = document.createElement("table");
  t.className = "report";
  t.dataset.kind = kind;
  const tr = document.createElement("tr");
  for (const h of header) {
    const th = document.createElement("th");
    th.textContent = h;
    tr.append(th);
  }
  t.append(tr);
  for (const r of rows) {
    const row = document.createElement("tr");
    for (const v of r) {
      const td = document.createElement("td");
      td.textContent = v;
      row.append(td);
    }
    t.append(row);
  }
  return t;
}
