/**
 * Secrets of a run (ADR-025 invariant 6): the overlay's `secretVars` and every value of its
 * Ansible vault. They reach the VM through Ansible and nowhere else: they are kept out of the
 * run dir's files, redacted from every command record and log line, and a final scrub replaces
 * any that still slipped into a file of the run dir (an Ansible log, a journal, a console log).
 */
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { parse } from "yaml";
import type { Runner } from "../../infra/runner.ts";
import { RefusedError } from "../errors.ts";
import type { LoadedProfile } from "../profile/load.ts";

/** What replaces a secret. */
export const REDACTED = "[redacted]";

/** Values shorter than this are not redacted: "true" or "22" would shred every log. */
const MIN_SECRET_LENGTH = 6;

/** The secrets of a run and how to hide them. */
export interface RunSecrets {
  /** The secret values, longest first. */
  values: string[];
  /** The overlay's vault file, given to Ansible as extra vars (it decrypts it itself). */
  vaultFile: string | undefined;
  /** The overlay vars that are secret, by name (passed to Ansible outside the run dir). */
  secretVars: Record<string, unknown>;
  redact(text: string): string;
  /** Adds a secret learnt during the run (a DNS token read from the repo's vault); redacted from then on. */
  add(value: string): void;
}

/** Collects a profile's secrets; decrypts the overlay's vault with Ansible's own password settings. */
export async function loadSecrets(profile: LoadedProfile, runner: Runner): Promise<RunSecrets> {
  const overlay = profile.overlay.document;
  const secretVars = Object.fromEntries(overlay.secretVars.map((name) => [name, overlay.vars[name]]));
  const values: string[] = leaves(secretVars);
  let vaultFile: string | undefined;
  if (overlay.vault) {
    vaultFile = resolve(dirname(profile.overlay.file!), overlay.vault);
    const view = await runner.run("ansible-vault", ["view", vaultFile], { check: false });
    if (view.failed) {
      throw new RefusedError(
        `cannot decrypt the overlay's vault ${vaultFile}: ${view.stderr.trim().split("\n").at(-1) ?? `exit ${view.exitCode}`}`,
        "give Ansible the vault password as usual: ANSIBLE_VAULT_PASSWORD_FILE=/path/to/file (a file, or an executable that prints it)",
      );
    }
    values.push(...leaves(parse(view.stdout) as unknown));
  }
  return secretsOf(values, vaultFile, secretVars);
}

/** Builds the redaction of a set of secret values. */
export function secretsOf(values: readonly string[], vaultFile?: string, secretVars: Record<string, unknown> = {}): RunSecrets {
  const sorted = [...new Set(values.filter((value) => value.length >= MIN_SECRET_LENGTH))].sort((a, b) => b.length - a.length);
  return {
    values: sorted,
    vaultFile,
    secretVars,
    // Reads `sorted` at each call: runners and logs built on this see secrets added later.
    redact: (text) => sorted.reduce((result, secret) => result.split(secret).join(REDACTED), text),
    add: (value) => {
      if (value.length < MIN_SECRET_LENGTH || sorted.includes(value)) return;
      sorted.push(value);
      sorted.sort((a, b) => b.length - a.length);
    },
  };
}

function leaves(value: unknown): string[] {
  if (value === null || value === undefined) return [];
  if (typeof value === "string") return [value];
  if (typeof value === "number" || typeof value === "bigint") return [String(value)];
  if (Array.isArray(value)) return value.flatMap(leaves);
  if (typeof value === "object") return Object.values(value as Record<string, unknown>).flatMap(leaves);
  return [];
}

/** Rewrites every file under `dir` that holds a secret; returns the files it changed. */
export async function scrubDir(dir: string, secrets: RunSecrets): Promise<string[]> {
  if (secrets.values.length === 0) return [];
  const changed: string[] = [];
  const walk = async (folder: string): Promise<void> => {
    for (const entry of await readdir(folder, { withFileTypes: true }).catch(() => [])) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && (await stat(path)).size < 256 * 1024 * 1024) {
        const text = await readFile(path, "latin1");
        const scrubbed = secretsOf(secrets.values.map((value) => Buffer.from(value, "utf8").toString("latin1"))).redact(text);
        if (scrubbed !== text) {
          await writeFile(path, scrubbed, "latin1");
          changed.push(path);
        }
      }
    }
  };
  await walk(dir);
  return changed;
}
