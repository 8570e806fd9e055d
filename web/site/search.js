// The search page: notes and a question are embedded by an embedding model in a Web Worker
// (kiln-worker.js); the notes closest to the question (by cosine similarity, a dot product of
// the normalized embeddings) are listed. Note embeddings are kept until the notes change.
import { WebWorkerEngine } from "./kiln.js";

const $ = (id) => document.getElementById(id);
const TOP = 3;
const state = { engine: null, model: null, indexed: { text: null, notes: [], vectors: [] } };

/** The embedding models built into this folder (models.json, or this folder if it is one). */
async function listModels() {
  const listing = await fetch("models.json");
  if (listing.ok) return (await listing.json()).models.filter((m) => m.task === "embedding");
  const manifest = await fetch("manifest.json");
  if (!manifest.ok) return [];
  const { model_id, task } = await manifest.json();
  return task === "embedding" ? [{ model_id, path: "./" }] : [];
}

function showProblem(title, text) {
  $("problem").hidden = false;
  $("problem-title").textContent = title;
  $("problem-text").textContent = text;
}

function showProgress(report) {
  $("progress").value = report.progress;
  $("progress-text").textContent = report.text;
}

async function load(model) {
  state.model = model;
  state.indexed = { text: null, notes: [], vectors: [] };
  $("query").disabled = $("search").disabled = true;
  $("loading").hidden = false;
  $("status").textContent = `Loading ${model.model_id}…`;
  try {
    state.engine ??= new WebWorkerEngine(new Worker(new URL("kiln-worker.js", import.meta.url), { type: "module" }));
    const backend = new URLSearchParams(location.search).get("backend") ?? undefined;
    await state.engine.reload(new URL(model.path, location.href).href, { initProgressCallback: showProgress, backend });
    $("status").textContent = `${model.model_id} is ready.`;
    $("query").disabled = $("search").disabled = false;
  } catch (err) {
    $("status").textContent = "";
    showProblem("The model did not load", err.message);
  } finally {
    $("loading").hidden = true;
  }
}

async function embed(input) {
  const response = await state.engine.embeddings.create({ input, model: state.model.model_id });
  return response.data.map((d) => d.embedding);
}

async function search(query) {
  const text = $("notes").value;
  if (state.indexed.text !== text) {
    const notes = text
      .split("\n")
      .map((line) => line.trim())
      .filter(Boolean);
    state.indexed = { text, notes, vectors: notes.length ? await embed(notes) : [] };
  }
  const { notes, vectors } = state.indexed;
  const [question] = await embed(query);
  const scored = vectors.map((v, i) => ({ note: notes[i], score: v.reduce((s, x, d) => s + x * question[d], 0) }));
  scored.sort((a, b) => b.score - a.score);
  $("results").replaceChildren(
    ...scored.slice(0, TOP).map(({ note, score }) => {
      const item = document.createElement("li");
      item.textContent = note;
      const similarity = document.createElement("span");
      similarity.className = "score";
      similarity.textContent = ` ${score.toFixed(3)}`;
      item.append(similarity);
      return item;
    }),
  );
  $("results").dataset.query = query; // the question these results answer
  $("status").textContent = notes.length ? "" : "Add some notes first.";
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query || $("search").disabled) return;
  $("search").disabled = true;
  try {
    await search(query);
  } catch (err) {
    $("status").textContent = err.message;
  } finally {
    $("search").disabled = false;
  }
});
$("model").addEventListener("change", () => {
  const model = state.models.find((m) => m.model_id === $("model").value);
  if (model) load(model);
});

state.models = await listModels();
for (const model of state.models) $("model").append(new Option(model.model_id, model.model_id));
if (state.models.length === 0) {
  showProblem("No embedding model here", "Build one with build-web (for example: build-web all-minilm-l6-v2).");
} else {
  load(state.models[0]);
}
