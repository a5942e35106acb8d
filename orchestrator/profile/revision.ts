/**
 * Which revision of the infrastructure repo a scenario applies: the repo as it is on disk
 * (uncommitted changes included; the default), or a git revision, checked out read-only into the
 * run dir from git's objects (`git archive`: the user's checkout, index, stash and worktree list are
 * never touched) and applied from there, playbook, roles, inventory, group_vars/host_vars and the
 * repo's ansible.cfg alike. The profile itself is always read from disk.
 */
import { chmod, mkdir, readdir, realpath, stat } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError } from "../errors.ts";
import type { Log } from "../log.ts";
import { resolveProfile, type LoadedProfile } from "./load.ts";

/** A revision a scenario applies, as the report names it. */
export interface Revision {
  /** The revision asked for (`--ref`, `scenarios.<name>.ref`), or null for the repo on disk. */
  ref: string | null;
  /** Its full commit sha, or "worktree" for the repo on disk. */
  commit: string;
  /** For the worktree: whether it has uncommitted changes (null when the repo is not a git repo). */
  dirty?: boolean | null;
}

/** Where a revision was asked for, for messages that name it. */
export interface RevisionSource {
  file: string;
  path: string;
}

/** A revision resolved to a commit of the repository the repo is in. */
export type ResolvedRevision = Revision & { place: GitPlace };

/** A repo's place in its git repository. */
export interface GitPlace {
  toplevel: string;
  /** The repo's path inside it ("" when it is the top). */
  prefix: string;
}

/**
 * git on the user's repository, read-only: no optional locks (`status` would otherwise refresh
 * .git/index), no fsmonitor program and no hooks the repository's config may name (they would run
 * on the control host, outside any jail).
 */
export const READ_ONLY_GIT = ["--no-optional-locks", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"] as const;

function git(runner: Runner, args: readonly string[], timeoutMs: number) {
  return runner.run("git", [...READ_ONLY_GIT, ...args], { check: false, timeoutMs, env: { GIT_OPTIONAL_LOCKS: "0" } });
}

async function gitPlace(repoDir: string, runner: Runner): Promise<GitPlace | undefined> {
  const top = await git(runner, ["-C", repoDir, "rev-parse", "--show-toplevel"], 30_000);
  if (top.failed) return undefined;
  const toplevel = top.stdout.trim();
  return { toplevel, prefix: relative(toplevel, repoDir) };
}

/** The repo on disk as a revision: "worktree", dirty or not. */
export async function worktreeRevision(repoDir: string, runner: Runner): Promise<Revision> {
  const place = await gitPlace(repoDir, runner);
  if (!place) return { ref: null, commit: "worktree", dirty: null };
  const status = await git(runner, ["-C", place.toplevel, "status", "--porcelain", "--", place.prefix || "."], 60_000);
  return { ref: null, commit: "worktree", dirty: status.failed ? null : status.stdout.trim() !== "" };
}

/** Resolves a revision of the repo to its full commit; bad input (exit 2) naming it and the repo when it does not. */
export async function resolveRevision(repoDir: string, ref: string, runner: Runner, source: RevisionSource): Promise<ResolvedRevision> {
  const place = await gitPlace(repoDir, runner);
  if (!place)
    throw new BadInputError({
      file: source.file,
      path: source.path,
      message: `expected a git revision of the infrastructure repo, but ${repoDir} is not in a git repository (found ref ${JSON.stringify(ref)})`,
    });
  // `--end-of-options` keeps a ref that looks like an option from being one.
  const resolved = await git(runner, ["-C", place.toplevel, "rev-parse", "--verify", "--quiet", "--end-of-options", `${ref}^{commit}`], 30_000);
  if (resolved.failed)
    throw new BadInputError({
      file: source.file,
      path: source.path,
      message: `expected a git revision of ${place.toplevel}, found ${JSON.stringify(ref)}, which names no commit there`,
    });
  return { ref, commit: resolved.stdout.trim(), place };
}

/** The folder of a run dir (or a scenario's) that holds its checkouts of the repo at git revisions. */
export const CHECKOUTS_DIR = "refs";

/**
 * Checks a resolved revision out into `dir` (its own folder in the run dir), read-only, and
 * returns where the infrastructure repo is in it. Nothing of the user's repository changes.
 */
export async function checkoutRevision(revision: ResolvedRevision, dir: string, runner: Runner): Promise<string> {
  const target = join(dir, revision.commit.slice(0, 12));
  const repoInCheckout = join(target, revision.place.prefix);
  if (
    await stat(repoInCheckout).then(
      () => true,
      () => false,
    )
  )
    return repoInCheckout;
  await mkdir(repoInCheckout, { recursive: true, mode: 0o700 });
  const treeish = revision.place.prefix ? `${revision.commit}:${revision.place.prefix}` : revision.commit;
  // pipefail: a failing archive must not pass for an empty checkout.
  await runner.run(
    "bash",
    [
      "-o",
      "pipefail",
      "-c",
      'top="$1" treeish="$2" into="$3"; shift 3; git "$@" -C "$top" archive --format=tar "$treeish" | tar -x -C "$into"',
      "checkout",
      revision.place.toplevel,
      treeish,
      repoInCheckout,
      ...READ_ONLY_GIT,
    ],
    {
      timeoutMs: 10 * 60_000,
      env: { GIT_OPTIONAL_LOCKS: "0" },
    },
  );
  await makeFilesReadOnly(repoInCheckout);
  return repoInCheckout;
}

/** Every file under `path` read-only (its folders stay removable: a run dir is the user's to delete). */
async function makeFilesReadOnly(path: string): Promise<void> {
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await makeFilesReadOnly(child);
    else if (entry.isFile()) await chmod(child, (await stat(child)).mode & 0o555);
  }
}

/**
 * The profile as it applies at a revision: the same document (read from disk), with the repo,
 * inventory and playbook taken from the checkout, and the inventory read there. The verify
 * playbook is the revision's when it has one, else the one on disk: a baseline or an older ref
 * usually predates the verify playbook that came with the fix, and what a healthy host is does
 * not change with the revision under test.
 */
export async function profileAtRevision(profile: LoadedProfile, repoDir: string, runner: Runner, log: Pick<Log, "info">): Promise<LoadedProfile> {
  const inventory = relative(profile.repoDir, profile.inventoryFile);
  const playbook = relative(profile.repoDir, profile.playbookFile);
  // The overlay is the profile's, from disk, as it was found; only the repo comes from the revision.
  const { verify, host, ...rest } = profile.document;
  // Several hosts: the same hosts (a group's as the profile found them), each with its overlay from disk (below).
  const document = profile.topology
    ? { ...rest, hosts: profile.topology.map((member) => member.name), repo: repoDir, inventory, playbook }
    : { ...rest, host, repo: repoDir, inventory, playbook, ...(profile.overlay.file ? { overrides: profile.overlay.file } : {}) };
  const atRevision = await resolveProfile(
    document,
    { name: profile.name, file: profile.file, dir: dirname(profile.file), overridesDir: join(repoDir, ".no-default-overlay") },
    runner,
    { say: (line) => log.info(line) },
  );
  // Inside the checkout (links resolved), a file: what `verify:` must be on disk too.
  const found = verify === undefined ? undefined : await realpath(join(repoDir, verify)).catch(() => undefined);
  const inside =
    found !== undefined &&
    found.startsWith(`${atRevision.repoDir}${sep}`) &&
    (await stat(found)
      .then((stats) => stats.isFile())
      .catch(() => false));
  const verifyFile = inside ? found : profile.verifyFile;
  if (verify !== undefined && verifyFile === profile.verifyFile)
    log.info(`verify: ${verify} is not in this revision: the one on disk is used (${profile.verifyFile})`);
  const overlayOf = (name: string) => profile.topology?.find((member) => member.name === name)?.overlay ?? profile.overlay;
  return {
    ...atRevision,
    ...(atRevision.topology
      ? { overlay: profile.overlay, topology: atRevision.topology.map((member) => ({ ...member, overlay: overlayOf(member.name) })) }
      : {}),
    document: { ...atRevision.document, ...(verify !== undefined ? { verify } : {}) },
    ...(verifyFile ? { verifyFile } : {}),
    vaultRepoDir: profile.vaultRepoDir ?? profile.repoDir,
  };
}
