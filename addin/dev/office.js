// The Office stand-in of `serve --dev` and the browser tests: exactly the Office.js surface the
// panes use, with the rules of the real one that the panes must respect.
//
// - Office.onReady reports the host the dev page hosts (`?host=` of this script's page, Excel
//   by default).
// - Office.auth.getAccessToken returns an add-in token the emulator mints for the demo user
//   (through officebridge's /addin/dev/token), with authChallenge asking for one with MFA done;
//   it can be scripted to fail with Office's 130xx codes (`officebridgeStandIn.failNext`).
// - Excel.run: a request context whose proxies queue operations until context.sync(), as
//   Office.js does; reading a property that was not loaded and synced throws
//   PropertyNotLoaded; a request whose payload passes 5 MB fails with
//   RequestPayloadSizeLimitExceeded and a response that large with
//   ResponsePayloadSizeLimitExceeded (Excel on the web's limits, office-js-docs-pr
//   docs/concepts/resource-limits-and-performance-optimization.md); a string value that starts
//   with "=" becomes a formula unless the cell is formatted as text or the string starts with
//   the apostrophe that marks text (which is kept out of the value), and a number-like string
//   in a General cell becomes a number, as Excel does with typed input.
//
// The workbook is a plain model shared with the page that hosts the pane
// (`window.parent.officebridgeStandIn.workbook`), which renders it as HTML tables.
(function () {
  "use strict";
  const LIMIT = 5 * 1024 * 1024;
  const host = window.parent && window.parent !== window ? window.parent : window;
  const standIn = (host.officebridgeStandIn = host.officebridgeStandIn || {});
  standIn.stats = standIn.stats || { syncs: 0, refused: 0, largestRequest: 0, requests: [], tokenCalls: [], formulas: 0 };
  standIn.failNext = standIn.failNext || [];
  standIn.workbook = standIn.workbook || { sheets: [], tables: [], active: null };
  const stats = standIn.stats;
  const book = standIn.workbook;
  const render = () => host.officebridgeRender && host.officebridgeRender(book);
  const hostName = new URLSearchParams(host.location.search).get("host") || "Excel";

  class OfficeError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
      this.name = "RichApi.Error";
      this.debugInfo = { code, message };
    }
  }

  // --- the workbook model ------------------------------------------------------------
  const key = (r, c) => `${r},${c}`;
  function sheetNamed(name) {
    const s = book.sheets.find((x) => x.name.toLowerCase() === String(name).toLowerCase());
    if (!s) throw new OfficeError("ItemNotFound", `The requested resource doesn't exist: worksheet '${name}'.`);
    return s;
  }
  function cell(sheet, r, c) {
    let x = sheet.cells.get(key(r, c));
    if (!x) sheet.cells.set(key(r, c), (x = { value: "", format: "General", formula: null, fill: null, bold: false }));
    return x;
  }
  function parseAddress(address) {
    const m = /^([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?$/i.exec(address);
    if (!m) throw new OfficeError("InvalidArgument", `The address '${address}' is not valid.`);
    const col = (s) => [...s.toUpperCase()].reduce((n, ch) => n * 26 + ch.charCodeAt(0) - 64, 0) - 1;
    const r0 = Number(m[2]) - 1, c0 = col(m[1]);
    const r1 = m[3] ? Number(m[4]) - 1 : r0, c1 = m[3] ? col(m[3]) : c0;
    return { r0, c0, rows: r1 - r0 + 1, cols: c1 - c0 + 1 };
  }
  /** What Excel stores for a value written into a cell of `format`. */
  function store(x, v) {
    x.formula = null;
    if (typeof v === "string") {
      if (v.startsWith("'")) x.value = v.slice(1);
      else if (x.format === "@") x.value = v;
      else if (v.startsWith("=")) {
        x.formula = v;
        x.value = v;
        stats.formulas++;
      } else if (v.trim() !== "" && !isNaN(Number(v))) x.value = Number(v);
      else x.value = v;
    } else if (v === null || v === undefined) x.value = "";
    else x.value = v;
  }
  function values2d(value, rows, cols, what) {
    if (!Array.isArray(value) || value.length !== rows || value.some((r) => !Array.isArray(r) || r.length !== cols)) {
      throw new OfficeError("InvalidArgument", `The number of rows or columns in the input array doesn't match the size or dimensions of the range (${what}).`);
    }
    return value;
  }

  // --- the request context and its proxies --------------------------------------------
  class Context {
    constructor() {
      this.ops = [];
      this.loads = [];
      this.workbook = new WorkbookProxy(this);
    }
    queue(wire, run) {
      this.ops.push({ wire, run });
    }
    load(proxy, props) {
      this.loads.push({ proxy, props });
      this.ops.push({ wire: { load: props }, run: () => {} });
    }
    async sync() {
      const ops = this.ops, loads = this.loads;
      this.ops = [];
      this.loads = [];
      const size = new Blob([JSON.stringify(ops.map((o) => o.wire))]).size;
      stats.syncs++;
      stats.requests.push(size);
      // A test may lower the limit (officebridgeStandIn.limitBytes) to see the pane halve its blocks.
      if (size > (standIn.limitBytes || LIMIT)) {
        stats.refused++;
        throw new OfficeError("RequestPayloadSizeLimitExceeded", `The request payload size has exceeded the limit (${size} bytes).`);
      }
      stats.largestRequest = Math.max(stats.largestRequest, size);
      try {
        for (const op of ops) op.run();
      } finally {
        render();
      }
      let response = 0;
      const snapshots = loads.map(({ proxy, props }) => {
        const snap = proxy.snapshot(props);
        // Collections answer their items' loaded properties, not the proxies.
        response += new Blob([JSON.stringify(snap, (k, v) => (v instanceof Proxy ? v.loaded : v))]).size;
        return [proxy, snap];
      });
      if (response > (standIn.limitBytes || LIMIT)) throw new OfficeError("ResponsePayloadSizeLimitExceeded", `The response payload size has exceeded the limit (${response} bytes).`);
      for (const [proxy, snap] of snapshots) Object.assign(proxy.loaded, snap);
    }
  }

  class Proxy {
    constructor(ctx) {
      this.ctx = ctx;
      this.loaded = {};
    }
    load(props) {
      this.ctx.load(this, typeof props === "string" ? props.split(",").map((p) => p.trim()) : props || []);
      return this;
    }
    get$(prop) {
      if (!(prop in this.loaded)) {
        throw new OfficeError(
          "PropertyNotLoaded",
          `The property '${prop}' is not available. Before reading the property's value, call the load method on the containing object and call "context.sync()" on the associated request context.`,
        );
      }
      return this.loaded[prop];
    }
  }

  class RangeProxy extends Proxy {
    constructor(ctx, where) {
      super(ctx);
      this.where = where; // () => {sheet, r0, c0, rows, cols}, resolved when the request runs
      const self = this;
      this.format = {
        font: {
          set bold(v) {
            ctx.queue({ bold: v }, () => self.each((x) => (x.bold = v)));
          },
        },
        fill: {
          set color(v) {
            ctx.queue({ fill: v }, () => self.each((x) => (x.fill = v)));
          },
          clear() {
            ctx.queue({ fill: null }, () => self.each((x) => (x.fill = null), true));
          },
        },
        autofitColumns() {
          ctx.queue({ autofit: true }, () => {});
        },
      };
    }
    each(fn, existingOnly) {
      const w = this.where();
      if (existingOnly) {
        for (const [k, x] of w.sheet.cells) {
          const [r, c] = k.split(",").map(Number);
          if (r >= w.r0 && r < w.r0 + w.rows && c >= w.c0 && c < w.c0 + w.cols) fn(x);
        }
        return;
      }
      for (let r = 0; r < w.rows; r++) for (let c = 0; c < w.cols; c++) fn(cell(w.sheet, w.r0 + r, w.c0 + c), r, c);
    }
    set values(v) {
      this.ctx.queue({ values: v }, () => {
        const w = this.where();
        values2d(v, w.rows, w.cols, "values");
        this.each((x, r, c) => store(x, v[r][c]));
      });
    }
    set numberFormat(v) {
      this.ctx.queue({ numberFormat: v }, () => {
        const w = this.where();
        values2d(v, w.rows, w.cols, "numberFormat");
        this.each((x, r, c) => (x.format = v[r][c]));
      });
    }
    get values() {
      return this.get$("values");
    }
    get rowIndex() {
      return this.get$("rowIndex");
    }
    get columnIndex() {
      return this.get$("columnIndex");
    }
    get rowCount() {
      return this.get$("rowCount");
    }
    get columnCount() {
      return this.get$("columnCount");
    }
    select() {
      this.ctx.queue({ select: true }, () => {
        const w = this.where();
        book.active = w.sheet.name;
        book.selected = { sheet: w.sheet.name, r0: w.r0, c0: w.c0, rows: w.rows, cols: w.cols };
      });
    }
    snapshot(props) {
      const w = this.where();
      const out = {};
      for (const p of props) {
        if (p === "values") {
          out.values = [];
          for (let r = 0; r < w.rows; r++) {
            const row = [];
            for (let c = 0; c < w.cols; c++) {
              const x = w.sheet.cells.get(key(w.r0 + r, w.c0 + c));
              row.push(x ? x.value : "");
            }
            out.values.push(row);
          }
        } else if (p === "rowIndex") out.rowIndex = w.r0;
        else if (p === "columnIndex") out.columnIndex = w.c0;
        else if (p === "rowCount") out.rowCount = w.rows;
        else if (p === "columnCount") out.columnCount = w.cols;
        else if (p === "address") out.address = `${w.sheet.name}!R${w.r0 + 1}C${w.c0 + 1}`;
      }
      return out;
    }
  }

  class TableProxy extends Proxy {
    constructor(ctx, find) {
      super(ctx);
      this.find = find; // () => the table model
    }
    set name(v) {
      this.ctx.queue({ tableName: v }, () => {
        if (!/^[A-Za-z_\\][A-Za-z0-9_.\\]*$/.test(v) || v.length > 255) throw new OfficeError("InvalidArgument", `'${v}' is not a valid table name.`);
        if (book.tables.some((t) => t.name.toLowerCase() === v.toLowerCase())) throw new OfficeError("ItemAlreadyExists", `A table named '${v}' exists.`);
        this.find().name = v;
      });
    }
    get name() {
      return this.get$("name");
    }
    get worksheet() {
      return new SheetProxy(this.ctx, () => sheetNamed(this.find().sheet));
    }
    getHeaderRowRange() {
      return new RangeProxy(this.ctx, () => {
        const t = this.find();
        return { sheet: sheetNamed(t.sheet), r0: t.r0, c0: t.c0, rows: 1, cols: t.cols };
      });
    }
    getDataBodyRange() {
      return new RangeProxy(this.ctx, () => {
        const t = this.find();
        return { sheet: sheetNamed(t.sheet), r0: t.r0 + 1, c0: t.c0, rows: t.rows - 1, cols: t.cols };
      });
    }
    snapshot(props) {
      return props.includes("name") ? { name: this.find().name } : {};
    }
  }

  class TablesProxy extends Proxy {
    constructor(ctx, sheetOf) {
      super(ctx);
      this.sheetOf = sheetOf; // null for the workbook's collection
    }
    get items() {
      return this.get$("items");
    }
    getItem(name) {
      return new TableProxy(this.ctx, () => {
        const t = book.tables.find((x) => x.name.toLowerCase() === String(name).toLowerCase());
        if (!t) throw new OfficeError("ItemNotFound", `The requested resource doesn't exist: table '${name}'.`);
        return t;
      });
    }
    add(range, hasHeaders) {
      let made = null;
      const table = new TableProxy(this.ctx, () => made);
      this.ctx.queue({ addTable: true, hasHeaders }, () => {
        const w = typeof range === "string" ? { ...parseAddress(range), sheet: this.sheetOf() } : range.where();
        made = { name: `Table${book.tables.length + 1}`, sheet: w.sheet.name, r0: w.r0, c0: w.c0, rows: w.rows, cols: w.cols };
        book.tables.push(made);
      });
      return table;
    }
    snapshot(props) {
      if (!props.some((p) => p.startsWith("items"))) return {};
      const list = this.sheetOf ? book.tables.filter((t) => t.sheet === this.sheetOf().name) : book.tables;
      return {
        items: list.map((t) => {
          const p = new TableProxy(this.ctx, () => t);
          p.loaded.name = t.name;
          return p;
        }),
      };
    }
  }

  class SheetProxy extends Proxy {
    constructor(ctx, find) {
      super(ctx);
      this.find = find;
      this.tables = new TablesProxy(ctx, find);
    }
    get name() {
      return this.get$("name");
    }
    getRangeByIndexes(r0, c0, rows, cols) {
      return new RangeProxy(this.ctx, () => ({ sheet: this.find(), r0, c0, rows, cols }));
    }
    getRange(address) {
      return new RangeProxy(this.ctx, () => ({ sheet: this.find(), ...parseAddress(address) }));
    }
    activate() {
      this.ctx.queue({ activate: true }, () => (book.active = this.find().name));
    }
    delete() {
      this.ctx.queue({ deleteSheet: true }, () => {
        const s = this.find();
        book.sheets = book.sheets.filter((x) => x !== s);
        book.tables = book.tables.filter((t) => t.sheet !== s.name);
        if (book.active === s.name) book.active = book.sheets.length ? book.sheets[0].name : null;
      });
    }
    snapshot(props) {
      return props.includes("name") ? { name: this.find().name } : {};
    }
  }

  class SheetsProxy extends Proxy {
    get items() {
      return this.get$("items");
    }
    add(name) {
      let made = null;
      const proxy = new SheetProxy(this.ctx, () => made);
      this.ctx.queue({ addSheet: name }, () => {
        if (book.sheets.some((s) => s.name.toLowerCase() === name.toLowerCase())) throw new OfficeError("ItemAlreadyExists", `A sheet named '${name}' exists.`);
        made = { name, cells: new Map() };
        book.sheets.push(made);
        if (!book.active) book.active = name;
      });
      return proxy;
    }
    getItem(name) {
      return new SheetProxy(this.ctx, () => sheetNamed(name));
    }
    snapshot(props) {
      if (!props.some((p) => p.startsWith("items"))) return {};
      return {
        items: book.sheets.map((s) => {
          const p = new SheetProxy(this.ctx, () => s);
          p.loaded.name = s.name;
          return p;
        }),
      };
    }
  }

  class WorkbookProxy extends Proxy {
    constructor(ctx) {
      super(ctx);
      this.worksheets = new SheetsProxy(ctx);
      this.tables = new TablesProxy(ctx, null);
    }
  }

  if (!book.sheets.length) book.sheets.push({ name: "Sheet1", cells: new Map() }), (book.active = "Sheet1");

  window.Excel = {
    async run(batch) {
      return batch(new Context());
    },
  };

  window.Office = {
    HostType: { Excel: "Excel", Outlook: "Outlook", Word: "Word" },
    PlatformType: { OfficeOnline: "OfficeOnline" },
    context: { host: hostName, platform: "OfficeOnline", diagnostics: { version: "stand-in" } },
    onReady(callback) {
      const info = { host: hostName, platform: "OfficeOnline" };
      return new Promise((resolve) => {
        const go = () => {
          if (callback) callback(info);
          resolve(info);
        };
        if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", go);
        else setTimeout(go, 0);
      });
    },
    auth: {
      async getAccessToken(options = {}) {
        stats.tokenCalls.push(JSON.parse(JSON.stringify(options)));
        const code = standIn.failNext.shift();
        if (code) throw Object.assign(new Error(`Office SSO error ${code} (stand-in)`), { code, name: "Error" });
        const query = options.authChallenge ? "?mfa=true" : "";
        const resp = await fetch(`/addin/dev/token${query}`);
        if (!resp.ok) throw Object.assign(new Error(`the stand-in could not mint a token: ${resp.status}`), { code: 13007 });
        return (await resp.json()).access_token;
      },
    },
  };
  render();
})();
