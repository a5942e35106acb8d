/**
 * Several commands in the guest through one SSH session: one shell script that runs each command
 * side by side (each in its own `sh -c`, with its own stdin and its own time limit) and prints
 * each one's exit status, stdout and stderr between marker lines. Under TCG every command the
 * harness runs costs ~0.7 s of the guest's CPU before it does anything (the SSH session, sudo,
 * the shell): a stage's dozen checks or a snapshot's four items pay that once this way.
 */
import { randomBytes } from "node:crypto";
import { quoteArg } from "../../infra/runner.ts";

/** One command of a batch, as {@link Machine.execute} would run it. */
export interface BatchCommand {
  command: string;
  /** Fed on the command's stdin (else it reads nothing). */
  input?: string;
}

/** What one command of a batch did. */
export interface BatchResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Its time limit in the guest cut it off. */
  timedOut: boolean;
}

/** The longest batch script sent: one argument of a command line may hold 128 KiB on Linux. */
export const MAX_BATCH_SCRIPT_CHARS = 100_000;

/** What GNU `timeout --verbose` prints when it sends its signal. */
const TIMEOUT_WORDS = "timeout: sending signal ";

/** A batch's script and how its output is read. */
export interface GuestBatch {
  script: string;
  /** The output read back: one result per command in order, or undefined when the output is not the batch's whole answer. */
  read(stdout: string): BatchResult[] | undefined;
}

/**
 * The script that runs `commands` side by side, each cut off after `tryMs` (then killed 5 s
 * later if it ignored the signal). Each answer begins with a marker line whose text never appears
 * in the script itself (it is printed in two pieces), so the output of a command that shows the
 * script (`ps`) cannot pass for one.
 */
export function guestBatch(commands: readonly BatchCommand[], tryMs: number, nonce: string = randomBytes(8).toString("hex")): GuestBatch {
  const seconds = Math.max(1, Math.ceil(tryMs / 1000));
  const printMarker = (rest: string, ...args: string[]) => [`printf '%s%s ${rest}\\n' @@boma-it- ${nonce}`, ...args].join(" ");
  const lines = [`d=$(mktemp -d) || exit 70`, `trap 'rm -rf -- "$d"' EXIT`];
  commands.forEach((entry, index) => {
    const stdin = entry.input === undefined ? "/dev/null" : `"$d/${index}.in"`;
    if (entry.input !== undefined) lines.push(`printf %s ${quoteArg(Buffer.from(entry.input).toString("base64"))} | base64 -d >"$d/${index}.in"`);
    lines.push(
      `( timeout --verbose -k 5 ${seconds} sh -c ${quoteArg(entry.command)} <${stdin} >"$d/${index}.out" 2>"$d/${index}.err"; echo $? >"$d/${index}.rc" ) &`,
    );
  });
  lines.push("wait");
  commands.forEach((_, index) => {
    // Each text is followed by a newline of the script's, taken off again when it is read.
    lines.push(printMarker(`${index} out %s`, `"$(cat "$d/${index}.rc" 2>/dev/null || echo 71)"`), `cat "$d/${index}.out"; echo`);
    lines.push(printMarker(`${index} err`), `cat "$d/${index}.err"; echo`);
  });
  lines.push(printMarker("end"));
  return { script: lines.join("\n"), read: (stdout) => readBatch(stdout, `@@boma-it-${nonce} `, commands.length) };
}

/** The results in a batch's output; undefined unless every command's answer and the end are there. */
function readBatch(stdout: string, marker: string, count: number): BatchResult[] | undefined {
  // Every marker line (the marker is hex, letters and dashes: nothing a pattern reads otherwise);
  // a section's text runs to the newline before the next marker line.
  const headers = [...stdout.matchAll(new RegExp(`(?:^|\\n)${marker}([^\\n]*)\\n`, "g"))].map((match) => ({
    header: match[1]!,
    lineStart: match.index + (match[0].startsWith("\n") ? 1 : 0),
    textStart: match.index + match[0].length,
  }));
  if (headers.at(-1)?.header !== "end") return undefined;
  const sections = new Map<string, string>();
  headers.slice(0, -1).forEach((entry, index) => sections.set(entry.header, stdout.slice(entry.textStart, headers[index + 1]!.lineStart - 1)));
  const results: BatchResult[] = [];
  for (let index = 0; index < count; index++) {
    const outHeader = [...sections.keys()].find((key) => key.startsWith(`${index} out `));
    const stderr = sections.get(`${index} err`);
    const status = Number(outHeader?.slice(`${index} out `.length));
    if (outHeader === undefined || stderr === undefined || !Number.isInteger(status)) return undefined;
    const cutOff = (status === 124 || status === 137) && stderr.includes(TIMEOUT_WORDS);
    results.push({
      exitCode: status,
      stdout: sections.get(outHeader)!,
      stderr: cutOff ? stderr.replace(/^timeout: sending signal .*\n?/gm, "") : stderr,
      timedOut: cutOff,
    });
  }
  return results;
}
