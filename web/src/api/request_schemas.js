// The JSON Schema meta-schema, compiled into a validating function by build.mjs.
import { validateJsonSchema } from "kiln:json-schema";

import { InvalidRequestError } from "../errors.js";
import { endlessRef, placeIn } from "./schema.js";

/**
 * Refuses the first of a request's JSON schemas ([field, schema] pairs) that breaks the JSON
 * Schema meta-schema or whose $refs loop with no way out, naming the place (imported on first
 * use: the meta-schema's validator is some 70 KB).
 * @param {[string, object][]} schemas
 */
export function checkSchemas(schemas) {
  for (const [field, schema] of schemas) {
    if (!validateJsonSchema(schema)) {
      const [error] = validateJsonSchema.errors;
      const allowed = error.params?.allowedValues;
      const detail = allowed ? `${error.message}: ${allowed.join(", ")}` : error.message;
      throw new InvalidRequestError(placeIn(field, error.instancePath), `is not valid JSON Schema (${detail})`);
    }
    const endless = endlessRef(schema);
    if (endless) {
      throw new InvalidRequestError(
        placeIn(field, `${endless.at}/$ref`),
        `"${endless.ref}" leads back into itself with no way out: no finite JSON value matches the schema`,
      );
    }
  }
}
