/**
 * The API reference page: static HTML plus a small script that renders
 * /openapi.json. Self-contained (no CDN), so it works offline under
 * `wrangler dev` and passes a strict Content-Security-Policy.
 */

export const REFERENCE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MGX-AI Edge API reference</title>
<link rel="stylesheet" href="/docs/reference.css">
</head>
<body>
<header><h1 id="title">MGX-AI Edge API</h1><p id="summary">Loading <a href="/openapi.json">/openapi.json</a>…</p></header>
<nav id="toc" aria-label="Operations"></nav>
<main id="operations"></main>
<script src="/docs/reference.js" defer></script>
</body>
</html>
`;

export const REFERENCE_CSS = `
:root { font-family: system-ui, sans-serif; color: #1d2330; background: #fafbfc; }
body { margin: 0 auto; max-width: 72rem; padding: 1.5rem; }
header h1 { margin: 0 0 .25rem; }
nav { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0; }
nav a { padding: .2rem .6rem; border-radius: 1rem; background: #e8ecf3; text-decoration: none; color: inherit; }
section.tag > h2 { border-bottom: 1px solid #d5dae3; padding-bottom: .25rem; }
article.op { background: #fff; border: 1px solid #d5dae3; border-radius: .5rem; margin: .75rem 0; padding: .75rem 1rem; }
article.op h3 { margin: 0; font-size: 1rem; font-family: ui-monospace, monospace; }
.method { display: inline-block; min-width: 4.5rem; font-weight: 700; text-transform: uppercase; }
.get { color: #0a7d38; } .post { color: #1f5fbf; } .put, .patch { color: #9a5b00; } .delete { color: #b3261e; }
table { border-collapse: collapse; margin: .5rem 0; width: 100%; }
td, th { border: 1px solid #e3e7ee; padding: .25rem .5rem; text-align: left; vertical-align: top; font-size: .9rem; }
pre { background: #f3f5f8; padding: .5rem; overflow-x: auto; font-size: .8rem; }
`;

export const REFERENCE_JS = `
"use strict";
const METHODS = ["get", "post", "put", "patch", "delete"];
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}
function resolve(doc, schema) {
  if (schema && schema.$ref) return resolve(doc, schema.$ref.split("/").slice(1).reduce((o, k) => o[k], doc));
  return schema;
}
function schemaBlock(doc, schema) {
  return el("pre", {}, JSON.stringify(resolve(doc, schema), null, 2));
}
function renderOperation(doc, path, method, op) {
  const article = el("article", { class: "op", id: op.operationId || method + path });
  article.append(el("h3", {}, el("span", { class: "method " + method }, method), path));
  if (op.summary) article.append(el("p", {}, el("strong", {}, op.summary)));
  if (op.description) article.append(el("p", {}, op.description));
  const params = (op.parameters || []).map((p) => resolve(doc, p));
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "required"), el("th", {}, "description")));
    for (const p of params) table.append(el("tr", {}, el("td", {}, p.name), el("td", {}, p.in), el("td", {}, p.required ? "yes" : "no"), el("td", {}, p.description || "")));
    article.append(table);
  }
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body) article.append(el("h4", {}, "Request body"), schemaBlock(doc, body.schema));
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "description")));
  for (const [status, response] of Object.entries(op.responses || {})) responses.append(el("tr", {}, el("td", {}, status), el("td", {}, resolve(doc, response).description || "")));
  article.append(el("h4", {}, "Responses"), responses);
  return article;
}
async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("summary").textContent = doc.info.description || "";
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["Other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, item[method]]);
    }
  }
  const toc = document.getElementById("toc");
  const main = document.getElementById("operations");
  for (const [tag, ops] of byTag) {
    const tagInfo = (doc.tags || []).find((t) => t.name === tag);
    const section = el("section", { class: "tag", id: "tag-" + tag }, el("h2", {}, tag));
    if (tagInfo && tagInfo.description) section.append(el("p", {}, tagInfo.description));
    for (const [path, method, op] of ops) section.append(renderOperation(doc, path, method, op));
    main.append(section);
    toc.append(el("a", { href: "#tag-" + tag }, tag));
  }
  document.body.dataset.rendered = "true";
}
main().catch((error) => {
  document.getElementById("summary").textContent = "Could not load the API document: " + error.message;
});
`;
