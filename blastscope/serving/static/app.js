// blastscope page: send dropped or chosen images to POST /predict?explain=true and show one card per image.
"use strict";

const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file-input");
const results = document.getElementById("results");
const statusBox = document.getElementById("status");
const errorBox = document.getElementById("error");
const template = document.getElementById("card-template");

function show(box, text) {
  box.textContent = text;
  box.hidden = !text;
}

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    document.getElementById("model-name").textContent = health.model;
    document.getElementById("model-backend").textContent = health.backend;
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

function card(file, prediction, classes) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.querySelector(".original").src = URL.createObjectURL(file);
  node.querySelector(".gradcam").src = `data:image/png;base64,${prediction.gradcam_png}`;
  node.querySelector(".file-name").textContent = prediction.file;
  node.querySelector(".file-name").title = prediction.file;
  const label = node.querySelector(".label");
  label.textContent = prediction.display_label;
  label.classList.add(prediction.label.toLowerCase());
  const list = node.querySelector(".probabilities");
  for (const cls of [...classes].reverse()) {
    const p = prediction.probabilities[cls.name];
    const item = document.createElement("li");
    item.innerHTML = '<span class="name"></span><div class="bar"><span></span></div><span class="percent"></span>';
    item.querySelector(".name").textContent = cls.display;
    const fill = item.querySelector(".bar span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.classList.add(cls.name.toLowerCase());
    item.querySelector(".percent").textContent = `${(100 * p).toFixed(1)}%`;
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
    const body = await response.json();
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      throw new Error(detail);
    }
    // Newest upload first, each upload's images in the order they were chosen.
    const cards = body.predictions.map((prediction, i) => card(files[i], prediction, body.classes));
    results.prepend(...cards);
    show(statusBox, "");
  } catch (error) {
    show(statusBox, "");
    show(errorBox, `Not classified: ${error.message}`);
  }
}

fileInput.addEventListener("change", () => {
  classify([...fileInput.files]);
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
  classify([...event.dataTransfer.files]);
});
dropZone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") fileInput.click();
});
loadHealth();
