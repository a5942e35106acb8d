/**
 * The jail's doors (see master_gate.py): a socket that relays commands on the VM to the run's SSH
 * master and refuses every forward and proxy request, and a teller where the jail tells the
 * harness what only it sees (a secret it decrypted, a connection it refused), opened for as long
 * as a jailed Ansible runs and closed on every exit path. Both sockets sit next to the master's,
 * with `.gate` and `.tell` after its name (the reaper knows whose they are); they end when their
 * harness does.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { HarnessError } from "../errors.ts";
import { ansiblePython } from "./vault.ts";

/** An open gate. */
export interface Gate {
  /** Where the jail's ssh connects (bound into the jail). */
  socket: string;
  /** Where the jail tells the harness (bound into the jail). */
  tellSocket: string;
  /** Stops the gate and removes its sockets (idempotent). */
  close(): Promise<void>;
}

/** The gate socket of a master socket (the run id's, with `.gate`). */
export function gateSocketOf(controlPath: string): string {
  return `${controlPath}.gate`;
}

/** The teller socket of a master socket (the run id's, with `.tell`). */
export function tellSocketOf(controlPath: string): string {
  return `${controlPath}.tell`;
}

/** Where what the jail tells is written down (outside the jail; the secrets file never in the run dir). */
export interface TellFiles {
  /** Confinement records (refusals, notes, connections), JSON lines. */
  records: string;
  /** Secrets the jail decrypted, a JSON list per line. */
  secrets: string;
}

/** How long a gate may take to listen. */
const GATE_READY_MS = 10_000;

/**
 * Opens the gate to the master at `controlPath` and its teller; refused requests and what the jail
 * tells are written to `files`. Throws when it does not listen in time.
 */
export async function openGate(runner: Runner, controlPath: string, files: TellFiles): Promise<Gate> {
  const socket = gateSocketOf(controlPath);
  const tellSocket = tellSocketOf(controlPath);
  const python = await ansiblePython(runner);
  const stop = new AbortController();
  let ready: () => void = () => undefined;
  const listening = new Promise<void>((resolve) => (ready = resolve));
  const running = runner.run(python, [join(import.meta.dirname, "master_gate.py"), controlPath, socket, tellSocket, files.records, files.secrets], {
    check: false,
    signal: stop.signal,
    onLine: (line) => {
      if (line.trim() === "ready") ready();
    },
  });
  const ended = running.then((result) => result);
  const outcome = await Promise.race([
    listening.then(() => "ready" as const),
    ended.then(() => "ended" as const),
    new Promise<"late">((resolve) => setTimeout(() => resolve("late"), GATE_READY_MS).unref()),
  ]);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    stop.abort();
    await ended;
    await rm(socket, { force: true });
    await rm(tellSocket, { force: true });
  };
  if (outcome !== "ready") {
    const result = outcome === "ended" ? await ended : undefined;
    await close();
    throw new HarnessError(
      `the gate to the run's SSH master did not open${result ? `: ${result.tail.split("\n").at(-1) ?? `exit ${result.exitCode}`}` : ` within ${GATE_READY_MS / 1000} s`}`,
    );
  }
  return { socket, tellSocket, close };
}
