// blastscope page, smear photographs: send them to POST /scan and show each one's overlay, its verdict and the list
// of its white cells. The switch above the drop zone says whether dropped files are single cells or photographs.
"use strict";

const scanTemplate = document.getElementById("scan-card-template");
const dropTitle = document.querySelector(".drop-title");

function smearMode() {
  return document.getElementById("mode-smear").checked;
}

// Where dropped or chosen files go: /scan for smear photographs, /predict (app.js) for single cells.
function submit(files) {
  return smearMode() ? scanPhotos(files) : classify(files);
}

for (const input of document.querySelectorAll('input[name="mode"]')) {
  input.addEventListener("change", () => {
    dropTitle.textContent = smearMode() ? "Drop smear photographs here" : "Drop cell images here";
  });
}

function cellRow(cell, shown, classes, digits) {
  const row = document.createElement("tr");
  const display = classes.find((cls) => cls.name === cell.label)?.display ?? cell.label;
  const p = cell.probabilities[shown ?? cell.label];
  const values = [
    String(cell.cell),
    display,
    `${(100 * p).toFixed(digits - 2)}%`,
    cell.referred ? "uncertain — refer" : "",
    `(${Math.round(cell.centroid_x)}, ${Math.round(cell.centroid_y)})`,
  ];
  for (const value of values) {
    const td = document.createElement("td");
    td.textContent = value;
    row.appendChild(td);
  }
  row.children[1].classList.add("cell-class", cell.label.toLowerCase());
  if (cell.referred) {
    row.classList.add("uncertain");
    // As on a single cell's card (app.js): why, e.g. "p(ALL) 0.45 inside the refer band 0.31–0.72".
    if (referBand) row.children[3].title = referralText(cell.probabilities[positiveClass], referBand);
  }
  return row;
}

function scanCard(entry, classes) {
  if (entry.error !== undefined) return errorCard(entry);
  const node = scanTemplate.content.firstElementChild.cloneNode(true);
  node.querySelector(".overlay").src = `data:image/png;base64,${entry.overlay_png}`;
  node.querySelector(".file-name").textContent = entry.file;
  node.querySelector(".file-name").title = entry.file;
  const verdict = node.querySelector(".scan-verdict");
  verdict.textContent = entry.verdict_text;
  verdict.classList.add(`verdict-${entry.verdict}`);
  node.querySelector(".scan-summary").textContent = `${entry.summary}.`;
  const shown = entry.positive_class; // the column shows p(positive); multi-class runs show p(called class)
  const name = classes.find((cls) => cls.name === shown)?.display;
  node.querySelector(".p-column").textContent = shown ? `p(${name})` : "p(class)";
  // As on a single cell's card (app.js): decimals enough to show every cell's p(positive) on its side of the threshold.
  const sides = entry.threshold === null ? [] : entry.cells.map((cell) => cell.probabilities[shown]);
  const digits = Math.max(3, ...sides.map((p) => decisionDigits(p, entry.threshold)));
  const body = node.querySelector(".cell-list tbody");
  for (const cell of entry.cells) body.appendChild(cellRow(cell, shown, classes, digits));
  if (!entry.cells.length) {
    const row = body.insertRow();
    const td = row.insertCell();
    td.colSpan = 5;
    td.textContent = "no whole white cell found in this photograph";
  }
  const decidedBy = node.querySelector(".decided-by");
  decidedBy.textContent =
    entry.threshold === null
      ? "most probable class"
      : `threshold ${entry.threshold.toFixed(digits)} · ${entry.decided_by.split(",")[0]}`;
  decidedBy.title = entry.decided_by;
  return node;
}

async function scanPhotos(files) {
  if (!files.length) return;
  show(errorBox, "");
  show(statusBox, `Scanning ${files.length} photograph${files.length > 1 ? "s" : ""}…`);
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  try {
    const response = await fetch("/scan", { method: "POST", body: form });
    const body = await readJson(response);
    if (Array.isArray(body.scans)) results.prepend(...body.scans.map((entry) => scanCard(entry, body.classes)));
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      throw new Error(detail);
    }
    const partly = `${body.scanned} of ${files.length} photographs scanned; the others are marked "not classified".`;
    show(statusBox, body.failed ? partly : "");
  } catch (error) {
    show(statusBox, "");
    show(errorBox, `Not scanned: ${error.message}`);
  }
}
