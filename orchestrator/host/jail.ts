/**
 * The jail every controller-side Ansible process runs in (ADR-025 invariant 1, by structure):
 * `ansible-playbook`, `ansible-inventory`, `ansible` and the vault reader run under bubblewrap
 * with
 *
 * - no network of their own (a network namespace with only its own loopback): a module that runs
 *   on the controller (synchronize's rsync, a lookup, a callback, a fact cache, an inventory or
 *   vars plugin) reaches nothing, whatever it is; the one way out is the run's SSH master to the
 *   VM, whose socket is bound in (and from the VM on, the VM's egress allowlist);
 * - the file system read-only, but for the folders of the run given as writable; `/tmp`,
 *   `/var/tmp`, `/run` and `/dev/shm` private and empty (where local sockets live: libvirt's,
 *   Docker's, D-Bus, the user's agents), a fresh `/dev` and a `/proc` of its own processes;
 *   HOME is the user's own, read-only, so that `~` in the repo's ansible.cfg means what it means
 *   and nothing can be written there;
 * - the environment reduced to what boma-it sets ({@link jailEnv}): the user's ANSIBLE_* settings
 *   and agents do not pass;
 * - every capability dropped, its own session (no terminal to inject into), killed with its
 *   parent.
 *
 * bubblewrap works without root through user namespaces, and as root alike.
 */
import { realpath } from "node:fs/promises";
import { dirname } from "node:path";
import type { CommandResult, RunOptions, Runner } from "../../infra/runner.ts";
import { RefusedError } from "../errors.ts";

/** Folders a jail masks with an empty tmpfs: local sockets and shared writable places. */
export const MASKED = ["/tmp", "/var/tmp", "/run"] as const;

/** Where a jail keeps what boma-it puts in it (the vault client), inside its private /run. */
export const JAIL_RUN_DIR = "/run/boma-it";

/** What a jailed process may see and do beyond reading the file system. */
export interface JailSpec {
  /** Folders it may write (the apply's folder); created beforehand. */
  writable?: readonly string[];
  /** Paths it must read that may lie in a masked folder (the repo, the run's keys, a temp file of extra vars). */
  readable?: readonly string[];
  /** The run's SSH master socket: bound in, its only way out. */
  masterSocket?: string;
  /**
   * A file made inside the jail from this process's stdin (never on the host's disk): the vault
   * client with the passwords. The jailed command then gets no stdin of its own.
   */
  stdinFile?: { path: string; mode: number; content: string };
  /** The whole environment inside. */
  env: Record<string, string>;
  cwd: string;
}

/** What Ansible and Python say when something in a jail wanted the network. */
export const NEEDS_NETWORK = /Network is unreachable|Temporary failure in name resolution|Name or service not known|No address associated|Errno -[23]\]|\[Errno 101\]|Connection refused|getaddrinfo failed|Could not resolve/i;

/** The bubblewrap argv that runs `argv` in a jail. */
export function jailArgv(argv: readonly string[], spec: JailSpec): string[] {
  const args = [
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    "--cap-drop", "ALL",
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    ...MASKED.flatMap((dir) => ["--tmpfs", dir]),
  ];
  // Later mounts go on top: what must be read comes back into the masked folders, then what may be written.
  for (const path of new Set(spec.readable ?? [])) args.push("--ro-bind-try", path, path);
  for (const path of new Set(spec.writable ?? [])) args.push("--bind", path, path);
  if (spec.masterSocket) args.push("--bind-try", spec.masterSocket, spec.masterSocket);
  args.push("--dir", JAIL_RUN_DIR);
  if (spec.stdinFile) args.push("--perms", spec.stdinFile.mode.toString(8).padStart(4, "0"), "--ro-bind-data", "0", spec.stdinFile.path);
  args.push("--chdir", spec.cwd, "--clearenv");
  for (const [name, value] of Object.entries(spec.env)) args.push("--setenv", name, value);
  return ["bwrap", ...args, "--", ...argv];
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

let bwrapChecked: Promise<string | undefined> | undefined;

/**
 * Whether bubblewrap runs here (installed, and user namespaces allowed): undefined when it does,
 * otherwise what is wrong. Tried once per process with a jail that runs `true`.
 */
export function jailProblem(runner: Runner): Promise<string | undefined> {
  bwrapChecked ??= (async () => {
    if (!(await runner.which("bwrap"))) return "bubblewrap is not installed";
    const probe = await runner.run("bwrap", jailArgv(["true"], { env: { PATH: "/usr/bin:/bin" }, cwd: "/" }).slice(1), { check: false, timeoutMs: 30_000 });
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
export async function runJailed(runner: Runner, program: string, args: readonly string[], spec: JailSpec, options: Omit<RunOptions, "cwd" | "env" | "input"> = {}): Promise<CommandResult> {
  await ensureJail(runner);
  const argv = jailArgv([program, ...args], spec);
  return runner.run(argv[0]!, argv.slice(1), { ...options, ...(spec.stdinFile ? { input: spec.stdinFile.content } : {}) });
}

/**
 * Folders a jail must bind back in for a program found outside it: the program's own and its
 * interpreter's installation, when they lie in a masked folder (a virtualenv in /tmp).
 */
export async function programFolders(program: string): Promise<string[]> {
  const real = await realpath(program).catch(() => program);
  return MASKED.some((dir) => real.startsWith(`${dir}/`)) ? [dirname(dirname(real))] : [];
}

/** {@link programFolders} of a program found on the runner's PATH (nothing when it is not there). */
export async function programFoldersOf(runner: Runner, program: string): Promise<string[]> {
  const found = await runner.which(program);
  return found ? programFolders(found) : [];
}
