// The JSON schemas a request gives (response_format, tools' parameters), checked before the
// grammar engine compiles them: XGrammar aborts its wasm on a schema that breaks the JSON
// Schema meta-schema ("Aborted(). Build with -sASSERTIONS"), and a schema whose $refs loop with
// no way out compiles to a grammar that rejects every token. Both are refused up front, naming
// the place.

// Keywords whose value is a schema, an object of schemas, or an array of schemas.
const ONE = ["items", "additionalProperties", "contains", "not", "if", "then", "else", "propertyNames"];
const ONE_MORE = ["unevaluatedItems", "unevaluatedProperties", "contentSchema"];
const BY_NAME = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
const LISTS = ["prefixItems", "allOf", "anyOf", "oneOf"];

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const escape = (key) => String(key).replaceAll("~", "~0").replaceAll("/", "~1");

/** Every subschema of `root` by its JSON pointer ("" for the root), in document order. */
function subschemas(root) {
  const nodes = new Map();
  const pending = [[root, ""]];
  while (pending.length > 0) {
    const [node, pointer] = pending.pop();
    if (typeof node !== "boolean" && !isObject(node)) continue;
    nodes.set(pointer, node);
    if (typeof node === "boolean") continue;
    const children = [];
    for (const key of [...ONE, ...ONE_MORE]) if (key in node) children.push([node[key], `${pointer}/${key}`]);
    for (const key of BY_NAME)
      if (isObject(node[key]))
        for (const [name, child] of Object.entries(node[key]))
          children.push([child, `${pointer}/${key}/${escape(name)}`]);
    for (const key of LISTS)
      if (Array.isArray(node[key])) node[key].forEach((child, i) => children.push([child, `${pointer}/${key}/${i}`]));
    pending.push(...children.reverse());
  }
  return nodes;
}

/** The pointer a local $ref ("#", "#/$defs/a") names, or null for any other reference. */
function target(ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return null;
  const pointer = ref.slice(1);
  if (pointer !== "" && !pointer.startsWith("/")) return null; // an anchor: not followed
  try {
    return decodeURIComponent(pointer);
  } catch {
    return null;
  }
}

/**
 * The first $ref of `root` through which no finite value can be made, as {ref, at} (the
 * reference and the JSON pointer of the schema holding it), or null. A schema can make a value
 * when its $ref's target, every allOf branch, some anyOf and oneOf branch, every required
 * property's schema and the items an array must hold can; the schemas that can are found as a
 * least fixpoint, so a cycle can only if something on it offers a way out (an optional
 * property, an empty array, another branch).
 */
export function endlessRef(root) {
  const nodes = subschemas(root);
  const can = new Set();
  const ok = (pointer) => can.has(pointer) || !nodes.has(pointer);
  const makes = (node, pointer) => {
    if (typeof node === "boolean") return node;
    const ref = target(node.$ref);
    if (ref !== null && !ok(ref)) return false;
    if (Array.isArray(node.allOf) && !node.allOf.every((_, i) => ok(`${pointer}/allOf/${i}`))) return false;
    for (const key of ["anyOf", "oneOf"])
      if (Array.isArray(node[key]) && node[key].length > 0 && !node[key].some((_, i) => ok(`${pointer}/${key}/${i}`)))
        return false;
    if (Array.isArray(node.required) && isObject(node.properties))
      for (const name of node.required)
        if (Object.hasOwn(node.properties, name) && !ok(`${pointer}/properties/${escape(name)}`)) return false;
    const least = Number.isInteger(node.minItems) ? node.minItems : 0;
    const prefix = Array.isArray(node.prefixItems) ? node.prefixItems.length : 0;
    for (let i = 0; i < Math.min(least, prefix); i++) if (!ok(`${pointer}/prefixItems/${i}`)) return false;
    if (least > prefix && "items" in node && !ok(`${pointer}/items`)) return false;
    return true;
  };
  let waiting = [...nodes];
  for (let changed = true; changed; ) {
    changed = false;
    waiting = waiting.filter(([pointer, node]) => {
      if (!makes(node, pointer)) return true;
      can.add(pointer);
      changed = true;
      return false;
    });
  }
  if (can.has("")) return null;
  for (const [pointer, node] of nodes) {
    const ref = isObject(node) ? target(node.$ref) : null;
    if (ref !== null && !ok(ref)) return { ref: node.$ref, at: pointer };
  }
  return null;
}

/** `field` and the JSON pointer `at` within it as one name: "tools[0].function.parameters.properties.a". */
export function placeIn(field, at) {
  const steps = at
    .split("/")
    .slice(1)
    .map((step) => step.replaceAll("~1", "/").replaceAll("~0", "~"));
  return [field, ...steps].join(".");
}
