// A chat request's tools: its `tools` and `tool_choice` checked and normalized as chat templates
// take them, and the tool calls of its assistant messages (tools.js reads those of replies).
import { checkSchema, fail } from "./checks.js";

// OpenAI's rule for function names.
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * The request's tools as chat templates take them ({type: "function", function: {name,
 * description, parameters}}), or null; `tool_choice` as "none", "auto", "required" or the
 * name of the function that must be called.
 */
export function checkTools(request) {
  const { tools, tool_choice, parallel_tool_calls } = request; // parallel_tool_calls checked by its type
  if (tools == null) {
    if (tool_choice != null && tool_choice !== "none") fail("tool_choice", "needs tools");
    return { tools: null, toolChoice: "none", parallel: false, schemas: [] };
  }
  if (!Array.isArray(tools) || tools.length === 0) fail("tools", "must be a non-empty array of functions");
  const names = new Set();
  const schemas = [];
  const checked = tools.map((tool, i) => {
    const field = `tools[${i}]`;
    if (tool == null || typeof tool !== "object" || tool.type !== "function")
      fail(`${field}.type`, 'must be "function"');
    const fn = tool.function;
    if (fn == null || typeof fn !== "object") fail(`${field}.function`, "must be an object");
    if (typeof fn.name !== "string" || !FUNCTION_NAME.test(fn.name))
      fail(`${field}.function.name`, "must be 1 to 64 letters, digits, underscores or dashes");
    if (names.has(fn.name)) fail(`${field}.function.name`, `${fn.name} is named twice`);
    names.add(fn.name);
    if (fn.description != null && typeof fn.description !== "string")
      fail(`${field}.function.description`, "must be a string");
    const parameters = fn.parameters == null ? null : checkSchema(fn.parameters, `${field}.function.parameters`);
    if (parameters) schemas.push([`${field}.function.parameters`, parameters]);
    if (fn.strict != null && typeof fn.strict !== "boolean") fail(`${field}.function.strict`, "must be a boolean");
    return {
      type: "function",
      function: {
        name: fn.name,
        ...(fn.description != null && { description: fn.description }),
        parameters: parameters ?? { type: "object", properties: {} },
      },
    };
  });
  let toolChoice = tool_choice ?? "auto";
  if (typeof toolChoice === "object" && toolChoice !== null) {
    const name = toolChoice.type === "function" ? toolChoice.function?.name : undefined;
    if (!names.has(name)) fail("tool_choice", `names no function of the tools (${[...names].join(", ")})`);
    toolChoice = { name };
  } else if (!["none", "auto", "required"].includes(toolChoice)) {
    fail("tool_choice", 'must be "none", "auto", "required" or {type: "function", function: {name}}');
  }
  return { tools: checked, toolChoice, parallel: parallel_tool_calls ?? true, schemas };
}

/** An assistant message's tool calls as chat templates take them (arguments parsed). */
export function messageToolCalls(message, i) {
  const calls = message.tool_calls;
  if (!Array.isArray(calls) || calls.length === 0) fail(`messages[${i}].tool_calls`, "must be a non-empty array");
  return calls.map((call, j) => {
    const field = `messages[${i}].tool_calls[${j}]`;
    if (call?.type !== "function" || typeof call.function?.name !== "string")
      fail(field, 'must be {id, type: "function", function: {name, arguments}}');
    let args = call.function.arguments;
    if (typeof args === "string") {
      try {
        args = JSON.parse(args);
      } catch {
        fail(`${field}.function.arguments`, "must be a JSON object (its text)");
      }
    }
    if (args == null || typeof args !== "object" || Array.isArray(args))
      fail(`${field}.function.arguments`, "must be a JSON object (its text)");
    return { id: call.id, type: "function", function: { name: call.function.name, arguments: args } };
  });
}

/** Whether a checked chat request lets the model call its tools. */
export function usesTools(params) {
  return Boolean(params.tools) && params.toolChoice !== "none";
}
