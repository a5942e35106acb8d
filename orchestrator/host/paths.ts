/**
 * Where boma-it keeps things: the project root (profiles, overrides, stacks), the runs dir and
 * the image cache. One place, so that tests can point each of them elsewhere.
 */
import { existsSync } from "node:fs";
import { stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The root of this project (the folder holding package.json). */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The name prefix of every libvirt object and file a run creates (ADR-025 invariant 4). */
export const NAME_PREFIX = "boma-it-";

/** The runs dir: `--runs-dir`, else `$BOMA_IT_RUNS_DIR`, else `~/integration-runs`. */
export function runsDir(option: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string {
  return resolve(cwd, option ?? env.BOMA_IT_RUNS_DIR ?? join(homedir(), "integration-runs"));
}

/** Local state: Pulumi file backend, direct-engine ledgers, locks (`$BOMA_IT_STACKS_DIR` for tests). */
export function stacksDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.BOMA_IT_STACKS_DIR ?? join(PROJECT_ROOT, "stacks"));
}

/** The golden image cache, readable by libvirt's QEMU user (`$BOMA_IT_IMAGE_DIR`). */
export function imageDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.BOMA_IT_IMAGE_DIR ?? "/var/cache/boma-it/images");
}

/**
 * The cache of issued wildcard certificates (private keys: kept 0700): `$BOMA_IT_CERT_CACHE`,
 * else `$XDG_CACHE_HOME/boma-it/certs`, else `~/.cache/boma-it/certs`.
 */
export function certCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.BOMA_IT_CERT_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "boma-it", "certs"));
}

/**
 * Saved first boots (host/warm-states.ts), private to the user: `$BOMA_IT_STATE_CACHE`, else
 * `$XDG_CACHE_HOME/boma-it/states`, else `~/.cache/boma-it/states`.
 */
export function warmStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.BOMA_IT_STATE_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "boma-it", "states"));
}

/**
 * The machine's run lock (see host/lock.ts): `$BOMA_IT_RUN_LOCK`, else `/run/lock/boma-it.lock`
 * (a tmpfs every user can write, cleared at boot), else one in the temp folder.
 */
export function runLockPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BOMA_IT_RUN_LOCK) return resolve(env.BOMA_IT_RUN_LOCK);
  return existsSync("/run/lock") ? "/run/lock/boma-it.lock" : join(tmpdir(), "boma-it.lock");
}

/** Where to put files that may hold a secret for a moment: /dev/shm where there is one. */
export async function privateTempBase(): Promise<string> {
  const shm = await stat("/dev/shm").then(
    (stats) => stats.isDirectory(),
    () => false,
  );
  return shm ? "/dev/shm" : tmpdir();
}
