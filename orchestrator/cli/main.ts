#!/usr/bin/env node
/**
 * The `boma-it` command line: parses the command, runs it, prints its result (text, or one JSON
 * document with --json) and maps every failure to the contract's exit codes in one place.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { Runner } from "../../infra/runner.ts";
import type { CommandDefinition, CommandOutcome } from "./command.ts";
import { COMMON_OPTIONS, ENGINES, ACCELS, oneOf, parseCommandArgs } from "./options.ts";
import { COMMANDS } from "./commands/index.ts";
import { BadInputError, BomaError, causesOf, ExitCode, exitCodeOf, InterruptedError } from "../errors.ts";
import { Log } from "../log.ts";
import { closest } from "../did-you-mean.ts";
import { Redactor } from "../ansible/secrets.ts";
import { PROJECT_ROOT, runsDir } from "../host/paths.ts";

/** Streams and environment the CLI works with (replaced in tests). */
export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  /** Aborted on the first Ctrl-C/SIGTERM. */
  signal: AbortSignal;
}

const PROGRAM = "boma-it";

/** The top-level help. */
export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return `${PROGRAM}: prove an infrastructure change survives a real reboot, in a throwaway VM.

Usage: ${PROGRAM} <command> [options]     (npm run boma-it -- <command> ...)

Commands:
${COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`).join("\n")}

Common options (before or after the command):
  --json                one JSON document on stdout; logs stay on stderr
  -q, --quiet           only warnings and the result (the run dir's run.log keeps every line)
  --runs-dir DIR        where runs are written (default ~/integration-runs, env BOMA_IT_RUNS_DIR)
  --engine auto|pulumi|direct   who creates and destroys the stack (auto: pulumi if its CLI is found)
  --accel auto|kvm|tcg  hardware virtualisation or software emulation (auto detects)
  -h, --help            help for a command: ${PROGRAM} <command> --help
  --version             the version

Exit codes: 0 pass; 1 the system under test failed; 2 bad input; 3 refused by preflight;
4 harness or infrastructure error; 130 interrupted.`;
}

/** The help of one command: its own options are described in its details, listed only when they are not. */
export function commandHelp(command: CommandDefinition): string {
  const own = Object.keys(command.options);
  const listed = own.length > 0 && !/^Options:/m.test(command.details) ? `\nOptions: ${own.map((name) => `--${name}`).join(", ")}` : "";
  return `Usage: ${PROGRAM} ${command.usage}

${command.summary[0]!.toUpperCase()}${command.summary.slice(1)}.

${command.details}${listed}
Common options: --json, -q/--quiet, --runs-dir DIR, --engine auto|pulumi|direct, --accel auto|kvm|tcg, --help`;
}

/** This boma-it's version (package.json's). */
export function version(): string {
  return (JSON.parse(readFileSync(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string }).version;
}

/**
 * The directory the user typed the command in: npm's INIT_CWD when npm runs one of this
 * package's scripts (npm runs them in the project root, wherever it was typed), else this
 * process's. A process started elsewhere (a user's own script that changed directory) is taken
 * at its word.
 */
export function userCwd(env: NodeJS.ProcessEnv, cwd: string = process.cwd()): string {
  return env.INIT_CWD && env.npm_package_name === "boma-it" && cwd === PROJECT_ROOT ? env.INIT_CWD : cwd;
}

/** The common options that take a value (the others are flags): they may stand before the command too. */
const COMMON_VALUE_OPTIONS = Object.entries(COMMON_OPTIONS)
  .filter(([, spec]) => spec.type === "string")
  .map(([name]) => `--${name}`);
/** The common flags, long and short, and `--version`. */
const COMMON_FLAGS = [
  "--version",
  "-V",
  ...Object.entries(COMMON_OPTIONS).flatMap(([name, spec]) => (spec.type === "boolean" ? [`--${name}`, ...("short" in spec ? [`-${spec.short}`] : [])] : [])),
];

/**
 * The command's name and its arguments: common options before the name (`boma-it --json status`)
 * move behind it, where the command's parser reads them as if written there.
 */
export function splitCommand(argv: readonly string[]): { name: string | undefined; rest: string[] } {
  const leading: string[] = [];
  let index = 0;
  while (index < argv.length) {
    const arg = argv[index]!;
    const key = arg.startsWith("--") && arg.includes("=") ? arg.slice(0, arg.indexOf("=")) : arg;
    if (COMMON_FLAGS.includes(arg)) {
      leading.push(arg);
      index += 1;
    } else if (COMMON_VALUE_OPTIONS.includes(key)) {
      const taken = key === arg ? 2 : 1;
      leading.push(...argv.slice(index, index + taken));
      index += taken;
    } else break;
  }
  return { name: argv[index], rest: [...leading, ...argv.slice(index + 1)] };
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  // What stands after `--` belongs to the command run on the VM (`ssh <run> -- cmd --json`).
  const own = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  const wantsJson = own.includes("--json");
  const quiet = own.includes("-q") || own.includes("--quiet");
  const redactor = new Redactor();
  const log = new Log({ stream: io.stderr, redact: redactor.redact, quiet });
  try {
    const { name, rest } = splitCommand(argv);
    const before = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
    // Asked anywhere (before or after a command), the version is the answer.
    if (before.includes("--version") || before.includes("-V")) {
      io.stdout.write(wantsJson ? `${JSON.stringify({ version: version() })}\n` : `${PROGRAM} ${version()}\n`);
      return ExitCode.pass;
    }
    if (name === undefined || name === "help") {
      const topic = name === "help" ? rest[0] : undefined;
      if (topic !== undefined) {
        const command = findCommand(topic);
        io.stdout.write(`${commandHelp(command)}\n`);
        return ExitCode.pass;
      }
      io.stdout.write(`${mainHelp()}\n`);
      // Help asked for is an answer; no command at all is bad input.
      return name === undefined && !before.includes("--help") && !before.includes("-h") ? ExitCode.badInput : ExitCode.pass;
    }
    const command = findCommand(name);
    const args = parseCommandArgs(command.name, rest, { ...COMMON_OPTIONS, ...command.options });
    if (args.values.help) {
      io.stdout.write(`${commandHelp(command)}\n`);
      return ExitCode.pass;
    }
    oneOf("engine", args.values.engine, ENGINES);
    oneOf("accel", args.values.accel, ACCELS);
    const outcome: CommandOutcome = await command.run({
      args,
      json: Boolean(args.values.json),
      log,
      runner: new Runner({ env: io.env, redact: redactor.redact }),
      env: io.env,
      // npm runs scripts in the project root; INIT_CWD is where the user typed `npm run ...`.
      locations: { profilesDir: join(PROJECT_ROOT, "profiles"), overridesDir: join(PROJECT_ROOT, "overrides"), cwd: userCwd(io.env) },
      runsDir: runsDir(args.values["runs-dir"] as string | undefined, io.env, userCwd(io.env)),
      signal: io.signal,
      redactor,
      stdout: { write: (text) => void io.stdout.write(redactor.redact(text)) },
    });
    io.stdout.write(redactor.redact(wantsJson ? `${JSON.stringify(outcome.json, null, 2)}\n` : outcome.text ? `${outcome.text}\n` : ""));
    return outcome.exitCode;
  } catch (error) {
    const exitCode = exitCodeOf(io.signal.aborted && !(error instanceof BomaError) ? new InterruptedError() : error);
    reportError(error, exitCode, { stdout: redactingStream(io.stdout, redactor), stderr: redactingStream(io.stderr, redactor) }, wantsJson);
    return exitCode;
  }
}

/** A stream whose writes are redacted of the invocation's secrets (error messages and their causes may quote them). */
function redactingStream(stream: Writable, redactor: Redactor): Pick<Writable, "write"> {
  return { write: (chunk: string) => stream.write(redactor.redact(chunk)) } as Pick<Writable, "write">;
}

function reportError(error: unknown, exitCode: number, io: { stdout: Pick<Writable, "write">; stderr: Pick<Writable, "write"> }, json: boolean): void {
  const known = error instanceof BomaError;
  const message = error instanceof Error ? error.message : String(error);
  const trace = !known || error.showTrace;
  const causes = causesOf(error);
  io.stderr.write(`${PROGRAM}: ${message}\n`);
  for (const cause of causes) io.stderr.write(`  caused by: ${cause}\n`);
  if (trace && error instanceof Error && error.stack) {
    io.stderr.write(`${error.stack.split("\n").slice(1).join("\n")}\n`);
    // The innermost cause's own trace says where it really broke.
    let innermost: unknown = error;
    while (innermost instanceof Error && innermost.cause instanceof Error) innermost = innermost.cause;
    if (innermost !== error && innermost instanceof Error && innermost.stack) io.stderr.write(`innermost cause: ${innermost.stack}\n`);
  }
  if (json) {
    const problems = error instanceof BadInputError ? error.problems : undefined;
    const document = { error: { kind: known ? error.name : "Error", message, exitCode, causes, ...(problems ? { problems } : {}) } };
    io.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  }
}

/** A command by name, or bad input with the closest one. */
function findCommand(name: string): CommandDefinition {
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (command) return command;
  const hint = closest(
    name,
    COMMANDS.map((candidate) => candidate.name),
  );
  throw new BadInputError({
    message: `unknown command ${JSON.stringify(name)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}; expected one of ${COMMANDS.map((candidate) => candidate.name).join(", ")} (see \`${PROGRAM} --help\`)`,
  });
}

/** Wires the process to {@link main}: signals, streams, exit code. */
async function runAsProgram(): Promise<void> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts += 1;
    if (interrupts === 1) {
      process.stderr.write(`\n${PROGRAM}: ${signal} received: cleaning up (press Ctrl-C again to stop at once)\n`);
      controller.abort(new InterruptedError(`interrupted by ${signal}`));
      return;
    }
    process.stderr.write(`${PROGRAM}: stopped at once; what is left behind is removed by: npm run reap\n`);
    process.exit(ExitCode.interrupted);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // The terminal went away (a dropped ssh session): clean up as for Ctrl-C.
  process.on("SIGHUP", onSignal);
  // A reader that went away (a closed terminal, `| head`, a test runner that died) must not end
  // the run before its cleanup: what can no longer be printed is still in run.log.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code !== "EPIPE") throw error;
    });
  }
  const code = await main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    signal: controller.signal,
  });
  process.exitCode = controller.signal.aborted && code === ExitCode.pass ? ExitCode.interrupted : code;
}

if (import.meta.main) await runAsProgram();
