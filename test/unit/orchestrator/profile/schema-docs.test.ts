/**
 * The runbook's tables say what the schemas accept: every check kind in the schema's order, each
 * with exactly its fields, and "controller" in the runs column exactly where the schema lets the
 * kind run from the control host; every profile key and overlay key.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PROJECT_ROOT } from "../../../../orchestrator/host/paths.ts";
import { FROM_CONTROLLER_KINDS, overlaySchema, PROBE_KINDS, PROBE_SCHEMAS, profileSchema, type ProbeKind } from "../../../../orchestrator/profile/schema.ts";

/** A probe kind's field names (none for a kind that is one string). */
function schemaFields(kind: ProbeKind): string[] {
  const schema = PROBE_SCHEMAS[kind] as { shape?: Record<string, unknown> };
  return schema.shape ? Object.keys(schema.shape).sort() : [];
}

/** The table's rows: kind, its field names (`as` another kind: its fields too), where it runs. */
async function tableRows(): Promise<{ kind: string; fields: string[]; like: string | undefined; runs: string }[]> {
  const text = await readFile(join(PROJECT_ROOT, "docs/runbooks/integration-testing.md"), "utf8");
  const start = text.indexOf("| kind | fields (default) | runs | example |");
  assert.ok(start >= 0, "the runbook has the table of check kinds");
  const lines = text.slice(start).split("\n").slice(2);
  const rows = lines.slice(
    0,
    lines.findIndex((line) => !line.startsWith("|")),
  );
  return rows.map((row) => {
    const [kind = "", fields = "", runs = ""] = row.split(" | ").map((cell) => cell.replace(/^\| /, ""));
    const like = /^as `(\w+)`/.exec(fields)?.[1];
    // What stands in parentheses is a default or a value, not a field.
    const named = [
      ...fields
        .replace(/^as `\w+`/, "")
        .replace(/\([^)]*\)/g, "")
        .matchAll(/`([^`]+)`/g),
    ].map((match) => match[1]!);
    return { kind: kind.replaceAll("`", ""), fields: named, like, runs };
  });
}

describe("the runbook's table of check kinds", () => {
  it("lists every kind the schema has, in its order, with exactly its fields and where it may run", async () => {
    const rows = await tableRows();
    assert.deepEqual(
      rows.map((row) => row.kind),
      PROBE_KINDS,
    );
    for (const row of rows) {
      const kind = row.kind as ProbeKind;
      const fields = [...(row.like ? schemaFields(row.like as ProbeKind) : []), ...row.fields];
      assert.deepEqual([...new Set(fields)].sort(), schemaFields(kind), `the fields of ${kind}`);
      assert.equal(row.runs.includes("controller"), FROM_CONTROLLER_KINDS.includes(kind), `where ${kind} runs`);
    }
  });
});

/** The first column's keys of the table that follows `title` in the runbook. */
async function keysOfTable(title: string): Promise<string[]> {
  const text = await readFile(join(PROJECT_ROOT, "docs/runbooks/integration-testing.md"), "utf8");
  const start = text.indexOf(title);
  assert.ok(start >= 0, `the runbook has ${title}`);
  const lines = text.slice(text.indexOf("| key |", start)).split("\n").slice(2);
  return lines
    .slice(
      0,
      lines.findIndex((line) => !line.startsWith("|")),
    )
    .map((row) => /^\| `([^`]+)`/.exec(row)?.[1] ?? row);
}

describe("the runbook's tables of profile and overlay keys", () => {
  it("list every key the schemas have, in their order", async () => {
    assert.deepEqual(await keysOfTable("### Profile keys"), Object.keys(profileSchema.shape));
    assert.deepEqual(await keysOfTable("The overlay (`overrides/<host>.yml`):"), Object.keys(overlaySchema.shape));
  });
});
