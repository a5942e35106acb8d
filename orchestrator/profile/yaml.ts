/**
 * YAML files at the edge: parse with positions, validate with a zod schema, and turn every
 * problem into a {@link InputProblem} that names the file, the line and column, the YAML path,
 * what was expected and what was found.
 */
import { readFile } from "node:fs/promises";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node, type Pair } from "yaml";
import type { z } from "zod";
import { BadInputError, type InputProblem } from "../errors.ts";

/** A parsed YAML file that remembers where each node came from. */
export interface YamlFile {
  file: string;
  document: Document.Parsed;
  lineCounter: LineCounter;
  /** The plain data of the document. */
  data: unknown;
}

/** Reads and parses a YAML file; syntax errors become bad input with line and column. */
export async function readYamlFile(file: string, what: string, options: YamlOptions = {}): Promise<YamlFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new BadInputError({
      file,
      message: code === "ENOENT" ? `${what} not found (expected a YAML file at this path)` : `cannot read ${what}: ${code}`,
    });
  }
  return parseYamlText(text, file, options);
}

/** How to read a file: our own files are YAML 1.2; Ansible's are read as Ansible does (1.1, see infra/pyyaml.ts). */
export interface YamlOptions {
  version?: "1.1" | "1.2";
}

/** Parses YAML text that came from `file`. */
export function parseYamlText(text: string, file: string, options: YamlOptions = {}): YamlFile {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, ...(options.version ? { version: options.version } : {}) });
  if (document.errors.length > 0) {
    throw new BadInputError(
      document.errors.map((error) => {
        const position = lineCounter.linePos(error.pos[0]);
        return {
          file,
          line: position.line,
          column: position.col,
          message: `invalid YAML: ${firstLine(error.message)}`,
        };
      }),
    );
  }
  return { file, document, lineCounter, data: document.toJS() };
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? text;
}

/** Formats a path like `checks[2].http.port`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else out += out === "" ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

/** Describes a found value briefly: `"abc"`, `8080`, `a list`, `a mapping`, `nothing`. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === "object") return "a mapping";
  return typeof value;
}

/** Validates a parsed YAML file against a schema; problems become one {@link BadInputError}. */
export function validateYaml<S extends z.ZodType>(yaml: YamlFile, schema: S): z.infer<S> {
  const result = schema.safeParse(yaml.data, { reportInput: true });
  if (result.success) return result.data;
  const problems = result.error.issues.flatMap((issue) => problemsOf(issue, yaml, schema));
  throw new BadInputError(problems);
}

function problemsOf(issue: z.core.$ZodIssue, yaml: YamlFile, schema: z.ZodType): InputProblem[] {
  const path = issue.path;
  if (issue.code === "unrecognized_keys") {
    const allowed = keysAt(schema, path);
    return issue.keys.map((key) => {
      const hint = closest(key, allowed);
      return {
        ...positionOf(yaml, [...path, key], true),
        path: formatPath([...path, key]),
        message: `unknown key ${JSON.stringify(key)}; expected one of ${allowed.join(", ")}${
          hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""
        }`,
      };
    });
  }
  const found = "input" in issue ? issue.input : undefined;
  let message: string;
  switch (issue.code) {
    case "invalid_type":
      message =
        found === undefined
          ? `missing required field; expected ${typeName(issue.expected)}`
          : `expected ${typeName(issue.expected)}, found ${describeValue(found)}`;
      break;
    case "invalid_value":
      message = `expected one of ${issue.values.map((value) => JSON.stringify(value)).join(", ")}, found ${describeValue(found)}`;
      break;
    case "too_small":
    case "too_big": {
      const bound = issue.code === "too_small" ? "at least" : "at most";
      const limit = issue.code === "too_small" ? issue.minimum : issue.maximum;
      message = issue.message.startsWith("expected")
        ? issue.message
        : `expected ${issue.origin === "array" ? `a list of ${bound} ${limit}` : issue.origin === "string" ? `${bound} ${limit} characters` : `a number ${bound} ${limit}`}, found ${describeValue(found)}`;
      break;
    }
    default:
      message = /\bfound\b/.test(issue.message) ? issue.message : `${issue.message}, found ${describeValue(found)}`;
  }
  // Missing fields have no node of their own: point at the mapping that should hold them.
  return [{ ...positionOf(yaml, path, false), path: formatPath(path) || undefined, message } as InputProblem];
}

/** Names zod's types the way a YAML author knows them. */
function typeName(expected: string): string {
  const names: Record<string, string> = {
    object: "a mapping",
    record: "a mapping",
    array: "a list",
    string: "a string",
    number: "a number",
    int: "a whole number",
    boolean: "true or false",
  };
  return names[expected] ?? expected;
}

/** The 1-based line/column of the node at `path`, or of the nearest ancestor that exists. */
function positionOf(yaml: YamlFile, path: readonly PropertyKey[], pointAtKey: boolean): Pick<InputProblem, "file" | "line" | "column"> {
  let node: Node | null | undefined = yaml.document.contents as Node | null;
  let range: [number, number, number] | undefined | null = node?.range;
  for (let index = 0; index < path.length && node; index += 1) {
    const segment = path[index];
    if (isMap(node)) {
      const pair: Pair | undefined = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(segment));
      if (!pair) break;
      const isLast = index === path.length - 1;
      const keyNode = pair.key as Node;
      node = (pair.value as Node | null) ?? keyNode;
      range = isLast && pointAtKey ? keyNode.range : (node?.range ?? keyNode.range);
    } else if (isSeq(node) && typeof segment === "number") {
      node = node.items[segment] as Node | undefined;
      if (!node) break;
      range = node.range;
    } else break;
  }
  if (!range) return { file: yaml.file };
  const position = yaml.lineCounter.linePos(range[0]);
  return { file: yaml.file, line: position.line, column: position.col };
}

interface ZodDefLike {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
}

function defOf(schema: z.ZodType): ZodDefLike {
  return (schema as unknown as { _zod: { def: ZodDefLike } })._zod.def;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (;;) {
    const def = defOf(current);
    if (def.innerType) current = def.innerType;
    else if (def.type === "pipe" && def.in) current = def.in;
    else return current;
  }
}

/** The keys an object schema at `path` allows (for "expected one of" in unknown-key errors). */
export function keysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let current: z.ZodType | undefined = unwrap(schema);
  for (const segment of path) {
    if (!current) return [];
    const def = defOf(current);
    if (def.type === "object" && def.shape) current = def.shape[String(segment)];
    else if (def.type === "array" && def.element) current = def.element;
    else if (def.type === "record") return [];
    else return [];
    if (current) current = unwrap(current);
  }
  const def = current ? defOf(current) : undefined;
  return def?.type === "object" && def.shape ? Object.keys(def.shape) : [];
}

/** The allowed key closest to a typo, when it is close enough to be a likely meaning. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const saved = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = saved;
    }
  }
  return row[b.length]!;
}
