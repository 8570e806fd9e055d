// The checks request fields are made of: a field's type and range as request_fields.js gives
// them, and a JSON schema held within what the grammar engine compiles. Each failure is an
// InvalidRequestError that names the field.
import { InvalidRequestError } from "../errors.js";

// XGrammar compiles a schema by recursion on a small wasm stack: nested past about 100 levels
// of JSON, or a `pattern` past about 200 nested groups, it traps or hangs (tried on 0.1.27).
// Schemas are held well under that (JSON levels, and groups in a pattern), and under a size
// that compiles in seconds. What still traps (a chain of a thousand $refs) restarts the
// grammar engine (text/grammar.js).
export const MAX_SCHEMA_DEPTH = 64;
export const MAX_SCHEMA_VALUES = 50_000;

export const fail = (field, message) => {
  throw new InvalidRequestError(field, message);
};
export const isNumber = (x) => typeof x === "number" && Number.isFinite(x);

/**
 * Checks `request[field.name]` against the field's type and range (request_fields.js); null
 * and undefined pass (the field is left out).
 */
export function checkField(request, { name, type, minimum, maximum, exclusiveMinimum, enum: values }) {
  const value = request[name];
  if (value == null) return;
  if (type === "number" && exclusiveMinimum !== undefined) {
    if (!(isNumber(value) && value > exclusiveMinimum)) fail(name, `must be a number greater than ${exclusiveMinimum}`);
  } else if (type === "number") {
    if (!(isNumber(value) && value >= minimum && value <= maximum))
      fail(name, `must be a number from ${minimum} to ${maximum}`);
  } else if (type === "integer") {
    if (!(Number.isInteger(value) && value >= minimum && value <= (maximum ?? Number.MAX_SAFE_INTEGER)))
      fail(
        name,
        maximum === undefined
          ? `must be an integer of at least ${minimum}`
          : `must be an integer from ${minimum} to ${maximum}`,
      );
  } else if (values !== undefined) {
    if (!values.includes(value)) fail(name, `must be ${values.map((v) => JSON.stringify(v)).join(" or ")}`);
  } else if (["boolean", "string", "function"].includes(type)) {
    if (typeof value !== type) fail(name, `must be a ${type}`);
  } else {
    throw new Error(`${name}: request_fields.js gives no check for its type, and request.js has none of its own`);
  }
}

/**
 * A JSON schema (an object, or its text) within MAX_SCHEMA_DEPTH and MAX_SCHEMA_VALUES, holding
 * only what JSON can; returns it parsed. Walked without recursion: a 10,000-deep value must not
 * overflow the stack here either, and a cycle ends at the depth limit.
 */
export function checkSchema(schema, field) {
  let root = schema;
  if (typeof schema === "string") {
    try {
      root = JSON.parse(schema);
    } catch (err) {
      fail(field, `is not valid JSON (${err.message})`);
    }
  }
  if (root === null || typeof root !== "object" || Array.isArray(root))
    fail(field, "must be a JSON schema (an object, or its JSON text)");
  const pending = [[root, 1, ""]];
  for (let values = 1; pending.length > 0; values++) {
    const [value, depth, key] = pending.pop();
    if (values > MAX_SCHEMA_VALUES) fail(field, `holds more than ${MAX_SCHEMA_VALUES} values`);
    if (key === "pattern" && typeof value === "string" && groupDepth(value) > MAX_SCHEMA_DEPTH)
      fail(field, `has a pattern with groups nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
    if (value == null || typeof value === "string" || typeof value === "boolean") continue;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) fail(field, `holds ${value}, which JSON cannot`);
      continue;
    }
    if (typeof value !== "object") fail(field, `holds a ${typeof value}, which JSON cannot`);
    if (depth > MAX_SCHEMA_DEPTH) fail(field, `is nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
    for (const [name, child] of Object.entries(value)) pending.push([child, depth + 1, name]);
  }
  return root;
}

/** How deep the groups of a regular expression nest (escapes and character classes skipped). */
function groupDepth(pattern) {
  let depth = 0;
  let deepest = 0;
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") i++;
    else if (inClass) inClass = c !== "]";
    else if (c === "[") inClass = true;
    else if (c === "(") deepest = Math.max(deepest, ++depth);
    else if (c === ")") depth--;
  }
  return deepest;
}
