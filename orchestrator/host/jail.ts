/**
 * The jail every controller-side Ansible process runs in (ADR-025 invariant 1, by structure):
 * `ansible-playbook`, `ansible-inventory`, `ansible`, `ansible-doc` and the vault reader run under
 * bubblewrap with
 *
 * - no network of its own (a network namespace with only its own loopback): a module that runs
 *   on the controller (synchronize's rsync, a lookup, a callback, a fact cache, an inventory or
 *   vars plugin) reaches nothing, whatever it is;
 * - no local socket but those given: a Unix socket is reachable wherever its file can be seen,
 *   read-only or not (an SSH master to a real host in ~/.ansible/cp, an agent, libvirt's, Docker's),
 *   so the jail sees no more of the file system than it needs: the system's folders (`/usr`,
 *   `/etc` and the `/bin`, `/sbin`, `/lib*` that lead there), read-only; what the run reads (the
 *   repo, the Ansible installation, the roles and collections it uses), read-only, with any socket
 *   in them hidden; an empty HOME at the user's HOME path (so `~` keeps its meaning) and empty
 *   `/tmp`, `/var/tmp` and `/run`; a fresh `/dev` and a `/proc` of its own processes. The sockets
 *   given (the gate to the run's SSH master and the harness's teller) are bound in alone, their
 *   folder hidden;
 * - nothing writable but its own empty folders (unless a spec says otherwise);
 * - the environment reduced to what boma-it sets ({@link jailEnv}), bubblewrap's own included:
 *   the user's ANSIBLE_* settings, agents and credentials do not pass;
 * - every capability dropped, its own session (no terminal to inject into), killed with its
 *   parent.
 *
 * bubblewrap works without root through user namespaces, and as root alike.
 */
import { lstat, readdir, readFile, readlink, realpath } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { CommandResult, RunOptions, Runner } from "../../infra/runner.ts";
import { RefusedError } from "../errors.ts";

/** Folders a jail has empty and its own: local sockets and shared writable places live there. */
export const MASKED = ["/tmp", "/var/tmp", "/run"] as const;

/** The system's folders a jail sees, read-only (a link among them is made as the same link). */
export const SYSTEM_DIRS = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] as const;

/** Where a jail keeps what boma-it puts in it (the vault client), inside its private /run. */
export const JAIL_RUN_DIR = "/run/boma-it";

/** What Ansible and Python say when something in a jail wanted the network. */
export const NEEDS_NETWORK =
  /Network is unreachable|Temporary failure in name resolution|Name or service not known|No address associated|Errno -[23]\]|\[Errno 101\]|Connection refused|getaddrinfo failed|Could not resolve/i;

/** What a jailed process may see and do beyond the system's folders. */
export interface JailSpec {
  /** Paths it reads (files or folders), bound read-only at their own path; sockets in them hidden. */
  readable?: readonly string[];
  /** Folders it may write (none for an apply). */
  writable?: readonly string[];
  /** Sockets it may connect to (the gate, the teller): each bound alone, the folder it is in hidden. */
  sockets?: readonly string[];
  /** The user's HOME: an empty folder at that path, so `~` means what it means (defaults to env.HOME). */
  home?: string;
  /**
   * A file made inside the jail from this process's stdin (never on the host's disk): the vault
   * client with the passwords. The jailed command then gets no stdin of its own.
   */
  stdinFile?: { path: string; mode: number; content: string };
  /** The whole environment inside. */
  env: Record<string, string>;
  cwd: string;
}

/** Whether `path` is `ancestor` or inside it. */
function within(path: string, ancestor: string): boolean {
  return path === ancestor || path.startsWith(ancestor.endsWith("/") ? ancestor : `${ancestor}/`);
}

/** The bubblewrap argv that runs `argv` in a jail; `layout` is {@link jailLayout}'s. */
export function jailArgv(argv: readonly string[], spec: JailSpec, layout: JailLayout = { links: {}, hiddenSockets: [] }): string[] {
  const args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"];
  for (const dir of SYSTEM_DIRS) {
    const link = layout.links[dir];
    if (link !== undefined) args.push("--symlink", link, dir);
    else args.push("--ro-bind-try", dir, dir);
  }
  args.push("--dev", "/dev", "--proc", "/proc", ...MASKED.flatMap((dir) => ["--tmpfs", dir]), "--symlink", "../run", "/var/run");
  // Later mounts go on top: what must be read comes back into the empty folders, then what may be
  // written. HOME is emptied after any readable folder that holds it (its keys never come back
  // with a parent), and only what is read inside it is bound again on top.
  const home = spec.home ?? spec.env.HOME;
  const readable = [...new Set(spec.readable ?? [])];
  const inHome = (path: string) => home !== undefined && home !== "/" && within(path, home);
  for (const path of readable.filter((path) => !inHome(path))) args.push("--ro-bind-try", path, path);
  if (home && home !== "/") args.push("--tmpfs", home);
  for (const path of readable.filter(inHome)) args.push("--ro-bind-try", path, path);
  for (const path of new Set(spec.writable ?? [])) args.push("--bind", path, path);
  for (const socket of layout.hiddenSockets) args.push("--ro-bind", "/dev/null", socket);
  for (const folder of new Set((spec.sockets ?? []).map((socket) => dirname(socket)))) args.push("--tmpfs", folder);
  for (const socket of spec.sockets ?? []) args.push("--bind", socket, socket);
  args.push("--dir", JAIL_RUN_DIR);
  if (spec.stdinFile) args.push("--perms", spec.stdinFile.mode.toString(8).padStart(4, "0"), "--ro-bind-data", "0", spec.stdinFile.path);
  args.push("--chdir", spec.cwd, "--clearenv");
  for (const [name, value] of Object.entries(spec.env)) args.push("--setenv", name, value);
  return ["bwrap", ...args, "--", ...argv];
}

/** What the host's file system says about a jail: which system folders are links, which sockets the readable paths hold. */
export interface JailLayout {
  /** System folders that are links (`/bin` → `usr/bin` on a merged /usr), by path. */
  links: Record<string, string>;
  /** Sockets found in the readable paths: each hidden under /dev/null. */
  hiddenSockets: string[];
}

/** How many entries a readable path may hold before the search for sockets in it stops (said in the error). */
const MAX_SEARCHED = 100_000;

/**
 * Reads the layout a jail needs: the system folders that are links, and every socket in the
 * readable paths (a socket there would be a way out; the search follows no link and stops at
 * {@link MAX_SEARCHED} entries, which is refused).
 */
export async function jailLayout(spec: Pick<JailSpec, "readable">): Promise<JailLayout> {
  const links: Record<string, string> = {};
  for (const dir of SYSTEM_DIRS) {
    const stats = await lstat(dir).catch(() => undefined);
    if (stats?.isSymbolicLink()) links[dir] = await readlink(dir);
  }
  const hiddenSockets: string[] = [];
  let searched = 0;
  const walk = async (path: string, depth: number): Promise<void> => {
    if (++searched > MAX_SEARCHED)
      throw new RefusedError(
        `${path}: more than ${MAX_SEARCHED} entries to search for sockets before a jail may read them`,
        "point the profile at a smaller repo, or keep what the run reads out of large folders",
      );
    const stats = await lstat(path).catch(() => undefined);
    if (!stats) return;
    if (stats.isSocket()) hiddenSockets.push(path);
    if (!stats.isDirectory() || depth > 40) return;
    for (const entry of await readdir(path).catch(() => [] as string[])) await walk(join(path, entry), depth + 1);
  };
  for (const path of new Set(spec.readable ?? [])) {
    if (SYSTEM_DIRS.some((dir) => within(path, dir))) continue;
    await walk(path, 0);
  }
  return { links, hiddenSockets };
}

/** Variables of the user's environment a jailed Ansible keeps: where programs are, who and where the user is, the locale. */
const KEPT_FROM_USER = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "PYENV_ROOT", "PYENV_VERSION"] as const;

/**
 * The environment of a jailed Ansible: the few variables it needs from the user's (the PATH its
 * `ansible-playbook` is found on, HOME, the locale), and boma-it's settings, which win over the
 * repo's ansible.cfg where a run would otherwise leave its place: no log file, no fact cache
 * but memory (a repo's `jsonfile` cache would take the VM's facts for the real host's), the
 * default output, which the harness reads, as JSON (a `yaml` result format folds long values
 * across lines, where redaction cannot find them), no retry files, no bytecode written next to
 * the repo's plugins, a temp folder in the jail's own /tmp. (Which callbacks run is the
 * apply's to say: see `callbackSettings` in ansible/apply.ts.)
 */
export function jailEnv(userEnv: Record<string, string | undefined>, settings: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of KEPT_FROM_USER) if (userEnv[name] !== undefined) env[name] = userEnv[name]!;
  for (const [name, value] of Object.entries(userEnv)) if (name.startsWith("LC_") && value !== undefined) env[name] = value;
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
  return {
    ...env,
    TMPDIR: "/tmp",
    PYTHONDONTWRITEBYTECODE: "1",
    ANSIBLE_LOG_PATH: "/dev/null",
    ANSIBLE_LOCAL_TEMP: "/tmp/ansible-local",
    ANSIBLE_RETRY_FILES_ENABLED: "False",
    ANSIBLE_NOCOLOR: "True",
    ANSIBLE_FORCE_COLOR: "False",
    ANSIBLE_DEPRECATION_WARNINGS: "False",
    ANSIBLE_CACHE_PLUGIN: "ansible.builtin.memory",
    ANSIBLE_LOAD_CALLBACK_PLUGINS: "False",
    ANSIBLE_STDOUT_CALLBACK: "ansible.builtin.default",
    ANSIBLE_CALLBACK_RESULT_FORMAT: "json",
    ANSIBLE_ASK_VAULT_PASS: "False",
    ...settings,
  };
}

/** bubblewrap's own environment: only where to find programs (its child's is the spec's). */
const BWRAP_ENV = { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" };

let bwrapChecked: Promise<string | undefined> | undefined;

/**
 * Whether bubblewrap runs here (installed, and user namespaces allowed): undefined when it does,
 * otherwise what is wrong. Tried once per process with a jail that runs `true`.
 */
export function jailProblem(runner: Runner): Promise<string | undefined> {
  bwrapChecked ??= (async () => {
    if (!(await runner.which("bwrap"))) return "bubblewrap is not installed";
    const argv = jailArgv(["true"], { env: { PATH: "/usr/bin:/bin" }, cwd: "/" }, await jailLayout({}));
    const probe = await runner.run("bwrap", argv.slice(1), { check: false, timeoutMs: 30_000, env: BWRAP_ENV, replaceEnv: true });
    return probe.failed ? `bubblewrap cannot make a jail here: ${probe.tail.split("\n").at(-1) ?? `exit ${probe.exitCode}`}` : undefined;
  })();
  return bwrapChecked;
}

/** Refuses (exit 3) unless a jail can be made, saying how to get one. */
export async function ensureJail(runner: Runner): Promise<void> {
  const problem = await jailProblem(runner);
  if (problem) {
    throw new RefusedError(
      `${problem}: boma-it runs Ansible's controller side in a jail without network (bubblewrap), and will not run it outside one`,
      "apt-get install bubblewrap; where it is installed, allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0 where AppArmor restricts them)",
    );
  }
}

/** Runs `program args` in a jail (see {@link JailSpec}); the runner records the bubblewrap command. */
export async function runJailed(
  runner: Runner,
  program: string,
  args: readonly string[],
  spec: JailSpec,
  options: Omit<RunOptions, "cwd" | "env" | "input" | "replaceEnv"> = {},
): Promise<CommandResult> {
  await ensureJail(runner);
  const argv = jailArgv([program, ...args], spec, await jailLayout(spec));
  return runner.run(argv[0]!, argv.slice(1), { ...options, env: BWRAP_ENV, replaceEnv: true, ...(spec.stdinFile ? { input: spec.stdinFile.content } : {}) });
}

/**
 * Where a program found outside a jail lives, for the jail to read: the installation around the
 * program (a virtualenv, a pyenv version, `~/.local`) and its interpreter's, when not in the
 * system's folders.
 */
export async function programFolders(program: string): Promise<string[]> {
  const folders: string[] = [];
  const add = async (path: string) => {
    const real = await realpath(path).catch(() => path);
    if (!SYSTEM_DIRS.some((dir) => within(real, dir))) folders.push(dirname(dirname(real)));
  };
  await add(program);
  const first = (await readFile(program, "utf8").catch(() => "")).split("\n")[0] ?? "";
  const shebang = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
  if (shebang && !shebang[1]!.endsWith("/env")) await add(shebang[1]!);
  return folders;
}

/** {@link programFolders} of a program found on the runner's PATH (nothing when it is not there). */
export async function programFoldersOf(runner: Runner, program: string): Promise<string[]> {
  const found = await runner.which(program);
  return found ? programFolders(found) : [];
}

/**
 * Whether a folder may be read by a jail as a whole: not `/`, not a folder of the system's, not a
 * home or a folder above one, not a masked folder or above one (it would bring their sockets and
 * the user's secrets back into view).
 */
export function readableAsWhole(path: string, home: string | undefined): boolean {
  if (path === "/" || SYSTEM_DIRS.some((dir) => within(dir, path))) return false;
  if (home && within(home, path)) return false;
  if (["/home", "/root"].some((dir) => within(dir, path))) return false;
  return !MASKED.some((dir) => within(dir, path));
}
