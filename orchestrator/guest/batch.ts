/**
 * Several commands in the guest through one SSH session: one shell script that runs each command
 * side by side (each with its own stdin, all with one time limit) and prints each one's exit
 * status, stdout and stderr between marker lines. Under TCG every command the
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
  /** Undefined when it was cut off. */
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  /** Its time limit in the guest ran out before it ended. */
  timedOut: boolean;
}

/** The longest batch script sent: one argument of a command line may hold 128 KiB on Linux. */
export const MAX_BATCH_SCRIPT_CHARS = 100_000;

/** A batch's script and how its output is read. */
export interface GuestBatch {
  script: string;
  /** The output read back: one result per command in order, or undefined when the output is not the batch's whole answer. */
  read(stdout: string): BatchResult[] | undefined;
}

/**
 * The script that runs `commands` side by side and stops waiting for those still running after
 * `tryMs` (they are sent SIGTERM, as a command the harness gave up on over SSH would be left).
 * Under TCG every program started costs the guest ~0.1-0.2 s, so the script starts none per
 * command beyond the command's own: each runs through `eval` in a subshell of its own (as `sh -c`
 * would run it, in the same shell), one watchdog keeps the time, one `cat` prints every answer.
 * Each answer begins with a marker line whose text never appears in the script itself (it is
 * printed in two pieces), so the output of a command that shows the script (`ps`) cannot pass
 * for one. The script's own names begin with `__boma_`.
 */
export function guestBatch(commands: readonly BatchCommand[], tryMs: number, nonce: string = randomBytes(8).toString("hex")): GuestBatch {
  const seconds = Math.max(1, Math.ceil(tryMs / 1000));
  const file = (index: number, kind: string) => `"$__boma_d/${index}.${kind}"`;
  const lines = [`__boma_d=$(mktemp -d) || exit 70`, `trap 'rm -rf -- "$__boma_d"' EXIT`];
  commands.forEach((entry, index) => {
    const stdin = entry.input === undefined ? "/dev/null" : file(index, "in");
    if (entry.input !== undefined) lines.push(`printf %s ${quoteArg(Buffer.from(entry.input).toString("base64"))} | base64 -d >${stdin}`);
    lines.push(
      `__boma_c${index}=${quoteArg(entry.command)}`,
      `( ( eval "$__boma_c${index}" ) <${stdin} >${file(index, "out")} 2>${file(index, "err")}; echo $? >${file(index, "rc")} ) & __boma_p${index}=$!`,
    );
  });
  const pids = commands.map((_, index) => `$__boma_p${index}`).join(" ");
  // The watchdog: once the time is up, each command without an exit status is let go of.
  const cutOff = commands.map((_, index) => `[ -e ${file(index, "rc")} ] || kill -TERM $__boma_p${index} 2>/dev/null`).join("; ");
  lines.push(
    `( trap 'kill $__boma_s 2>/dev/null; exit 0' TERM; sleep ${seconds} & __boma_s=$!; wait $__boma_s; ${cutOff} ) >/dev/null 2>&1 </dev/null & __boma_w=$!`,
    `wait ${pids}`,
    `kill -TERM $__boma_w 2>/dev/null; wait $__boma_w`,
  );
  const marker = (rest: string) => `printf '\\n%s%s ${rest}\\n' @@boma-it- ${nonce}`;
  const parts: string[] = [];
  commands.forEach((_, index) => {
    lines.push(
      `__boma_rc=; [ -s ${file(index, "rc")} ] && read __boma_rc <${file(index, "rc")}`,
      `${marker(`${index} out %s`)} "\${__boma_rc:-cut}" >${file(index, "h1")}`,
      `${marker(`${index} err`)} >${file(index, "h2")}`,
    );
    parts.push(file(index, "h1"), file(index, "out"), file(index, "h2"), file(index, "err"));
  });
  lines.push(`${marker("end")} >"$__boma_d/end"`, `cat ${parts.join(" ")} "$__boma_d/end"`);
  return { script: lines.join("\n"), read: (stdout) => readBatch(stdout, `@@boma-it-${nonce} `, commands.length) };
}

/** The results in a batch's output; undefined unless every command's answer and the end are there. */
function readBatch(stdout: string, marker: string, count: number): BatchResult[] | undefined {
  // Every marker line (the marker is hex, letters and dashes: nothing a pattern reads otherwise),
  // each after a newline of the script's; a section's text runs to that newline before the next.
  const headers = [...stdout.matchAll(new RegExp(`\\n${marker}([^\\n]*)\\n`, "g"))].map((match) => ({
    header: match[1]!,
    lineStart: match.index,
    textStart: match.index + match[0].length,
  }));
  if (headers.at(-1)?.header !== "end") return undefined;
  const sections = new Map<string, string>();
  headers.slice(0, -1).forEach((entry, index) => sections.set(entry.header, stdout.slice(entry.textStart, headers[index + 1]!.lineStart)));
  const results: BatchResult[] = [];
  for (let index = 0; index < count; index++) {
    const outHeader = [...sections.keys()].find((key) => key.startsWith(`${index} out `));
    const stderr = sections.get(`${index} err`);
    const status = outHeader?.slice(`${index} out `.length);
    if (outHeader === undefined || stderr === undefined || (status !== "cut" && !/^\d+$/.test(status ?? ""))) return undefined;
    const cut = status === "cut";
    results.push({ exitCode: cut ? undefined : Number(status), stdout: sections.get(outHeader)!, stderr, timedOut: cut });
  }
  return results;
}
