// A chat template, rendered as transformers' `apply_chat_template` renders it: with
// @huggingface/jinja, made to behave as Python's Jinja does where templates notice (the
// globals transformers gives, str.strip(chars), strftime in the C locale).
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { InvalidRequestError, KilnError } from "../errors.js";

export class ChatTemplate {
  /** @param {string} source  the Jinja template */
  constructor(source) {
    this.template = new Template(source);
    checkInterpreter();
  }

  /**
   * The template rendered with `variables` (messages, add_generation_prompt, the special
   * tokens, tools) and the globals transformers gives templates: `raise_exception` and
   * `strftime_now`.
   * @param {Record<string, unknown>} variables
   * @returns {string}
   */
  render(variables) {
    // The globals are set here rather than by Template.render, which declares its own
    // raise_exception (losing the message) and strftime_now (in the browser's language), and
    // refuses to redeclare them.
    const env = new Environment();
    const all = {
      ...JINJA_LITERALS,
      range,
      raise_exception: (message) => {
        throw new InvalidRequestError("messages", `the model's chat template rejects them: ${message}`);
      },
      strftime_now: (format) => strftime(new Date(), format),
      ...variables,
    };
    for (const [name, value] of Object.entries(all)) env.set(name, value);
    return new PythonInterpreter(env).run(this.template.parsed).value;
  }
}

/**
 * @huggingface/jinja's interpreter with Python's `str.strip/lstrip/rstrip(chars)`: the
 * library's ignore their argument and strip whitespace, where templates strip only what they
 * name (Qwen3's strips "\n" from a reply, keeping a leading "\r").
 */
class PythonInterpreter extends Interpreter {
  evaluateCallExpression(expr, environment) {
    const { callee } = expr;
    const name = callee.type === "MemberExpression" && !callee.computed ? callee.property.value : "";
    const sides = STRIP_SIDES[name];
    if (!sides || expr.args.length !== 1) return super.evaluateCallExpression(expr, environment);
    const [[chars]] = this.evaluateArguments(expr.args, environment);
    const object = this.evaluate(callee.object, environment);
    if (object.type !== "StringValue" || chars.type !== "StringValue") {
      return super.evaluateCallExpression(expr, environment); // what the library does with it
    }
    return new object.constructor(stripChars(object.value, chars.value, ...sides));
  }
}

let interpreterChecked = false;

/**
 * The PythonInterpreter patch takes effect: a version of the library that changed what it
 * patches fails here, loudly (as tokenizer.js's `probe` checks its patches).
 */
function checkInterpreter() {
  if (interpreterChecked) return;
  const rendered = new PythonInterpreter(new Environment()).run(new Template("{{ 'xxa'.lstrip('x') }}").parsed);
  if (rendered.value !== "a")
    throw new KilnError(
      "the jinja str.lstrip(chars) patch of a pinned library no longer takes effect",
      "library_changed",
    );
  interpreterChecked = true;
}

const STRIP_SIDES = { strip: [true, true], lstrip: [true, false], rstrip: [false, true] };

/** `text` without the characters of `chars` at its start and/or end, by code point. */
function stripChars(text, chars, start, end) {
  const points = Array.from(text);
  const strip = new Set(chars);
  let [i, j] = [0, points.length];
  while (start && i < j && strip.has(points[i])) i++;
  while (end && j > i && strip.has(points[j - 1])) j--;
  return points.slice(i, j).join("");
}

const JINJA_LITERALS = { true: true, false: false, none: null, True: true, False: false, None: null };

/** Python's range(). */
function range(start, stop, step = 1) {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error("range() step must not be zero");
  const out = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

/**
 * Python's `datetime.now().strftime(format)` in the C locale that transformers renders with
 * (English names whatever the browser's language), for the directives templates use;
 * glibc's `%-d` style drops the zero padding.
 * @param {Date} date
 * @param {string} format
 */
export function strftime(date, format) {
  const hour12 = date.getHours() % 12 || 12;
  const year = date.getFullYear();
  const dayOfYear = (Date.UTC(year, date.getMonth(), date.getDate()) - Date.UTC(year, 0, 1)) / 86400000 + 1;
  const fields = {
    a: [DAYS[date.getDay()].slice(0, 3)],
    A: [DAYS[date.getDay()]],
    b: [MONTHS[date.getMonth()].slice(0, 3)],
    B: [MONTHS[date.getMonth()]],
    d: [date.getDate(), 2],
    H: [date.getHours(), 2],
    I: [hour12, 2],
    j: [dayOfYear, 3],
    m: [date.getMonth() + 1, 2],
    M: [date.getMinutes(), 2],
    p: [date.getHours() < 12 ? "AM" : "PM"],
    S: [date.getSeconds(), 2],
    y: [date.getFullYear() % 100, 2],
    Y: [date.getFullYear()],
    "%": ["%"],
  };
  return format.replace(/%(-?)([aAbBdHIjmMpSyY%])/g, (_, unpadded, directive) => {
    const [value, width] = fields[directive];
    return width && !unpadded ? String(value).padStart(width, "0") : String(value);
  });
}
