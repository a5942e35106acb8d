/**
 * The direct engine: carries out a plan in order with the one command runner, writing a ledger
 * (`stacks/direct/<stack>.json`) after every step so that a crash at any point still leaves a
 * record of what exists and how to delete it. Deletes run in reverse.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { messageOf, ProvisionError, StackNotFoundError, TeardownError } from "../errors.ts";
import type { Plan, PlanCommand, PlanResource, StackOutputs } from "../plan.ts";
import { CommandFailedError, describeFailure, type Runner } from "../runner.ts";
import { ABSENT_PATTERN } from "../shell.ts";
import type { Engine, EngineOptions, StackSummary } from "./engine.ts";

/** Output of libvirt (and rm) that means the object to delete is already gone. */
const ABSENT = new RegExp(ABSENT_PATTERN, "i");

/** A delete command as a ledger keeps it (stdin never recorded). */
type LedgerCommand = Pick<PlanCommand, "argv" | "mayFail" | "ignoreAbsent">;

interface LedgerResource {
  name: string;
  kind: PlanResource["kind"];
  id: string;
  /** `creating`: its create started and may be half done; `created`: all its commands ran. */
  state: "creating" | "created";
  delete: LedgerCommand[];
}

/** The file a direct-engine stack lives in. */
export interface Ledger {
  version: 1;
  stack: string;
  engine: "direct";
  state: "creating" | "up" | "destroying";
  outputs: StackOutputs;
  resources: LedgerResource[];
}

/** Carries out plans directly, with a ledger per stack under `<stacksDir>/direct/`. */
export class DirectEngine implements Engine {
  readonly name = "direct" as const;
  readonly #runner: Runner;
  readonly #dir: string;

  constructor(runner: Runner, stacksDir: string) {
    this.#runner = runner;
    this.#dir = join(stacksDir, "direct");
  }

  /** Path of a stack's ledger. */
  ledgerPath(stack: string): string {
    return join(this.#dir, `${stack}.json`);
  }

  async up(plan: Plan, options: EngineOptions = {}): Promise<StackOutputs> {
    const ledger: Ledger = { version: 1, stack: plan.stack, engine: "direct", state: "creating", outputs: plan.outputs, resources: [] };
    await this.#write(ledger);
    let current: string | undefined;
    try {
      for (const resource of plan.resources) {
        options.signal?.throwIfAborted();
        current = resource.name;
        ledger.resources.push({
          name: resource.name,
          kind: resource.kind,
          id: resource.id,
          state: "creating",
          delete: resource.delete.map(({ argv, mayFail, ignoreAbsent }) => ({ argv, mayFail, ignoreAbsent })),
        });
        // Recorded before the first command runs: a crash half-way still names the resource.
        await this.#write(ledger);
        const started = performance.now();
        options.onEvent?.({ resource: resource.name, action: "create", state: "start" });
        for (const [index, command] of resource.create.entries()) {
          const result = await this.#runner.run(command.argv[0]!, command.argv.slice(1), {
            input: command.stdin,
            ...(options.signal ? { signal: options.signal } : {}),
            check: false,
          });
          if (!result.failed) continue;
          // A first command that failed made nothing: an object of that name that exists (another
          // run's, "already exists") is not ours to delete on the way back.
          if (index === 0) ledger.resources.pop();
          throw new CommandFailedError(result);
        }
        ledger.resources.at(-1)!.state = "created";
        await this.#write(ledger);
        current = undefined;
        options.onEvent?.({ resource: resource.name, action: "create", state: "done", seconds: seconds(started) });
      }
      ledger.state = "up";
      await this.#write(ledger);
      return plan.outputs;
    } catch (error) {
      const aborted = options.signal?.aborted === true;
      if (current) options.onEvent?.({ resource: current, action: "create", state: "failed", detail: messageOf(error) });
      let rolledBack = true;
      try {
        await this.#destroyLedger(ledger, { onEvent: options.onEvent });
      } catch {
        rolledBack = false;
      }
      const what = aborted ? "creation was interrupted" : `creating ${current ?? "the stack"} failed`;
      throw new ProvisionError(
        `${what}; ${rolledBack ? "everything created so far was deleted again" : `some of it is left behind (ledger ${this.ledgerPath(plan.stack)}; npm run reap removes it)`}${
          aborted ? "" : `: ${messageOf(error)}`
        }`,
        { cause: error, aborted, rolledBack },
      );
    }
  }

  async destroy(stack: string, options: EngineOptions = {}): Promise<void> {
    const ledger = await this.read(stack);
    if (!ledger) throw new StackNotFoundError(stack);
    await this.#destroyLedger(ledger, options);
  }

  async list(): Promise<StackSummary[]> {
    let entries: string[];
    try {
      entries = await readdir(this.#dir);
    } catch {
      return [];
    }
    const summaries: StackSummary[] = [];
    for (const entry of entries.sort()) {
      if (!entry.endsWith(".json")) continue;
      const ledger = await this.read(entry.slice(0, -".json".length));
      if (ledger) summaries.push({ stack: ledger.stack, engine: "direct", state: ledger.state, outputs: ledger.outputs });
    }
    return summaries;
  }

  /** Reads a stack's ledger, or undefined when there is none. */
  async read(stack: string): Promise<Ledger | undefined> {
    try {
      return JSON.parse(await readFile(this.ledgerPath(stack), "utf8")) as Ledger;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  }

  /** Deletes a ledger's resources in reverse, each in its own try; forgets the stack when all went. */
  async #destroyLedger(ledger: Ledger, options: Pick<EngineOptions, "onEvent">): Promise<void> {
    ledger.state = "destroying";
    await this.#write(ledger);
    const failures: string[] = [];
    for (const resource of [...ledger.resources].reverse()) {
      const started = performance.now();
      options.onEvent?.({ resource: resource.name, action: "delete", state: "start" });
      const problem = await this.#deleteResource(resource);
      if (problem) {
        failures.push(`${resource.kind} ${resource.id}: ${problem}`);
        options.onEvent?.({ resource: resource.name, action: "delete", state: "failed", detail: problem });
        continue;
      }
      ledger.resources = ledger.resources.filter((candidate) => candidate !== resource);
      await this.#write(ledger);
      options.onEvent?.({ resource: resource.name, action: "delete", state: "done", seconds: seconds(started) });
    }
    if (failures.length > 0) throw new TeardownError(ledger.stack, failures);
    await rm(this.ledgerPath(ledger.stack), { force: true });
  }

  /** Runs a resource's delete commands; returns what went wrong, or undefined. */
  async #deleteResource(resource: LedgerResource): Promise<string | undefined> {
    for (const command of resource.delete) {
      const result = await this.#runner.run(command.argv[0]!, command.argv.slice(1), { check: false });
      if (!result.failed || command.mayFail) continue;
      if (command.ignoreAbsent && ABSENT.test(`${result.stdout}\n${result.stderr}`)) continue;
      return describeFailure(result);
    }
    return undefined;
  }

  async #write(ledger: Ledger): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const path = this.ledgerPath(ledger.stack);
    const temporary = `${path}.${process.pid}.tmp`;
    await writeFile(temporary, `${JSON.stringify(ledger, null, 2)}\n`, { mode: 0o600 });
    await rename(temporary, path);
  }
}

function seconds(started: number): number {
  return Math.round((performance.now() - started) / 100) / 10;
}
