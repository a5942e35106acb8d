/**
 * Fake executables on PATH for unit tests (execa style: real tiny programs, not mocks). Each
 * fake appends its argv as one JSON line to `$FAKE_LOG` and behaves as its script says.
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Writes an executable `name` into `binDir` running the given bash body after logging argv. */
export async function writeFake(binDir: string, name: string, body: string): Promise<void> {
  await mkdir(binDir, { recursive: true });
  const file = join(binDir, name);
  await writeFile(
    file,
    `#!/usr/bin/env bash
# fake ${name} for unit tests
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' ${name} "$@" >> "$FAKE_LOG"
${body}
`,
  );
  await chmod(file, 0o755);
}

/** The argv lines the fakes logged, each as [program, ...args]. */
export async function fakeCalls(logFile: string): Promise<string[][]> {
  try {
    return (await readFile(logFile, "utf8"))
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as string[]);
  } catch {
    return [];
  }
}
