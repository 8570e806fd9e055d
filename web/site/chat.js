import { CreateEngine } from "./kiln.js";

const $ = (id) => document.getElementById(id);
const messages = [];

function append(role, text) {
  const div = document.createElement("div");
  div.className = role;
  div.textContent = text;
  $("log").append(div);
  return div;
}

try {
  const engine = await CreateEngine(".", {
    initProgressCallback: (p) => {
      $("progress").value = p.progress;
      $("status").textContent = p.text;
    },
  });
  $("prompt").disabled = $("send").disabled = false;
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    $("prompt").value = "";
    $("send").disabled = true;
    messages.push({ role: "user", content: text });
    append("user", `You: ${text}`);
    const out = append("assistant", "");
    let reply = "";
    try {
      for await (const chunk of await engine.chat.completions.create({
        messages,
        stream: true,
        stream_options: { include_usage: true },
      })) {
        reply += chunk.choices[0]?.delta?.content ?? "";
        out.textContent = reply;
        if (chunk.usage)
          $("status").textContent =
            `prefill ${chunk.usage.extra.prefill_tokens_per_s.toFixed(1)} tok/s, decode ${chunk.usage.extra.decode_tokens_per_s.toFixed(1)} tok/s`;
      }
      messages.push({ role: "assistant", content: reply });
    } catch (err) {
      append("error", err.message);
    }
    $("send").disabled = false;
  });
} catch (err) {
  $("status").textContent = err.message;
  $("status").className = "error";
}
