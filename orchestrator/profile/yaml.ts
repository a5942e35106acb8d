/**
 * YAML files at the edge: parse with positions, validate with a zod schema, and turn every
 * problem into a {@link InputProblem} that names the file, the line and column, the YAML path,
 * what was expected and what was found.
 */
import { readFile, stat } from "node:fs/promises";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Pair } from "yaml";
import type { z } from "zod";
import { BadInputError, type InputProblem } from "../errors.ts";
import { closest } from "../did-you-mean.ts";

/** A parsed YAML file that remembers where each node came from. */
export interface YamlFile {
  file: string;
  document: Document.Parsed;
  lineCounter: LineCounter;
  /** The plain data of the document. */
  data: unknown;
}

/** Profiles and overlays are small: a file larger than this is a mistake, or an attack. */
export const MAX_YAML_BYTES = 1024 * 1024;

/** How deep a YAML document may nest (a profile nests four or five levels). */
const MAX_YAML_DEPTH = 64;

/**
 * Reads and parses a YAML file. Only a regular file of at most {@link MAX_YAML_BYTES} is read (a
 * FIFO would block forever, a device never end); syntax errors, duplicate keys, aliases that
 * expand into a bomb, recursive aliases and runaway nesting become bad input with line and column.
 */
export async function readYamlFile(file: string, what: string, options: YamlOptions = {}): Promise<YamlFile> {
  const stats = await stat(file).catch((error: NodeJS.ErrnoException) => error);
  if (stats instanceof Error) {
    throw new BadInputError({
      file,
      message: stats.code === "ENOENT" ? `${what} not found (expected a YAML file at this path)` : `cannot read ${what}: ${stats.code ?? stats.message}`,
    });
  }
  if (!stats.isFile()) throw new BadInputError({ file, message: `expected ${what} as a YAML file, found ${kindOf(stats)}` });
  if (stats.size > MAX_YAML_BYTES) {
    throw new BadInputError({ file, message: `expected ${what} of at most ${MAX_YAML_BYTES / 1024} KiB, found ${Math.round(stats.size / 1024)} KiB` });
  }
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new BadInputError({ file, message: `cannot read ${what}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` });
  }
  return parseYamlText(text, file, options);
}

/** What a path is, in words, for "expected a file, found ...". */
export function kindOf(stats: import("node:fs").Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a named pipe";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "a device";
  if (stats.isSocket()) return "a socket";
  return "something that is not a regular file";
}

/** How to read a file: our own files are YAML 1.2; Ansible's are read as Ansible does (1.1, see infra/pyyaml.ts). */
export interface YamlOptions {
  version?: "1.1" | "1.2";
}

/** Parses YAML text that came from `file`. */
export function parseYamlText(text: string, file: string, options: YamlOptions = {}): YamlFile {
  const lineCounter = new LineCounter();
  // Keys are checked for uniqueness below, in one pass: the parser's own check compares each key
  // with every other (a profile of 40k keys took 14 s).
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false, ...(options.version ? { version: options.version } : {}) });
  const at = (offset: number) => {
    const position = lineCounter.linePos(offset);
    return { file, line: position.line, column: position.col };
  };
  if (document.errors.length > 0) {
    throw new BadInputError(document.errors.map((error) => ({ ...at(error.pos[0]), message: `invalid YAML: ${firstLine(error.message)}` })));
  }
  const duplicates: InputProblem[] = [];
  visit(document, {
    Map(_key, map) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
        if (key === undefined) continue;
        if (seen.has(key))
          duplicates.push({ ...at((pair.key as Node).range?.[0] ?? 0), message: `duplicate key ${JSON.stringify(key)} (expected each key once in a mapping)` });
        seen.add(key);
      }
    },
  });
  if (duplicates.length > 0) throw new BadInputError(duplicates.slice(0, 10));
  let data: unknown;
  try {
    data = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new BadInputError({
      file,
      message: `expected YAML whose aliases expand to a reasonable size; found an alias bomb (${firstLine((error as Error).message)})`,
    });
  }
  const shape = shapeProblem(data);
  if (shape) throw new BadInputError({ file, ...(shape.path ? { path: shape.path } : {}), message: shape.message });
  return { file, document, lineCounter, data };
}

/** A recursive alias (a value that contains itself) or nesting deeper than {@link MAX_YAML_DEPTH}. */
function shapeProblem(data: unknown): { path: string; message: string } | undefined {
  const ancestors = new Set<unknown>();
  const walk = (value: unknown, path: PropertyKey[]): { path: string; message: string } | undefined => {
    if (typeof value !== "object" || value === null) return undefined;
    if (ancestors.has(value)) return { path: formatPath(path), message: "expected data, found a recursive alias (a value that contains itself)" };
    if (path.length > MAX_YAML_DEPTH) return { path: formatPath(path), message: `expected at most ${MAX_YAML_DEPTH} levels of nesting, found more` };
    ancestors.add(value);
    const entries: [PropertyKey, unknown][] = Array.isArray(value)
      ? value.map((item, index) => [index, item])
      : Object.entries(value as Record<string, unknown>);
    for (const [key, item] of entries) {
      const problem = walk(item, [...path, key]);
      if (problem) return problem;
    }
    ancestors.delete(value);
    return undefined;
  };
  return walk(data, []);
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
        message: `unknown key ${JSON.stringify(key)}; expected one of ${allowed.join(", ")}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
      };
    });
  }
  const found = "input" in issue ? issue.input : undefined;
  if (issue.code === "invalid_union" && issue.errors.length > 0) {
    // The one form whose shape the value has (a list where a list or a mapping may stand) says
    // what is wrong inside it; when none has, each form is what was expected.
    const atTop = (inner: z.core.$ZodIssue) => inner.path.length === 0 && (inner.code === "invalid_type" || inner.code === "invalid_value");
    const shaped = issue.errors.filter((branch) => branch.length > 0 && !branch.some(atTop));
    if (shaped.length === 1) return shaped[0]!.flatMap((inner) => problemsOf({ ...inner, path: [...path, ...inner.path] } as z.core.$ZodIssue, yaml, schema));
    const forms = issue.errors.flatMap((branch) =>
      branch
        .filter(atTop)
        .flatMap((inner) =>
          inner.code === "invalid_type" ? [typeName(inner.expected)] : inner.code === "invalid_value" ? inner.values.map((value) => JSON.stringify(value)) : [],
        ),
    );
    if (forms.length > 0) {
      const message = `expected ${[...new Set(forms)].join(" or ")}, found ${describeValue(found)}`;
      return [{ ...positionOf(yaml, path, false), path: formatPath(path) || undefined, message } as InputProblem];
    }
  }
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
  options?: z.ZodType[];
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
    // A union whose one mapping is what has keys (a list or a mapping, say).
    else if (def.type === "union" && def.options?.some((option) => defOf(unwrap(option)).type === "object"))
      current = unwrap(def.options.find((option) => defOf(unwrap(option)).type === "object")!);
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
