// The modelforge web page: pick a served model, give it an input (drawing, upload or text), show the predictions.
// Plain browser JavaScript talking to the same JSON API as any client; no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], lastInput: null, lastPicture: null };

function headers(extra) {
  const key = $("api-key").value.trim();
  return Object.assign(key ? { Authorization: "Bearer " + key } : {}, extra || {});
}

function showStatus(message) {
  $("status").textContent = message || "";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = { error: "the server answered " + response.status + " without JSON" };
  }
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) throw new Error((body && body.error) || "HTTP " + response.status);
  return body;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

async function loadModels() {
  try {
    state.models = (await api("/models")).models;
  } catch (err) {
    showStatus("Could not list models: " + err.message);
    return;
  }
  const select = $("model");
  select.innerHTML = "";
  for (const model of state.models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = model.name + " (" + model.task + ")";
    select.appendChild(option);
  }
  showStatus("");
  selectModel();
}

function selectModel() {
  const model = currentModel();
  if (!model) return;
  const kind = model.input.kind;
  // a model whose predict takes text options (image–text retrieval) compares uploaded images with a text instead
  const compares = Boolean(model.input.options);
  $("compare-input").hidden = !compares;
  $("image-input").hidden = kind !== "image" || compares;
  $("text-input").hidden = kind !== "text";
  $("seed-input").hidden = kind !== "seed";
  $("file-input").hidden = !["image", "audio", "video"].includes(kind) || compares;
  // forget the previous model's file: choosing the same file again for this model must fire "change"
  $("file").value = "";
  $("file").accept = { audio: ".wav,audio/wav", video: "video/*,.avi,.mkv,.mp4,.mov,.webm" }[kind] || "image/*";
  $("file-title").textContent = { audio: "Upload a WAV recording", video: "Upload a video clip" }[kind] ||
    "Or upload an image";
  // a language model continues a prompt; a text classifier labels the text
  $("text-title").textContent = model.generation ? "Type a prompt to continue" : "Type text";
  $("predict-text").textContent = model.generation ? "Generate" : "Predict text";
  const size = model.input.image_size ? ", " + model.input.image_size + "×" + model.input.image_size + " px" : "";
  const audio = model.input.max_seconds ? ", WAV up to " + model.input.max_seconds + " s" : "";
  const gen = model.generation ? ", up to " + model.generation.max_new_tokens + " new tokens" : "";
  const frames = model.input.num_frames ? ", " + model.input.num_frames + " frames sampled per clip" : "";
  $("model-info").textContent = kind + " input" + size + audio + frames + gen +
    (model.labels ? ", " + model.labels.length + " labels" : "");
  $("result").hidden = true;
}

// ---- drawing ------------------------------------------------------------------------------------------------
const canvas = $("canvas");
const pen = canvas.getContext("2d");
let drawing = false;

function clearCanvas() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  pen.beginPath();
  pen.moveTo(x, y);
  pen.lineTo(x + 0.1, y);
  pen.stroke();
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  pen.lineTo(x, y);
  pen.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });
canvas.addEventListener("pointerleave", () => { drawing = false; });

// Crop the ink to its bounding box and centre it in a square with a margin, as MNIST-style digits are framed;
// a digit drawn small in a corner would otherwise be shrunk to a few pixels by the model's resize.
function framedDrawing() {
  const { width, height } = canvas;
  const pixels = pen.getImageData(0, 0, width, height).data;
  let top = height, left = width, bottom = -1, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (pixels[(y * width + x) * 4] > 40) {
        top = Math.min(top, y); bottom = Math.max(bottom, y);
        left = Math.min(left, x); right = Math.max(right, x);
      }
    }
  }
  if (bottom < 0) return null;
  const side = Math.max(bottom - top, right - left) + 1;
  const framed = document.createElement("canvas");
  framed.width = framed.height = 112;
  const ctx = framed.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, 112, 112);
  const inner = 112 * 0.72;
  const scale = inner / side;
  const w = (right - left + 1) * scale, h = (bottom - top + 1) * scale;
  ctx.drawImage(canvas, left, top, right - left + 1, bottom - top + 1, (112 - w) / 2, (112 - h) / 2, w, h);
  return framed.toDataURL("image/png");
}

// ---- predictions ----------------------------------------------------------------------------------------------
function setBusy(busy) {
  for (const id of ["predict-drawing", "predict-text", "generate", "explain", "rank", "score-labels"]) {
    $(id).disabled = busy;
  }
}

// ``query``: the query string of the model's declared options ("?query=…" or "?labels=…&labels=…")
async function predict(body, isForm, query) {
  const model = currentModel();
  if (!model) return;
  setBusy(true);
  showStatus("");
  try {
    const options = isForm
      ? { method: "POST", body: body }
      : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    const result = await api("/models/" + encodeURIComponent(model.name) + "/predict" + (query || ""), options);
    state.lastInput = { body: body, isForm: isForm };
    if (model.input.kind === "seed") showGenerated(result.predictions, body.inputs);
    else if (query && query.startsWith("?query=")) showRanking(result.predictions);
    else showPrediction(result.predictions[0], model);
  } catch (err) {
    showStatus(err.message);
  } finally {
    setBusy(false);
  }
}

// Pictures a task returns as base64 PNG fields (segmentation masks, autoencoder reconstructions, generated images)
function pictureFields(prediction) {
  return Object.keys(prediction || {}).filter((key) => key.endsWith("_png") && typeof prediction[key] === "string");
}

function addPicture(base64, caption) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + base64;
  img.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(img, text);
  $("pictures").appendChild(figure);
  $("pictures").hidden = false;
}

function clearResult(model) {
  $("result").hidden = false;
  $("heatmap").hidden = true;
  $("token-view").hidden = true;
  $("boxes").hidden = true;
  $("pictures").hidden = true;
  $("pictures").innerHTML = "";
  $("explain").hidden = !model.explain;
}

function showGenerated(predictions, seeds) {
  clearResult(currentModel());
  $("predictions").querySelector("tbody").innerHTML = "";
  $("output-text").hidden = $("raw").hidden = $("label").hidden = true;
  predictions.forEach((prediction, i) => addPicture(prediction.image_png, "seed " + seeds[i]));
}

// Images ranked by a text query: the uploads in rank order, each with its rank and cosine score
function showRanking(predictions) {
  clearResult(currentModel());
  $("predictions").querySelector("tbody").innerHTML = "";
  $("output-text").hidden = $("raw").hidden = true;
  const files = Array.from($("compare-files").files);
  const order = predictions.map((p, i) => ({ rank: p.rank, score: p.score, file: files[i] }))
    .sort((a, b) => a.rank - b.rank);
  $("label").textContent = "best: " + order[0].file.name;
  $("label").hidden = false;
  for (const entry of order) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(entry.file);
    img.alt = entry.file.name;
    const caption = document.createElement("figcaption");
    caption.textContent = "#" + entry.rank + " " + entry.file.name + " (" + entry.score.toFixed(3) + ")";
    figure.append(img, caption);
    $("pictures").appendChild(figure);
  }
  $("pictures").hidden = false;
}

function compareForm(files) {
  const form = new FormData();
  for (const file of files) form.append("file", file);
  return form;
}

function rankImages() {
  const files = Array.from($("compare-files").files);
  const text = $("query").value.trim();
  if (!files.length || !text) { showStatus("Choose images and type a text query first."); return; }
  predict(compareForm(files), true, "?query=" + encodeURIComponent(text));
}

function scoreLabels() {
  const files = Array.from($("compare-files").files).slice(0, 1);
  const labels = $("labels").value.split(",").map((l) => l.trim()).filter((l) => l);
  if (!files.length || !labels.length) { showStatus("Choose an image and type label prompts first."); return; }
  predict(compareForm(files), true, "?" + labels.map((l) => "labels=" + encodeURIComponent(l)).join("&"));
}

// Detected boxes ([x, y, width, height] in the picture's pixels) drawn over the picture that was sent
function drawBoxes(boxes) {
  const target = $("boxes");
  const picture = new Image();
  picture.onload = () => {
    target.width = picture.naturalWidth;
    target.height = picture.naturalHeight;
    const ctx = target.getContext("2d");
    ctx.drawImage(picture, 0, 0);
    ctx.lineWidth = Math.max(2, target.width / 200);
    ctx.font = Math.max(12, target.width / 40) + "px sans-serif";
    for (const found of boxes) {
      const [x, y, w, h] = found.box;
      ctx.strokeStyle = ctx.fillStyle = "#ffd400";
      ctx.strokeRect(x, y, w, h);
      ctx.fillText(found.label + " " + (100 * found.score).toFixed(0) + "%", x + 2, Math.max(12, y - 4));
    }
    target.hidden = false;
  };
  picture.src = state.lastPicture;
}

// Ranked rows to draw as bars: a classifier's top labels (probabilities) or a word model's neighbours (cosine)
function rankedRows(prediction) {
  if (!prediction) return null;
  if (Array.isArray(prediction.top)) {
    return prediction.top.map((e) => ({ name: e.label, share: e.probability,
                                        value: (100 * e.probability).toFixed(1) + "%" }));
  }
  if (Array.isArray(prediction.neighbors)) {
    return prediction.neighbors.map((n) => ({ name: n.word, share: Math.max(0, n.similarity),
                                              value: n.similarity.toFixed(3) }));
  }
  return null;
}

const TEXT_FIELDS = ["text", "translation", "summary"];

function showPrediction(prediction, model) {
  clearResult(model);
  const rows = $("predictions").querySelector("tbody");
  rows.innerHTML = "";
  const ranked = rankedRows(prediction);
  // generated text (prompt + continuation), transcripts, translations and summaries are shown as text, the rest
  // as JSON
  const textField = prediction && !ranked && TEXT_FIELDS.find((key) => typeof prediction[key] === "string");
  const text = textField ? prediction[textField] : null;
  $("output-text").hidden = text === null;
  $("output-text").textContent = text === null ? "" : text;
  $("raw").hidden = Boolean(ranked) || text !== null;
  const pictures = pictureFields(prediction);
  for (const key of pictures) addPicture(prediction[key], key.replace(/_png$/, "").replace(/_/g, " "));
  if (prediction && Array.isArray(prediction.boxes) && state.lastPicture) drawBoxes(prediction.boxes);
  $("label").textContent = prediction && prediction.label !== undefined ? prediction.label : "";
  $("label").hidden = !$("label").textContent;
  if (!ranked) {  // the rest as JSON, without the pictures' base64 (shown above)
    const rest = Object.assign({}, prediction);
    for (const key of pictures) rest[key] = "(picture shown)";
    $("raw").textContent = JSON.stringify(rest, null, 2);
    return;
  }
  for (const entry of ranked) {
    const row = rows.insertRow();
    row.insertCell().textContent = entry.name;
    row.cells[0].className = "name";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * entry.share).toFixed(1) + "%";
    row.insertCell().appendChild(bar);
    const value = row.insertCell();
    value.className = "pct";
    value.textContent = entry.value;
  }
}

// ---- explanations (shown when the model supports them) ------------------------------------------------------------
function firstMatrix(value) {
  if (Array.isArray(value) && Array.isArray(value[0]) && typeof value[0][0] === "number") return value;
  if (Array.isArray(value)) {
    for (const item of value) { const found = firstMatrix(item); if (found) return found; }
  } else if (value && typeof value === "object") {
    for (const key of Object.keys(value)) { const found = firstMatrix(value[key]); if (found) return found; }
  }
  return null;
}

function drawHeatmap(matrix) {
  const target = $("heatmap");
  const rows = matrix.length, cols = matrix[0].length;
  const flat = matrix.flat();
  const peak = Math.max(...flat.map(Math.abs)) || 1;
  const small = document.createElement("canvas");
  small.width = cols; small.height = rows;
  const ctx = small.getContext("2d");
  const image = ctx.createImageData(cols, rows);
  flat.forEach((v, i) => {
    const a = Math.min(1, Math.abs(v) / peak);
    image.data.set(v >= 0 ? [255, 255 * (1 - a), 255 * (1 - a), 255] : [255 * (1 - a), 255 * (1 - a), 255, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  const out = target.getContext("2d");
  out.imageSmoothingEnabled = false;
  out.drawImage(small, 0, 0, target.width, target.height);
  target.hidden = false;
}

// Text: each token on a background whose colour says how much it pushed towards (red) or against (blue) the label
function showTokens(tokens) {
  const view = $("token-view");
  view.innerHTML = "";
  const peak = Math.max(...tokens.map((t) => Math.abs(t.attribution))) || 1;
  for (const { token, attribution } of tokens) {
    const span = document.createElement("span");
    const a = (Math.abs(attribution) / peak).toFixed(3);
    span.style.background = attribution >= 0 ? "rgba(220, 38, 38, " + a + ")" : "rgba(37, 99, 235, " + a + ")";
    span.textContent = token;
    span.title = attribution.toFixed(4);
    span.dataset.attribution = attribution;
    view.appendChild(span);
  }
  view.hidden = false;
}

async function explain() {
  const model = currentModel();
  if (!model || !state.lastInput) return;
  setBusy(true);
  try {
    const { body, isForm } = state.lastInput;
    const options = isForm
      ? { method: "POST", body: body }
      : { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    const result = await api("/models/" + encodeURIComponent(model.name) + "/explain", options);
    const first = result.explanations[0] || {};
    if (Array.isArray(first.tokens)) { showTokens(first.tokens); return; }
    const matrix = firstMatrix(result.explanations);
    if (matrix) drawHeatmap(matrix); else showStatus("The explanation has no heat-map to draw.");
  } catch (err) {
    showStatus(err.message);
  } finally {
    setBusy(false);
  }
}

// ---- wiring -------------------------------------------------------------------------------------------------
$("model").addEventListener("change", selectModel);
$("api-key").addEventListener("change", loadModels);
$("clear").addEventListener("click", () => { clearCanvas(); $("result").hidden = true; });
$("predict-drawing").addEventListener("click", () => {
  const image = framedDrawing();
  if (!image) { showStatus("Draw something first."); return; }
  state.lastPicture = image;
  predict({ inputs: [image] }, false);
});
$("generate").addEventListener("click", () => {
  const count = Math.min(8, Math.max(1, parseInt($("seed-count").value, 10) || 1));
  const seeds = Array.from({ length: count }, () => Math.floor(Math.random() * 2147483647));
  predict({ inputs: seeds }, false);
});
$("predict-text").addEventListener("click", () => predict({ inputs: [$("text").value] }, false));
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  if (state.lastPicture && state.lastPicture.startsWith("blob:")) URL.revokeObjectURL(state.lastPicture);
  state.lastPicture = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
  predict(form, true);
});
$("explain").addEventListener("click", explain);
$("rank").addEventListener("click", rankImages);
$("score-labels").addEventListener("click", scoreLabels);

pen.strokeStyle = "#fff";
pen.lineWidth = 20;
pen.lineCap = pen.lineJoin = "round";
clearCanvas();
loadModels();
