/**
 * The pulumi engine: the one module that owns the Pulumi Automation API. A stack per run, in a
 * file backend under `<stacks>/pulumi`, run by a `LocalWorkspace` with the inline program of
 * ./pulumi-program.ts. Everything it needs lives in that folder (no stray temp workspaces):
 *
 *   <stacks>/pulumi/Pulumi.yaml            project settings the workspace writes (name, backend)
 *   <stacks>/pulumi/Pulumi.<stack>.yaml    a stack's settings: the run's outputs as config
 *   <stacks>/pulumi/.pulumi/               the file backend (checkpoints, history, locks, tags)
 *   <stacks>/pulumi/home/                  PULUMI_HOME (plugins, credentials)
 *   <stacks>/pulumi/passphrase             the secrets passphrase, generated once, mode 0600
 *
 * Every CLI call the Automation API makes is recorded through {@link Runner.track}.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { messageOf, ProvisionError, StackNotFoundError, TeardownError } from "../errors.ts";
import { processAlive as isAlive } from "../process.ts";
import type { Plan, StackOutputs } from "../plan.ts";
import { CommandFailedError, type Runner } from "../runner.ts";
import { deleteScript } from "../shell.ts";
import type { Engine, EngineOptions, ResourceEvent, StackSummary } from "./engine.ts";
import { stackProgram } from "./pulumi-program.ts";
import { COMMAND_PLUGIN, PULUMI_MIN_VERSION, PULUMI_PROJECT, PulumiUnavailableError, pulumiInstallHint, pulumiPaths, TAGS } from "./pulumi-setup.ts";

/** Stack config key holding the run's outputs (known before anything is created). */
const OUTPUTS_KEY = `${PULUMI_PROJECT}:outputs`;

type LocalWorkspace = pulumi.automation.LocalWorkspace;
type Stack = pulumi.automation.Stack;
type EngineEvent = pulumi.automation.EngineEvent;
const { LocalWorkspace, PulumiCommand, Stack, ConcurrentUpdateError } = pulumi.automation;

/** Options of a {@link PulumiEngine}. */
export interface PulumiEngineOptions {
  runner: Runner;
  stacksDir: string;
  /** The `pulumi` executable to use (default: found on the runner's PATH). */
  cli?: string;
}

/** Carries out plans as Pulumi stacks through the Automation API. */
export class PulumiEngine implements Engine {
  readonly name = "pulumi" as const;
  readonly #runner: Runner;
  readonly #stacksDir: string;
  readonly #paths: ReturnType<typeof pulumiPaths>;
  readonly #cli: string | undefined;
  #command: Promise<pulumi.automation.PulumiCommand> | undefined;

  constructor(options: PulumiEngineOptions) {
    this.#runner = options.runner;
    this.#stacksDir = options.stacksDir;
    this.#paths = pulumiPaths(options.stacksDir);
    this.#cli = options.cli;
  }

  async up(plan: Plan, options: EngineOptions = {}): Promise<StackOutputs> {
    const workspace = await this.#workspace(stackProgram(plan), { [plan.stack]: { config: { [OUTPUTS_KEY]: JSON.stringify(plan.outputs) } } });
    await this.#requirePlugin(workspace);
    const stack = await this.#cliCall(["stack", "init", plan.stack], () => Stack.create(plan.stack, workspace));
    try {
      await this.#setTags(stack, {
        [TAGS.created]: plan.outputs.createdAt,
        [TAGS.pid]: String(plan.outputs.ownerPid),
        [TAGS.host]: plan.outputs.host,
        [TAGS.state]: "creating",
      });
      options.signal?.throwIfAborted();
      await this.#cliCall(["up", "--stack", plan.stack], (onLine) =>
        stack.up({
          onOutput: lineSplitter((line) => {
            onLine(line);
            options.onOutput?.(line);
          }),
          onEvent: resourceEventForwarder("create", options.onEvent),
          ...(options.signal ? { signal: options.signal } : {}),
        }),
      );
      await this.#setTags(stack, { [TAGS.state]: "up" });
      return plan.outputs;
    } catch (error) {
      const aborted = options.signal?.aborted === true;
      let rolledBack = true;
      try {
        // Objects of a create that failed half-way are not in the state: their deletes run here.
        await this.#deleteUnrecorded(stack, plan);
        await this.#teardown(stack, options);
      } catch {
        rolledBack = false;
      }
      const what = aborted ? "creation was interrupted" : "pulumi up failed";
      throw new ProvisionError(
        `${what}; ${rolledBack ? "everything created so far was deleted again" : `some of it is left behind (stack ${plan.stack} in ${this.#paths.backendUrl}; npm run reap removes it)`}${
          aborted ? "" : `: ${messageOf(error)}`
        }`,
        { cause: error, aborted, rolledBack },
      );
    }
  }

  async destroy(stack: string, options: EngineOptions = {}): Promise<void> {
    const workspace = await this.#workspace(emptyProgram);
    const names = (await this.#listStackNames(workspace)).map(({ name }) => name);
    if (!names.includes(stack)) throw new StackNotFoundError(stack);
    await this.#teardown(await Stack.select(stack, workspace), options);
  }

  async list(): Promise<StackSummary[]> {
    const workspace = await this.#workspace(emptyProgram);
    const summaries: StackSummary[] = [];
    for (const { name } of await this.#listStackNames(workspace)) {
      if (!name.startsWith(`${PULUMI_PROJECT}-`)) continue;
      const outputs = await this.#recordedOutputs(workspace, name);
      if (!outputs) continue;
      const tags = await this.#cliCall(["stack", "tag", "ls", "--stack", name], () => workspace.listTags(name)).catch(() => ({}) as Record<string, string>);
      // Missing tag: the harness died between `stack init` and tagging; nothing was created yet.
      const tagged = tags[TAGS.state];
      const state = tagged === "up" || tagged === "destroying" ? tagged : "creating";
      summaries.push({ stack: name, engine: "pulumi", state, outputs });
    }
    return summaries;
  }

  /** Whether this engine can run here: the CLI's path and version, and the plugin; throws {@link PulumiUnavailableError}. */
  async ensureUsable(): Promise<string> {
    const command = await this.#pulumiCommand();
    await this.#requirePlugin(await this.#workspace(emptyProgram));
    return `${command.command} ${command.version?.version ?? "(version unknown)"}, command plugin ${COMMAND_PLUGIN.version} in ${this.#paths.home}`;
  }

  /** The run outputs a stack was created with (its settings file), or undefined. */
  async #recordedOutputs(workspace: LocalWorkspace, stack: string): Promise<StackOutputs | undefined> {
    try {
      const settings = await workspace.stackSettings(stack);
      const value = settings.config?.[OUTPUTS_KEY];
      return typeof value === "string" ? (JSON.parse(value) as StackOutputs) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Destroys a stack and removes it. A crashed harness leaves two things a plain destroy trips
   * over: the lock of its dead `pulumi` process (cancelled here when that pid is gone) and
   * pending operations (creates that may have half happened: their delete scripts are run, then
   * the operations are cleared from the state). What still escapes is found by reap's prefix sweep.
   */
  async #teardown(stack: Stack, options: EngineOptions): Promise<void> {
    await this.#setTags(stack, { [TAGS.state]: "destroying" }).catch(() => undefined);
    const failures = await this.#clearPendingOperations(stack);
    try {
      await this.#withStaleLockCleared(stack, () =>
        this.#cliCall(["destroy", "--remove", "--stack", stack.name], (onLine) =>
          stack.destroy({
            remove: true,
            onOutput: lineSplitter((line) => {
              onLine(line);
              options.onOutput?.(line);
            }),
            onEvent: resourceEventForwarder("delete", options.onEvent),
          }),
        ),
      );
    } catch (error) {
      failures.push(`pulumi destroy: ${messageOf(error)}`);
    }
    if (failures.length > 0) throw new TeardownError(stack.name, failures);
  }

  /** Runs the delete script of every pending create/delete, then drops the pending operations. */
  async #clearPendingOperations(stack: Stack): Promise<string[]> {
    const state = await this.#cliCall(["stack", "export", "--stack", stack.name], () => stack.exportStack());
    const deployment = state.deployment as { pending_operations?: PendingOperation[] } | undefined;
    const pending = deployment?.pending_operations ?? [];
    if (pending.length === 0) return [];
    const failures: string[] = [];
    for (const operation of pending) {
      const inputs = operation.resource?.inputs;
      if (typeof inputs?.delete !== "string") continue;
      const result = await this.#runner.run("/bin/sh", ["-c", inputs.delete], { env: plainEnvironment(inputs.environment), check: false });
      if (result.failed) failures.push(`${resourceName(operation.resource?.urn)} (pending ${operation.type}): its delete script failed: ${result.tail}`);
    }
    delete (deployment as { pending_operations?: unknown }).pending_operations;
    // Only the import takes the stack's lock: a dead pulumi's lock is cancelled and the import
    // retried, without running the delete scripts a second time.
    await this.#withStaleLockCleared(stack, () => this.#importState(stack.name, state));
    return failures;
  }

  /**
   * `pulumi stack import`, run here rather than through the Automation API: its importStack
   * writes the state (secrets in plain text after `export --show-secrets`) world-readable into
   * the system temp dir and leaves it there when the import fails. Ours is 0600 in the work dir
   * and removed on every path.
   */
  async #importState(stack: string, state: pulumi.automation.Deployment): Promise<void> {
    const file = join(this.#paths.dir, `.import-${stack}.json`);
    await writeFile(file, JSON.stringify(state), { mode: 0o600 });
    try {
      await this.#runner.run((await this.#pulumiCommand()).command, ["stack", "import", "--file", file, "--stack", stack, "--non-interactive"], {
        cwd: this.#paths.dir,
        env: { ...(await this.#environment()), PULUMI_HOME: this.#paths.home, PULUMI_AUTOMATION_API: "true" },
      });
    } finally {
      await rm(file, { force: true });
    }
  }

  /** After a failed up: runs the deletes of plan resources the state does not hold. */
  async #deleteUnrecorded(stack: Stack, plan: Plan): Promise<void> {
    const state = await this.#cliCall(["stack", "export", "--stack", stack.name], () => stack.exportStack());
    const recorded = new Set(((state.deployment as { resources?: { urn: string }[] } | undefined)?.resources ?? []).map(({ urn }) => resourceName(urn)));
    for (const resource of [...plan.resources].reverse()) {
      if (recorded.has(resource.name)) continue;
      const script = deleteScript(resource.delete);
      const env = Object.fromEntries(Object.entries(script.environment).map(([name, { value }]) => [name, value]));
      await this.#runner.run("/bin/sh", ["-c", script.script], { env, check: false });
    }
  }

  /**
   * Runs `operation`; when the stack is locked by a `pulumi` process of this host that is gone,
   * cancels that lock (`pulumi cancel`) and runs it once more. A live holder is never overridden.
   */
  async #withStaleLockCleared<T>(stack: Stack, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      const locked = lockedMessage(error);
      if (locked === undefined) throw error;
      const holder = lockHolder(locked);
      if (!holder || holder.host !== hostname() || isAlive(holder.pid)) {
        throw new Error(
          `stack ${stack.name} is locked by ${holder ? `pulumi (pid ${holder.pid}) on ${holder.host}` : "another pulumi process"}${holder && holder.host === hostname() && isAlive(holder.pid) ? ", which is still running: wait for it" : ""}`,
          { cause: error },
        );
      }
      await this.#cliCall(["cancel", "--yes", "--stack", stack.name], () => stack.cancel());
      return await operation();
    }
  }

  async #setTags(stack: Stack, tags: Record<string, string>): Promise<void> {
    for (const [key, value] of Object.entries(tags)) {
      await this.#cliCall(["stack", "tag", "set", key, value, "--stack", stack.name], () => stack.workspace.setTag(stack.name, key, value));
    }
  }

  async #listStackNames(workspace: LocalWorkspace): Promise<{ name: string }[]> {
    return await this.#cliCall(["stack", "ls", "--json"], () => workspace.listStacks());
  }

  /** Fails with the install command when the command plugin is not in PULUMI_HOME (never downloads). */
  async #requirePlugin(workspace: LocalWorkspace): Promise<void> {
    const plugins = await this.#cliCall(["plugin", "ls", "--json"], () => workspace.listPlugins());
    const found = plugins.some(
      (plugin) => plugin.kind === COMMAND_PLUGIN.kind && plugin.name === COMMAND_PLUGIN.name && plugin.version === COMMAND_PLUGIN.version,
    );
    if (!found) {
      throw new PulumiUnavailableError(
        `the pulumi engine needs the ${COMMAND_PLUGIN.name} plugin ${COMMAND_PLUGIN.version} in ${this.#paths.home} (PULUMI_HOME), and it is not there`,
        pulumiInstallHint(this.#stacksDir),
      );
    }
  }

  /** A workspace on the fixed folder, with the inline program and, for a new stack, its settings. */
  async #workspace(program: pulumi.automation.PulumiFn, stackSettings?: Record<string, pulumi.automation.StackSettings>): Promise<LocalWorkspace> {
    await mkdir(this.#paths.home, { recursive: true, mode: 0o700 });
    return await LocalWorkspace.create({
      program,
      workDir: this.#paths.dir,
      pulumiHome: this.#paths.home,
      pulumiCommand: await this.#pulumiCommand(),
      secretsProvider: "passphrase",
      projectSettings: { name: PULUMI_PROJECT, runtime: "nodejs", backend: { url: this.#paths.backendUrl } },
      ...(stackSettings ? { stackSettings } : {}),
      envVars: await this.#environment(),
    });
  }

  /** What every CLI call gets besides PULUMI_HOME: the backend, the passphrase, no update check. */
  async #environment(): Promise<Record<string, string>> {
    return {
      PULUMI_BACKEND_URL: this.#paths.backendUrl,
      PULUMI_CONFIG_PASSPHRASE_FILE: await this.#passphraseFile(),
      PULUMI_SKIP_UPDATE_CHECK: "true",
    };
  }

  /** The CLI, its version checked once per engine. */
  #pulumiCommand(): Promise<pulumi.automation.PulumiCommand> {
    this.#command ??= (async () => {
      const cli = this.#cli ?? (await this.#runner.which("pulumi"));
      if (!cli) throw new PulumiUnavailableError("no pulumi CLI on PATH", pulumiInstallHint(this.#stacksDir));
      // PulumiCommand takes an install root and runs `<root>/bin/pulumi`; a CLI elsewhere
      // (the release archive's `pulumi/pulumi`) is found on PATH, as the runner found it.
      const root = basename(dirname(cli)) === "bin" ? dirname(dirname(cli)) : undefined;
      try {
        const command = await this.#cliCall([cli, "version"], () => PulumiCommand.get(root ? { root } : {}));
        if (command.version && !atLeast(command.version.version, PULUMI_MIN_VERSION)) {
          throw new Error(`it is version ${command.version.version}; boma-it needs ${PULUMI_MIN_VERSION} or newer (stack tags on file backends)`);
        }
        return command;
      } catch (error) {
        throw new PulumiUnavailableError(`the pulumi CLI at ${cli} cannot be used: ${messageOf(error)}`, pulumiInstallHint(this.#stacksDir));
      }
    })();
    return this.#command;
  }

  /** The passphrase file, made once with a random passphrase, readable by its owner only. */
  async #passphraseFile(): Promise<string> {
    await mkdir(this.#paths.dir, { recursive: true, mode: 0o700 });
    try {
      await writeFile(this.#paths.passphraseFile, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600, flag: "wx" });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      await readFile(this.#paths.passphraseFile);
    }
    return this.#paths.passphraseFile;
  }

  /** Runs one Automation API call, recorded as the CLI command it stands for. */
  #cliCall<T>(argv: readonly string[], operation: (onLine: (line: string) => void) => Promise<T>): Promise<T> {
    return this.#runner.track(argv[0] === "pulumi" || argv[0]?.includes("/") ? argv : ["pulumi", ...argv], operation);
  }
}

interface PendingOperation {
  type: string;
  resource?: { urn?: string; inputs?: { delete?: unknown; environment?: unknown } };
}

/** The program used where none is needed (destroy and listing run no program). */
async function emptyProgram(): Promise<Record<string, never>> {
  return {};
}

/** A resource's logical name from its URN (`urn:pulumi:stack::project::type::name`). */
function resourceName(urn: string | undefined): string {
  return urn?.split("::").at(-1) ?? "?";
}

/** The string-valued entries of an exported `environment` input (secrets come decrypted). */
function plainEnvironment(environment: unknown): Record<string, string> {
  if (typeof environment !== "object" || environment === null) return {};
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(environment)) {
    if (typeof value === "string") result[name] = value;
    // An exported secret: {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", plaintext: "\"...\""}
    else if (typeof value === "object" && value !== null && typeof (value as { plaintext?: unknown }).plaintext === "string") {
      try {
        result[name] = JSON.parse((value as { plaintext: string }).plaintext) as string;
      } catch {
        result[name] = (value as { plaintext: string }).plaintext;
      }
    }
  }
  return result;
}

/** Whether version `actual` (x.y.z[-pre]) is at least `minimum`. */
export function atLeast(actual: string, minimum: string): boolean {
  const parse = (version: string) => version.replace(/^v/, "").split(/[.-]/).slice(0, 3).map(Number);
  const [a, m] = [parse(actual), parse(minimum)];
  for (let index = 0; index < 3; index++) {
    if ((a[index] ?? 0) !== (m[index] ?? 0)) return (a[index] ?? 0) > (m[index] ?? 0);
  }
  return true;
}

/** The CLI's "stack is locked" text, from the Automation API's error or from our runner's. */
function lockedMessage(error: unknown): string | undefined {
  if (error instanceof ConcurrentUpdateError) return error.message;
  if (error instanceof CommandFailedError && error.result.stderr.includes("the stack is currently locked by")) return error.result.stderr;
  return undefined;
}

/** Who holds a file-backend lock, from the CLI's "currently locked" message. */
export function lockHolder(message: string): { user: string; host: string; pid: number } | undefined {
  const match = /created by ([^@\s]+)@(\S+) \(pid (\d+)\)/.exec(message);
  return match ? { user: match[1]!, host: match[2]!, pid: Number(match[3]) } : undefined;
}

/** Maps the engine's resource events onto ours (the `local.Command` resources only), timing each. */
export function resourceEventForwarder(action: ResourceEvent["action"], onEvent: ((event: ResourceEvent) => void) | undefined): (event: EngineEvent) => void {
  const started = new Map<string, number>();
  return (event) => {
    if (!onEvent) return;
    const pre = event.resourcePreEvent?.metadata;
    const done = event.resOutputsEvent?.metadata;
    const failed = event.resOpFailedEvent?.metadata;
    const metadata = pre ?? done ?? failed;
    if (!metadata || metadata.type !== "command:local:Command") return;
    const resource = resourceName(metadata.urn);
    if (pre) {
      started.set(resource, performance.now());
      onEvent({ resource, action, state: "start" });
      return;
    }
    const since = started.get(resource);
    const seconds = since === undefined ? undefined : Math.round((performance.now() - since) / 100) / 10;
    onEvent({ resource, action, state: done ? "done" : "failed", ...(seconds === undefined ? {} : { seconds }) });
  };
}

/** Turns chunks of output into whole lines. */
function lineSplitter(onLine: (line: string) => void): (chunk: string) => void {
  let rest = "";
  return (chunk) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) if (line.trim() !== "") onLine(line);
  };
}
