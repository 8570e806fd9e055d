// Evaluates the plan's integer expressions: a number, a variable name, or [op, a, b].
// A tiny interpreter instead of `new Function`, which extension pages' CSP forbids.
const OPS = {
  "+": (a, b) => a + b,
  "-": (a, b) => a - b,
  "*": (a, b) => a * b,
  "//": (a, b) => Math.floor(a / b),
  "%": (a, b) => a - Math.floor(a / b) * b,
  min: Math.min,
  max: Math.max,
};

export function evaluate(expr, vars) {
  if (typeof expr === "number") return expr;
  if (typeof expr === "string") {
    const value = vars[expr];
    if (value === undefined) throw new Error(`plan variable ${expr} is not set`);
    return value;
  }
  const [op, a, b] = expr;
  return OPS[op](evaluate(a, vars), evaluate(b, vars));
}
