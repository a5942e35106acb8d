/**
 * Secrets of a run (ADR-025 invariant 6): the overlay's `secretVars`, every value of its vault,
 * and every value the infrastructure repo keeps vaulted for the impersonated host (vault-encrypted
 * files and inline `!vault` strings), learnt before anything runs. They reach the VM through
 * Ansible and nowhere else: kept out of the run dir's files, redacted from every sink in every
 * form a sink shows them (raw, JSON-escaped, Python-quoted, each line of a multi-line value), and
 * a final scrub replaces any that still slipped into a file of the run dir (an Ansible log, a
 * journal, a console log).
 */
import { chmod, lstat, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { hostVaultFiles, readVaultedValues, vaultPasswords } from "./vault.ts";
import { BadInputError, HarnessError, RefusedError } from "../errors.ts";
import { profileForHost, type LoadedProfile } from "../profile/load.ts";
import { CHECKOUTS_DIR } from "../profile/revision.ts";

/** What replaces a secret. */
export const REDACTED = "[redacted]";

/** Values shorter than this are not redacted: "true" or "22" would shred every log. */
const MIN_SECRET_LENGTH = 6;

/** Inside a JSON string, as JavaScript writes it (non-ASCII as is). */
function jsonEscaped(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

/** Inside a JSON string, as Python's json.dumps writes it by default (non-ASCII as `\uXXXX`). */
function jsonEscapedAscii(text: string): string {
  return jsonEscaped(text).replace(/[\u0080-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Inside a single-quoted Python string literal (repr). */
function pythonQuoted(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t");
}

/** Percent-encoded: every byte but the unreserved ones (RFC 3986, Python's `quote(safe="")`). */
function percentEncoded(text: string): string {
  return [...Buffer.from(text, "utf8")]
    .map((byte) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`))
    .join("");
}

/** `encodeURIComponent` of `text`; a lone surrogate, which it refuses, is encoded as the replacement character Node writes for it. */
function uriEncoded(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return encodeURIComponent(text.toWellFormed());
  }
}

/**
 * The forms a secret value takes where boma-it's sinks show it: as is; inside a JSON string
 * (Ansible's callbacks and our reports, with and without `\u` escapes for non-ASCII), and inside
 * a JSON string that is itself inside one (`to_json` of a value, a command printing JSON that a
 * callback then quotes); inside a Python string literal (Ansible's error messages quote dicts
 * with repr), bare or in JSON; shell-quoted as a failing task's `cmd` shows it (`'...'` with a
 * quote as `'"'"'` or `'\''`, and `"..."` with `\` before `"`, `\`, `$` and a backquote);
 * URL-encoded (`%XX`, as encodeURIComponent and as Python's quote, and with `+` for a space, as
 * a form); and, for a multi-line value, each of its lines in each of those forms.
 */
export function secretForms(value: string): string[] {
  const pieces = [value, ...(value.includes("\n") ? value.split(/\r?\n/) : [])];
  const forms = new Set<string>();
  for (const piece of pieces) {
    const url = [uriEncoded(piece), percentEncoded(piece)];
    // How a tool writes the value itself...
    const written = [
      piece,
      pythonQuoted(piece),
      piece.replaceAll("'", `'"'"'`),
      piece.replaceAll("'", `'\\''`),
      piece.replace(/(["\\$`])/g, "\\$1"),
      ...url,
      ...url.map((encoded) => encoded.replaceAll("%20", "+")),
    ];
    // ...and how a JSON document around it, or a JSON document quoted in another, shows that.
    for (const form of written) {
      for (const shown of [form, jsonEscaped(form), jsonEscapedAscii(form), jsonEscaped(jsonEscaped(form)), jsonEscapedAscii(jsonEscapedAscii(form))])
        forms.add(shown);
    }
  }
  return [...forms].filter((form) => form.length >= MIN_SECRET_LENGTH);
}

/**
 * A growing set of secrets and the redaction of all their forms. One CLI invocation has one: its
 * log, its runner, what it prints and what it writes all redact through it, so a secret learnt
 * at any point (a DNS token, a certificate key) is hidden everywhere from then on.
 */
export class Redactor {
  readonly #values: string[] = [];
  /** Every form of every value, longest first (so a longer secret is not half-replaced by a shorter one). */
  #forms: string[] = [];

  /** The secret values (not their forms). */
  get values(): readonly string[] {
    return this.#values;
  }

  /** Every form that is redacted, longest first. */
  get forms(): readonly string[] {
    return this.#forms;
  }

  /** Adds secret values; too short ones (see {@link MIN_SECRET_LENGTH}) are ignored. */
  add(...values: readonly string[]): void {
    // The forms are made before anything is kept: a value is either redacted in all its forms or
    // not taken at all, never listed without its forms.
    const fresh = [...new Set(values)].filter((value) => value.length >= MIN_SECRET_LENGTH && !this.#values.includes(value));
    if (fresh.length === 0) return;
    const forms = fresh.flatMap(secretForms);
    this.#values.push(...fresh);
    this.#forms = [...new Set([...this.#forms, ...forms])].sort((a, b) => b.length - a.length);
  }

  /** `text` with every form of every secret replaced by {@link REDACTED}. */
  readonly redact = (text: string): string => replaceForms(text, this.#forms);
}

/** `text` with each of `forms` (longest first) replaced by {@link REDACTED}. */
function replaceForms(text: string, forms: readonly string[]): string {
  let result = text;
  for (const form of forms) if (result.includes(form)) result = result.split(form).join(REDACTED);
  return result;
}

/** The secrets of a run and how to hide them. */
export interface RunSecrets {
  /** The secret values, longest first. */
  readonly values: readonly string[];
  /** The overlay's vault file, given to Ansible as extra vars (it decrypts it itself). */
  vaultFile: string | undefined;
  /** The overlay vars that are secret, by name (passed to Ansible outside the run dir). */
  secretVars: Record<string, unknown>;
  redact(text: string): string;
  /** Adds a secret learnt during the run (a DNS token read from the repo's vault); redacted from then on. */
  add(value: string): void;
  /** The redaction every sink shares. */
  readonly redactor: Redactor;
}

/**
 * Collects a profile's secrets into `redactor`: the overlay's secretVars, its vault, and every
 * vaulted value of the repo's inventory vars for the host (and, best effort, the repo's other
 * vaulted files), all decrypted once with Ansible's own loader and password settings. A vault
 * Ansible cannot decrypt for the host is refused (exit 3, how to give it the password); one it
 * cannot read is bad input (exit 2, naming the file and never its content).
 */
export async function loadSecrets(profile: LoadedProfile, runner: Runner, redactor: Redactor = new Redactor()): Promise<RunSecrets> {
  const { secretVars, vaultFile } = overlaySecrets(profile);
  redactor.add(...leaves(secretVars));
  // The vault passwords themselves: every jailed Ansible of the run is given them.
  const vaultRepoDir = profile.vaultRepoDir ?? profile.repoDir;
  redactor.add(...(await vaultPasswords(runner, vaultRepoDir)).passwords.map(({ password }) => password));
  const repo = await hostVaultFiles(profile);
  const required = [...(vaultFile ? [vaultFile] : []), ...repo.host];
  const read = await readVaultedValues([...required, ...repo.elsewhere], { runner, cwd: profile.repoDir, vaultRepoDir });
  if (read.passwordProblem && required.length > 0) {
    throw new RefusedError(
      `cannot decrypt ${describeVaults(vaultFile, repo.host)}: ${read.passwordProblem}`,
      "give Ansible the vault password as usual: ANSIBLE_VAULT_PASSWORD_FILE=/path/to/file (a file, or an executable that prints it), or vault_password_file in the repo's ansible.cfg",
    );
  }
  for (const file of required) {
    const outcome = read.files.get(file);
    if (!outcome) continue;
    if ("values" in outcome) {
      redactor.add(...outcome.values);
      continue;
    }
    const what = file === vaultFile ? `the overlay's vault ${file}` : `${file} (vaulted vars of ${profile.document.host} in the infrastructure repo)`;
    if (/no vault secrets|Decryption failed|vault password/i.test(outcome.error)) {
      throw new RefusedError(
        `cannot decrypt ${what}: ${outcome.error}`,
        "give Ansible the vault password as usual: ANSIBLE_VAULT_PASSWORD_FILE=/path/to/file (a file, or an executable that prints it)",
      );
    }
    throw new BadInputError({ file, message: `Ansible cannot read this vaulted file (expected YAML it can load, found: ${outcome.error})` });
  }
  // The repo's other vaulted files (roles' vars, other hosts' vars): whatever decrypts is secret too.
  for (const file of repo.elsewhere) {
    const outcome = read.files.get(file);
    if (outcome && "values" in outcome) redactor.add(...outcome.values);
  }
  return secretsOf([], vaultFile, secretVars, redactor);
}

/**
 * Every host's secrets of a profile into `redactor` (see {@link loadSecrets}): its host's, and
 * with several hosts each other's too (their overlays, their vaulted inventory vars). Returns the
 * first host's, which the run carries.
 */
export async function loadProfileSecrets(profile: LoadedProfile, runner: Runner, redactor: Redactor = new Redactor()): Promise<RunSecrets> {
  const secrets = await loadSecrets(profile, runner, redactor);
  for (const host of profile.topology?.slice(1) ?? []) await loadSecrets(profileForHost(profile, host.name), runner, redactor);
  return secrets;
}

/** A profile's overlay's secrets: its secret vars by name, and its vault file (absolute), if any. */
export function overlaySecrets(profile: Pick<LoadedProfile, "overlay">): { secretVars: Record<string, unknown>; vaultFile: string | undefined } {
  const overlay = profile.overlay.document;
  return {
    secretVars: Object.fromEntries(overlay.secretVars.map((name) => [name, overlay.vars[name]])),
    vaultFile: overlay.vault ? resolve(dirname(profile.overlay.file!), overlay.vault) : undefined,
  };
}

/** A profile's overlay's vars that are not secret (the stubs, written to the run dir as extra vars). */
export function overlayPlainVars(profile: Pick<LoadedProfile, "overlay">, secretVars: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(profile.overlay.document.vars).filter(([name]) => !(name in secretVars)));
}

function describeVaults(vaultFile: string | undefined, repoFiles: readonly string[]): string {
  const parts = [
    ...(vaultFile ? [`the overlay's vault ${vaultFile}`] : []),
    ...(repoFiles.length > 0 ? [`the repo's vaulted vars (${repoFiles.join(", ")})`] : []),
  ];
  return parts.join(" and ");
}

/** The secrets of a set of values (tests, and the runs that learn theirs through {@link loadSecrets}). */
export function secretsOf(
  values: readonly string[],
  vaultFile?: string,
  secretVars: Record<string, unknown> = {},
  redactor: Redactor = new Redactor(),
): RunSecrets {
  redactor.add(...values);
  return {
    get values() {
      return [...redactor.values].sort((a, b) => b.length - a.length);
    },
    vaultFile,
    secretVars,
    redact: redactor.redact,
    add: (value) => redactor.add(value),
    redactor,
  };
}

/** Every string (and number) a value holds, however deep: what of a secret var is redacted. */
export function leaves(value: unknown): string[] {
  if (value === null || value === undefined) return [];
  if (typeof value === "string") return [value];
  if (typeof value === "number" || typeof value === "bigint") return [String(value)];
  if (Array.isArray(value)) return value.flatMap(leaves);
  if (typeof value === "object") return Object.values(value as Record<string, unknown>).flatMap(leaves);
  return [];
}

/** What a scrub did: the files it changed, and those it could not read or rewrite (a secret may remain there). */
export interface ScrubResult {
  changed: string[];
  failed: { path: string; reason: string }[];
}

/** The harness fault of a scrub that could not read or rewrite some files of the run dir. */
export function unscrubbed(failed: ScrubResult["failed"]): HarnessError {
  const named = failed
    .slice(0, 5)
    .map(({ path, reason }) => `${path} (${reason})`)
    .join(", ");
  return new HarnessError(
    `a secret may remain in the run dir: boma-it could not scrub ${named}${failed.length > 5 ? ` and ${failed.length - 5} more` : ""}; look at them, or remove them, before sharing the run dir`,
  );
}

/** Files up to this size are scrubbed in one read; larger ones a piece at a time. */
const WHOLE_FILE_BYTES = 64 * 1024 * 1024;

/** How much of a large file is read at a time. */
const PIECE_BYTES = 16 * 1024 * 1024;

/**
 * Rewrites every file under `dir` that holds a secret in any of its forms. A file it cannot read
 * or rewrite, or a folder it cannot list, does not stop it: each is named in `failed`, and the
 * caller ends the run as a harness fault (a secret may remain there), never silently. Large files
 * are scrubbed a piece at a time, whatever their size.
 */
export async function scrubDir(dir: string, secrets: Pick<RunSecrets, "redactor">): Promise<ScrubResult> {
  const result: ScrubResult = { changed: [], failed: [] };
  if (secrets.redactor.forms.length === 0) return result;
  // Files are read as bytes (latin1): a console log need not be UTF-8; the forms are matched as their UTF-8 bytes.
  const forms = secrets.redactor.forms.map((form) => Buffer.from(form, "utf8").toString("latin1")).sort((a, b) => b.length - a.length);
  const failed = (path: string, error: unknown) => result.failed.push({ path, reason: (error as NodeJS.ErrnoException).code ?? (error as Error).message });
  const walk = async (folder: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(folder, { withFileTypes: true });
    } catch (error) {
      failed(folder, error);
      return;
    }
    for (const entry of entries) {
      const path = join(folder, entry.name);
      // Links lead out of the run dir (the real repo's group_vars): never followed, never written.
      // A `refs` folder holds the repo as a commit had it, which later verbs on a kept VM apply
      // again: a copy of what git holds (as private as the run dir), never rewritten.
      if (entry.isDirectory()) {
        if (entry.name !== CHECKOUTS_DIR) await walk(path);
      } else if (entry.isFile()) {
        try {
          if (await scrubFile(path, forms)) result.changed.push(path);
        } catch (error) {
          failed(path, error);
        }
      }
    }
  };
  await walk(dir);
  return result;
}

/** Scrubs one file; whether it changed. A read-only file (a checked-out revision's) is scrubbed too, and stays read-only. */
async function scrubFile(path: string, forms: readonly string[]): Promise<boolean> {
  const { size, mode } = await lstat(path);
  const writable = async (write: () => Promise<void>) => {
    if ((mode & 0o200) === 0) await chmod(path, (mode & 0o777) | 0o200);
    try {
      await write();
    } finally {
      if ((mode & 0o200) === 0) await chmod(path, mode & 0o777);
    }
  };
  if (size <= WHOLE_FILE_BYTES) {
    const text = await readFile(path, "latin1");
    const scrubbed = replaceForms(text, forms);
    if (scrubbed === text) return false;
    await writable(() => writeFile(path, scrubbed, "latin1"));
    return true;
  }
  // A piece at a time into a copy beside it: what could be the start of a form at a piece's end
  // waits for the next piece.
  const longest = Math.max(...forms.map((form) => form.length));
  const copy = `${path}.scrub-${process.pid}`;
  const input = await open(path, "r");
  const output = await open(copy, "w", (mode & 0o777) | 0o600);
  let changed = false;
  try {
    let carry = "";
    const buffer = Buffer.alloc(PIECE_BYTES);
    for (;;) {
      const { bytesRead } = await input.read(buffer, 0, PIECE_BYTES, null);
      const text = carry + buffer.toString("latin1", 0, bytesRead);
      let cut = bytesRead === 0 ? text.length : Math.max(0, text.length - (longest - 1));
      for (const form of forms) {
        const at = text.lastIndexOf(form, cut - 1);
        if (at >= 0 && at + form.length > cut) cut = Math.min(cut, at);
      }
      const done = text.slice(0, cut);
      const scrubbed = replaceForms(done, forms);
      if (scrubbed !== done) changed = true;
      await output.write(Buffer.from(scrubbed, "latin1"));
      carry = text.slice(cut);
      if (bytesRead === 0) break;
    }
  } finally {
    await input.close();
    await output.close();
  }
  if (!changed) {
    await rm(copy, { force: true });
    return false;
  }
  await writable(() => rename(copy, path));
  return true;
}

/**
 * Makes a run dir private: the dir and every folder in it 0700, every file 0600 (what the
 * harness, Ansible and virtlogd wrote alike; a file kept read-only, a checked-out revision's,
 * stays read-only). Links are left alone: they point out of the run dir.
 */
export async function makePrivate(dir: string): Promise<void> {
  await chmod(dir, 0o700).catch(() => undefined);
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await makePrivate(path);
    else if (entry.isFile()) {
      // The owner keeps what it had: read, write where it was writable, and execute where anyone
      // could (a checkout's inventory or vault script must still run for a later verb).
      const mode = (await lstat(path).catch(() => undefined))?.mode ?? 0o600;
      await chmod(path, 0o400 | (mode & 0o200) | ((mode & 0o111) === 0 ? 0 : 0o100)).catch(() => undefined);
    }
  }
}
