// blastscope page: send dropped or chosen images to POST /predict?explain=true and show one card per file: the
// prediction of each image, or why a file could not be classified.
"use strict";

const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file-input");
const results = document.getElementById("results");
const statusBox = document.getElementById("status");
const errorBox = document.getElementById("error");
const template = document.getElementById("card-template");
const errorTemplate = document.getElementById("error-card-template");
let positiveClass = null; // from /health: the class whose probability the threshold applies to
let referBand = null; // from /health: [low, high] on p(positive); a cell inside is "uncertain — refer"
let classNames = {}; // from /health: each class's name as people write it (all -> ALL)

function displayName(name) {
  return classNames[name] ?? name;
}

// The band as "0.31–0.72" with `digits` decimals (default: enough to tell its edges apart).
function bandText(band, digits = digitsFor(band)) {
  return `${band[0].toFixed(digits)}–${band[1].toFixed(digits)}`;
}

// Decimals enough to show increasing values as increasing: two for any real band, more for a very narrow one.
function digitsFor(values) {
  for (let digits = 2; digits < 6; digits += 1) {
    const shown = values.map((x) => Number(x.toFixed(digits)));
    if (shown.every((x, i) => i === 0 || x > shown[i - 1])) return digits;
  }
  return 6;
}

// Decimals of a probability that show p beside the threshold on the side it lies (3 unless more are needed): at 3, a
// p(ALL) of 0.4276 under a threshold of 0.42780 read "42.8%" against "threshold 0.428", as if called ALL.
function decisionDigits(p, threshold) {
  for (let digits = 3; digits < 20; digits += 1) {
    if ((p >= threshold) === (Number(p.toFixed(digits)) >= Number(threshold.toFixed(digits)))) return digits;
  }
  return 20;
}

// Why a cell is referred: "p(ALL) 0.45 inside the refer band 0.31–0.72".
function referralText(p, band) {
  const digits = digitsFor([band[0], p, band[1]]);
  return `p(${displayName(positiveClass)}) ${p.toFixed(digits)} inside the refer band ${bandText(band, digits)}`;
}

// The answer's JSON body; an answer that is not JSON (a proxy's or a crashed server's error page) is an error that
// says its HTTP status, never the parser's "Unexpected token".
async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the server answered HTTP ${response.status} ${response.statusText}: ${text.slice(0, 200)}`);
  }
}

function show(box, text) {
  box.textContent = text;
  box.hidden = !text;
}

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    document.getElementById("model-name").textContent = health.model;
    document.getElementById("model-backend").textContent = health.backend;
    const decision = document.getElementById("model-decision");
    decision.textContent = health.operating_point.description;
    decision.title = health.operating_point.description;
    positiveClass = health.operating_point.positive_class;
    classNames = Object.fromEntries(health.classes.map((cls) => [cls.name, cls.display]));
    referBand = health.operating_point.refer_band;
    const referral = document.getElementById("model-referral");
    // an empty band (both edges at the threshold) was chosen, but refers no cell: validation met its target
    referral.textContent = referBand && referBand[0] < referBand[1]
      ? `p(${displayName(positiveClass)}) ${bandText(referBand)}`
      : "none";
    referral.title = health.operating_point.referral;
    if (health.colour_norm && health.colour_norm.mode !== "none") {
      // The run normalises colours per person: how an upload's cells are grouped into people.
      document.getElementById("model-colour-row").hidden = false;
      document.getElementById("model-colour").textContent = health.colour_norm.description;
    }
    if (health.warnings && health.warnings.length) {
      // e.g. a temperature at a bound of its fit: every probability shown is scaled by it
      document.getElementById("model-warning-row").hidden = false;
      document.getElementById("model-warning").textContent = health.warnings.join(" · ");
    }
    const limits = health.limits;
    document.getElementById("limits").textContent =
      `PNG, JPEG, BMP, TIFF, WebP · up to ${limits.max_files} files of ${limits.max_file_mb} MB`;
    if (health.attribution) {
      document.getElementById("attribution").textContent = `Trained on ${health.attribution}. `;
    }
  } catch (error) {
    show(errorBox, `The server did not answer /health: ${error}`);
  }
}

function errorCard(entry) {
  const node = errorTemplate.content.firstElementChild.cloneNode(true);
  node.querySelector(".file-name").textContent = entry.file;
  node.querySelector(".file-name").title = entry.file;
  node.querySelector(".reason").textContent = `${entry.error} (HTTP ${entry.status})`;
  return node;
}

function card(file, prediction, classes) {
  if (prediction.error !== undefined) return errorCard(prediction);
  const node = template.content.firstElementChild.cloneNode(true);
  node.querySelector(".original").src = URL.createObjectURL(file);
  const overlay = node.querySelector(".gradcam");
  const note = node.querySelector(".gradcam-note");
  if (prediction.gradcam_png) {
    overlay.src = `data:image/png;base64,${prediction.gradcam_png}`;
  } else {
    // The heat map shows nothing (e.g. all zero): say so instead of showing an empty overlay.
    overlay.remove();
    note.hidden = false;
    note.textContent = prediction.gradcam_note || "no Grad-CAM for this image";
  }
  if (prediction.gradcam_note) note.title = prediction.gradcam_note;
  node.querySelector(".file-name").textContent = prediction.file;
  node.querySelector(".file-name").title = prediction.file;
  const label = node.querySelector(".label");
  label.textContent = prediction.display_label;
  label.classList.add(prediction.label.toLowerCase());
  // The run segments: this cell was cut out onto black first, as C-NMC cells are (the Grad-CAM shows the cut-out).
  node.querySelector(".segmented").hidden = !prediction.segmented;
  // Several whole white cells in an image sent as one cell (a smear photograph): only one of them was classified.
  const several = node.querySelector(".note");
  several.hidden = !prediction.note;
  several.textContent = prediction.note || "";
  // p(positive) inside the run's refer band: the label stands, but a person should review the cell.
  if (prediction.referred) {
    node.classList.add("referred");
    node.querySelector(".referral").hidden = false;
    const why = node.querySelector(".refer-why");
    if (referBand) why.textContent = referralText(prediction.probabilities[positiveClass], referBand);
  }
  const digits =
    prediction.threshold === null ? 3 : decisionDigits(prediction.probabilities[positiveClass], prediction.threshold);
  const decidedBy = node.querySelector(".decided-by");
  decidedBy.textContent =
    prediction.threshold === null
      ? "most probable class"
      : `threshold ${prediction.threshold.toFixed(digits)} · ${prediction.decided_by.split(",")[0]}`;
  decidedBy.title = prediction.decided_by;
  const list = node.querySelector(".probabilities");
  for (const cls of [...classes].reverse()) {
    const p = prediction.probabilities[cls.name];
    const item = document.createElement("li");
    item.innerHTML = '<span class="name"></span><div class="bar"><span></span></div><span class="percent"></span>';
    item.querySelector(".name").textContent = cls.display;
    const fill = item.querySelector(".bar span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.classList.add(cls.name.toLowerCase());
    if (cls.name === positiveClass && prediction.threshold !== null && referBand) {
      const band = document.createElement("i"); // the refer band, under the threshold mark
      band.className = "refer-band";
      band.style.left = `${(100 * referBand[0]).toFixed(1)}%`;
      band.style.width = `${(100 * (referBand[1] - referBand[0])).toFixed(1)}%`;
      band.title = `refer band ${bandText(referBand)}: uncertain — refer`;
      item.querySelector(".bar").appendChild(band);
    }
    if (cls.name === positiveClass && prediction.threshold !== null) {
      const mark = document.createElement("i");
      mark.className = "threshold";
      mark.style.left = `${(100 * prediction.threshold).toFixed(1)}%`;
      mark.title = `threshold ${prediction.threshold.toFixed(digits)}`;
      item.querySelector(".bar").appendChild(mark);
    }
    item.querySelector(".percent").textContent = `${(100 * p).toFixed(digits - 2)}%`;
    list.appendChild(item);
  }
  return node;
}

async function classify(files) {
  if (!files.length) return;
  show(errorBox, "");
  show(statusBox, `Classifying ${files.length} image${files.length > 1 ? "s" : ""}…`);
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  try {
    const response = await fetch("/predict?explain=true", { method: "POST", body: form });
    const body = await readJson(response);
    // One entry per file, in upload order, whether it was classified or not: each gets its card.
    if (Array.isArray(body.predictions)) {
      // Newest upload first, each upload's files in the order they were chosen.
      const cards = body.predictions.map((prediction, i) => card(files[i], prediction, body.classes));
      results.prepend(...cards);
    }
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      throw new Error(detail);
    }
    const partly = `${body.classified} of ${files.length} files classified; the others are marked "not classified".`;
    // A run that normalises colours per person says how the upload's cells were grouped into people (body.people),
    // and warns when a person has too few cells in it.
    const people = body.people ? `${body.people}.` : "";
    show(statusBox, [people, body.warning, body.failed ? partly : ""].filter(Boolean).join(" "));
  } catch (error) {
    show(statusBox, "");
    show(errorBox, `Not classified: ${error.message}`);
  }
}

fileInput.addEventListener("change", () => {
  submit([...fileInput.files]); // scan.js: to /scan or /predict
  fileInput.value = "";
});
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  submit([...event.dataTransfer.files]);
});
dropZone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") fileInput.click();
});
loadHealth();
