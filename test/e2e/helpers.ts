/**
 * Helpers of the e2e suite: it runs inside test/e2e/sandbox.sh (a network namespace with its
 * own libvirtd), drives the real CLI, and checks that nothing with the boma-it- prefix is left.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execFileSync } from "node:child_process";
import { after, afterEach, before } from "node:test";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import { controlSocketDir } from "../../orchestrator/host/ssh.ts";

/** Fails at once, with the way to run it, when the suite is not inside the sandbox. */
export function requireSandbox(): void {
  assert.ok(process.env.BOMA_IT_SANDBOX, "the e2e suite needs real libvirt inside its network namespace: run it with `npm run test:e2e` (as root)");
}

/** A suite's own runs dir and stacks dir, and the environment that points the CLI at them. */
export interface E2eDirs {
  runsDir: string;
  stacksDir: string;
  env: Record<string, string>;
}

/** A fresh runs dir and stacks dir for one test file. */
export async function e2eDirs(): Promise<E2eDirs> {
  const base = await mkdtemp(join(tmpdir(), "boma-it-e2e-"));
  // libvirt's QEMU user must reach images a test puts here (a blank disk, say).
  await chmod(base, 0o755);
  const runsDir = join(base, "runs");
  const stacksDir = join(base, "stacks");
  // The test network's DNS asks the "internet" host for allowed names (see withOutsideHost's dns).
  return { runsDir, stacksDir, env: { BOMA_IT_RUNS_DIR: runsDir, BOMA_IT_STACKS_DIR: stacksDir, BOMA_IT_DNS_SERVERS: INTERNET_HOST.address } };
}

/** The dirs of an e2e suite: filled in before its tests; whatever they left is reaped after them. */
export function suiteDirs(): E2eDirs {
  const dirs: E2eDirs = { runsDir: "", stacksDir: "", env: {} };
  before(async () => {
    requireSandbox();
    Object.assign(dirs, await e2eDirs());
  });
  afterEach(async () => {
    // A failed test's kept VM would hold "one test VM at a time" against every later test.
    if (dirs.stacksDir) await downRunsOf(dirs);
  });
  after(async () => {
    // Whatever a failed test left, the next suites (and the machine) must not inherit it.
    if (dirs.stacksDir) await cli(["reap"], dirs.env).catch(() => undefined);
  });
  return dirs;
}

/** Takes down every live run whose run dir is in this suite's runs dir (a test that failed midway left it). */
async function downRunsOf(dirs: E2eDirs): Promise<void> {
  const status = await cli(["status", "--json"], dirs.env).catch(() => undefined);
  if (!status || status.code !== 0) return;
  const runs = (JSON.parse(status.stdout) as { runId: string; runDir: string }[]).filter((run) => run.runDir.startsWith(`${dirs.runsDir}/`));
  for (const run of runs) {
    process.stderr.write(`    (a test left ${run.runId} up: taking it down)\n`);
    await cli(["down", run.runId], dirs.env).catch(() => undefined);
  }
}

/** A finished CLI process. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running CLI process: wait for a line on stderr, send signals, await the end. */
export interface CliProcess {
  result: Promise<CliResult>;
  waitForStderr(pattern: RegExp, timeoutMs: number): Promise<void>;
  kill(signal: NodeJS.Signals): void;
  pid: number;
}

/** Starts `boma-it ...args`; its stderr is echoed (prefixed) so CI logs show progress. */
export function startCli(args: readonly string[], env: Record<string, string>): CliProcess {
  const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    const text = chunk.toString();
    stderr += text;
    for (const line of text.split("\n")) if (line.trim()) process.stderr.write(`    | ${line}\n`);
    for (const waiter of [...waiters]) {
      if (waiter.pattern.test(stderr)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  });
  const result = new Promise<CliResult>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    result,
    pid: child.pid!,
    kill: (signal) => child.kill(signal),
    waitForStderr: (pattern, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        const timer = setTimeout(() => reject(new Error(`no ${pattern} on stderr within ${timeoutMs} ms:\n${stderr.slice(-2000)}`)), timeoutMs);
        waiters.push({ pattern, resolve: () => (clearTimeout(timer), resolve()) });
      }),
  };
}

/** Runs `boma-it ...args` to the end. */
export function cli(args: readonly string[], env: Record<string, string>): Promise<CliResult> {
  return startCli(args, env).result;
}

function virshNames(args: string[]): string[] {
  return execFileSync("virsh", ["-q", "-c", "qemu:///system", ...args], { encoding: "utf8" })
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("boma-it-"));
}

async function prefixedFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((entry) => entry.startsWith("boma-it-")).map((entry) => join(dir, entry));
  } catch {
    return [];
  }
}

/** SSH master connections of runs (pid and argv), alive whether or not their socket is still there. */
function sshMasters(): string[] {
  try {
    const listing = execFileSync("pgrep", ["-a", "-f", `ControlPath=${controlSocketDir()}/boma-it-`], { encoding: "utf8" });
    return listing.split("\n").filter((line) => line.includes("ControlMaster=auto"));
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/**
 * Everything with the boma-it- prefix that exists: domains, networks, pools, volumes, NVRAM,
 * SSH master connections, ledgers, pulumi stacks.
 */
export async function leftovers(stacksDir: string): Promise<string[]> {
  return [
    ...virshNames(["list", "--all", "--name"]).map((name) => `domain ${name}`),
    ...virshNames(["net-list", "--all", "--name"]).map((name) => `network ${name}`),
    ...virshNames(["pool-list", "--all", "--name"]).map((name) => `pool ${name}`),
    ...execFileSync("virsh", ["-q", "-c", "qemu:///system", "nwfilter-list"], { encoding: "utf8" })
      .split("\n")
      .map((line) => line.trim().split(/\s+/)[1] ?? "")
      .filter((name) => name.startsWith("boma-it-"))
      .map((name) => `nwfilter ${name}`),
    ...(await prefixedFiles("/var/lib/libvirt/images")).map((path) => `file ${path}`),
    ...(await prefixedFiles("/var/lib/libvirt/qemu/nvram")).map((path) => `file ${path}`),
    ...(await prefixedFiles("/var/lib/libvirt/dnsmasq")).filter((path) => path.endsWith(".queries.log")).map((path) => `file ${path}`),
    ...nftTables().map((table) => `nft table ${table}`),
    ...(await prefixedFiles(controlSocketDir())).map((path) => `ssh socket ${path}`),
    ...sshMasters().map((master) => `ssh master ${master}`),
    ...(await readdir(join(stacksDir, "direct")).catch(() => [] as string[])).map((file) => `ledger ${file}`),
    ...(await readdir(join(stacksDir, "pulumi", ".pulumi", "stacks", "boma-it")).catch(() => [] as string[]))
      .filter((file) => file.endsWith(".json"))
      .map((file) => `pulumi stack ${file}`),
  ];
}

/** The sandbox's nftables tables a run made (an egress allowlist's: `inet boma-it-...`). */
function nftTables(): string[] {
  const listed = JSON.parse(execFileSync("nft", ["-j", "list", "tables"], { encoding: "utf8" })) as {
    nftables: { table?: { family: string; name: string } }[];
  };
  return listed.nftables.flatMap((entry) => (entry.table && entry.table.name.startsWith("boma-it-") ? [`${entry.table.family} ${entry.table.name}`] : []));
}

/** Writes a variant of profiles/<name>.yml into `dir` (paths made absolute), changed by `edit`. */
export async function profileVariant(dir: string, name: string, file: string, edit: (yaml: string) => string): Promise<string> {
  const { mkdir, writeFile } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  const original = await readFile(join(PROJECT_ROOT, "profiles", `${name}.yml`), "utf8");
  const absolute = original
    .replace(/^repo: (.+)$/m, (_line, path: string) => `repo: ${join(PROJECT_ROOT, "profiles", path.trim())}`)
    .replace(/^overrides: (.+)$/m, (_line, path: string) => `overrides: ${join(PROJECT_ROOT, "profiles", path.trim())}`);
  const target = join(dir, file);
  await writeFile(target, edit(absolute));
  return target;
}

/** The secrets a hostile repo copy keeps in its own vault (a vaulted group_vars file, an inline `!vault`). */
/** Whether this is the full suite (`npm run test:e2e:full`), which also runs what CI's time cannot hold. */
export const FULL_SUITE = process.env.BOMA_IT_E2E_FULL === "1";

/** A test's `skip` when it belongs to the full suite only: `why` says what makes it too long for CI. */
export function fullSuiteOnly(why: string): false | string {
  return FULL_SUITE ? false : `in the full suite (npm run test:e2e:full): ${why}`;
}

export const HOSTILE_REPO_SECRETS = { vaulted: "repo-vault-sentinel-3e9b1c", inline: "repo-inline-sentinel-77d0aa" };

/** What a "real deploy" left in the hostile repo's fact cache for askari: addresses the VM must never be given. */
export const REAL_HOST_FACTS = { ansible_default_ipv4: { address: "192.0.2.77", interface: "ens18" }, ansible_hostname: "askari-real" };

/**
 * A copy of examples/boma-lab as a real repo may look to the harness: host_vars that point every
 * form of connection variable at `decoy` (ansible_ssh_host after ansible_host, a port, a user, a
 * jump host), an ansible.cfg that switches host key checking off, caches facts in the repo (and
 * holds the real askari's, left by a deploy) and enables the junit callback with its files in the
 * repo, a vaulted group_vars file and an inline `!vault` string, and a play that prints one
 * secret, fails (ignored) with the other, writes a file on "localhost" (delegate_to), syncs a
 * folder to the host (synchronize), writes what its facts say, and calls an API on `outside`
 * from "localhost": all of which must stay on the VM (and its allowlist) and out of sight.
 */
export async function hostileRepoCopy(dir: string, decoy: OutsideHost, vaultPasswordFile: string, outside: OutsideHost = INTERNET_HOST): Promise<string> {
  const { cp, mkdir, appendFile, writeFile } = await import("node:fs/promises");
  const repo = join(dir, "hostile-boma-lab");
  await cp(join(PROJECT_ROOT, "examples", "boma-lab"), repo, { recursive: true });
  const env = { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: vaultPasswordFile };
  const inline = execFileSync("ansible-vault", ["encrypt_string", "--name", "repo_inline_secret", HOSTILE_REPO_SECRETS.inline], { env, encoding: "utf8" });
  await appendFile(
    join(repo, "inventory", "host_vars", "askari.yml"),
    `# What a real repo says about reaching the real askari.
ansible_ssh_host: ${decoy.address}
ansible_ssh_port: 2222
ansible_ssh_user: realadmin
ansible_ssh_extra_args: "-o ProxyJump=realadmin@${decoy.address}:22"
ansible_ssh_common_args: "-o StrictHostKeyChecking=no"
${inline}`,
  );
  await writeFile(
    join(repo, "ansible.cfg"),
    "[defaults]\nhost_key_checking = False\ngathering = smart\nfact_caching = jsonfile\nfact_caching_connection = ./.facts\nfact_caching_timeout = 86400\ncallbacks_enabled = ansible.builtin.junit\n[callback_junit]\noutput_dir = ./junit-results\n[ssh_connection]\nssh_args = -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n",
  );
  await mkdir(join(repo, ".facts"), { recursive: true });
  await writeFile(join(repo, ".facts", "askari"), JSON.stringify(REAL_HOST_FACTS));
  await mkdir(join(repo, "files", "synced"), { recursive: true });
  await writeFile(join(repo, "files", "synced", "motd"), "synced by rsync\n");
  await mkdir(join(repo, "inventory", "group_vars", "mesh"), { recursive: true });
  const vaulted = join(repo, "inventory", "group_vars", "mesh", "vault.yml");
  await writeFile(vaulted, `repo_vault_secret: ${HOSTILE_REPO_SECRETS.vaulted}\n`);
  execFileSync("ansible-vault", ["encrypt", vaulted], { env, stdio: "ignore" });
  await appendFile(
    join(repo, "site.yml"),
    `
- name: What a hostile repo does besides
  hosts: all
  become: true
  tasks:
    - name: Print a repo secret
      ansible.builtin.debug: { var: repo_vault_secret }
    - name: Fail with the other one
      ansible.builtin.fail: { msg: "{{ repo_inline_secret }}" }
      ignore_errors: true
    - name: Write a file on the controller
      ansible.builtin.copy: { content: "delegated\n", dest: /etc/boma-lab-delegated, mode: "0644" }
      delegate_to: localhost
    - name: Sync a folder to the host
      ansible.posix.synchronize: { src: "{{ playbook_dir }}/files/synced/", dest: /etc/boma-lab-synced/ }
    - name: Write what the facts say of the host
      ansible.builtin.copy: { content: "{{ ansible_default_ipv4.address | default('none') }} {{ ansible_hostname }}\n", dest: /etc/boma-lab-facts, mode: "0644" }
    - name: Call an API from the controller
      ansible.builtin.uri: { url: "http://${outside.address}/api", timeout: 5 }
      delegate_to: localhost
      ignore_errors: true
`,
  );
  return repo;
}

/** Every file under `dir` with its content's hash and mode, links as links: a tree byte for byte. */
export async function treeHash(dir: string): Promise<string> {
  return execFileSync(
    "bash",
    ["-c", 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum; find . -printf "%p %y %m %l\\n" | sort', "hash", dir],
    { encoding: "utf8" },
  );
}

/** A host outside the VM's network: its own namespace behind a veth, serving HTTP on port 80. */
export interface OutsideHost {
  /** Namespace name (also names the veth pair). */
  name: string;
  /** The host's address and the sandbox's end of the link, in one /24. */
  address: string;
  sandboxAddress: string;
  /** An IPv6 (ULA) address of the host and the sandbox's end, in one /64, when it has one. */
  address6?: string;
  sandboxAddress6?: string;
}

/**
 * Runs `body` while `host` exists in a namespace of its own (behind a veth to the sandbox) with
 * `server` running inside it, once `ready` says it answers the sandbox (proven first, so a VM or
 * a harness that cannot reach it proves something). Allowed here: a test host in a namespace of
 * our own.
 */
async function withNamespaceHost<T>(host: OutsideHost, server: readonly string[], ready: () => Promise<boolean>, body: () => Promise<T>): Promise<T> {
  const sh = (script: string) => execFileSync("sh", ["-c", script], { encoding: "utf8" });
  const link = host.name.replace(/^boma-it-e2e-/, "b").slice(0, 10);
  // What an earlier test killed before its cleanup left: its server, its link, its namespace.
  sh(`ip netns pids ${host.name} 2>/dev/null | xargs -r kill 2>/dev/null; ip link del ${link}0 2>/dev/null; ip netns del ${host.name} 2>/dev/null; true`);
  sh(`ip netns add ${host.name}
ip link add ${link}0 type veth peer name ${link}1 netns ${host.name}
ip addr add ${host.sandboxAddress}/24 dev ${link}0 && ip link set ${link}0 up
ip netns exec ${host.name} sh -c 'ip link set lo up; ip addr add ${host.address}/24 dev ${link}1; ip link set ${link}1 up; ip route add default via ${host.sandboxAddress}'`);
  if (host.address6 && host.sandboxAddress6) {
    sh(`ip -6 addr add ${host.sandboxAddress6}/64 dev ${link}0 nodad
ip netns exec ${host.name} sh -c 'ip -6 addr add ${host.address6}/64 dev ${link}1 nodad; ip -6 route add default via ${host.sandboxAddress6}'`);
  }
  const listener = spawn("ip", ["netns", "exec", host.name, ...server], { stdio: "ignore" });
  try {
    let answered = false;
    for (let attempt = 0; attempt < 20 && !answered; attempt += 1) {
      answered = await ready();
      if (!answered) await sleep(500);
    }
    assert.ok(answered, `${host.name} (${host.address}) answers the sandbox: the test is sound`);
    return await body();
  } finally {
    listener.kill();
    sh(`ip link del ${link}0 2>/dev/null; ip netns del ${host.name}`);
  }
}

/**
 * argv of an HTTP server on `address:port` (IPv4 or IPv6; `::` for both) that never looks a name
 * up: Python's http.server asks DNS for its own name first, which hangs for the resolver's
 * timeout where a default route leads nowhere.
 */
export function httpServer(address: string, port: number): string[] {
  const script = `import http.server, socket, socketserver, sys
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "test-host", self.server_address[1]
Server((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
`;
  return ["python3", "-c", script, address, String(port)];
}

/**
 * Runs `body` while an outside host serves HTTP on port 80 (see {@link withNamespaceHost}) and,
 * with `dns`, a DNS server on port 53 that answers each of those names (and their subdomains)
 * with its address and every other name with NXDOMAIN: the resolver an allowlist's DNS forwards
 * allowed names to (the e2e env's BOMA_IT_DNS_SERVERS). `body` gets the requests the HTTP server
 * saw.
 */
export async function withOutsideHost<T>(
  host: OutsideHost,
  body: (requests: () => Promise<string[]>) => Promise<T>,
  dns: Record<string, string> = {},
): Promise<T> {
  const answers = (url: string) =>
    fetch(url, { signal: AbortSignal.timeout(2000) }).then(
      (response) => response.status === 200,
      () => false,
    );
  const ready = async () => (await answers(`http://${host.address}/`)) && (!host.address6 || (await answers(`http://[${host.address6}]/`)));
  const record = join(await mkdtemp(join(tmpdir(), "boma-it-outside-")), "requests.log");
  // The readiness probes ask for "/"; what a VM asks for (an API's path) is what counts. (A VM's
  // request comes through NAT from the sandbox's address, so the address cannot tell them apart.)
  const requests = async () => (await readFile(record, "utf8").catch(() => "")).split("\n").filter((line) => line.trim() !== "" && !/ GET \/ HTTP/.test(line));
  // `--bind ::` serves IPv4 and IPv6 alike (dual stack).
  return withNamespaceHost(host, outsideServices(host.address6 ? "::" : host.address, host.address, dns, record), ready, () => body(requests));
}

/**
 * argv of an outside host's services: HTTP on port 80 (every request but the sandbox's readiness
 * probes appended to `record`) and, with names, DNS on port 53 (see {@link withOutsideHost}).
 */
function outsideServices(httpAddress: string, dnsAddress: string, names: Record<string, string>, record: string): string[] {
  const script = `import http.server, json, socket, socketserver, struct, sys, threading
names, record = json.loads(sys.argv[3]), sys.argv[4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, form, *args):
        with open(record, "a") as log:
            log.write("%s %s\\n" % (self.client_address[0], self.requestline))
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "test-host", self.server_address[1]
def dns():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[2], 53))
    while True:
        query, peer = sock.recvfrom(512)
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1 : at + 1 + query[at]].decode().lower())
            at += 1 + query[at]
        question = query[12 : at + 5]
        qtype = struct.unpack(">H", query[at + 1 : at + 3])[0]
        name = ".".join(labels)
        address = next((value for key, value in names.items() if name == key or name.endswith("." + key)), None)
        if address and qtype == 1:
            answer = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
            sock.sendto(query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + answer, peer)
        else:
            sock.sendto(query[:2] + struct.pack(">HHHHH", 0x8180 if address else 0x8183, 1, 0, 0, 0) + question, peer)
if names:
    threading.Thread(target=dns, daemon=True).start()
Server((sys.argv[1], 80), Handler).serve_forever()
`;
  return ["python3", "-c", script, httpAddress, dnsAddress, JSON.stringify(names), record];
}

/** Runs `body` while `server` runs here (in the sandbox: the control host's side), once `url` answers. */
export async function withListener<T>(server: readonly string[], url: string, body: () => Promise<T>): Promise<T> {
  const listener = spawn(server[0]!, server.slice(1), { stdio: "ignore" });
  try {
    let answered = false;
    for (let attempt = 0; attempt < 20 && !answered; attempt += 1) {
      answered = await fetch(url, { signal: AbortSignal.timeout(2000) }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (!answered) await sleep(500);
    }
    assert.ok(answered, `${url} answers the sandbox: the test is sound`);
    return await body();
  } finally {
    listener.kill();
  }
}

/**
 * Runs `body` while a decoy "real host" listens on `ports` and records every connection it
 * accepts; `body` gets the connections made since the decoy was proven to answer.
 */
export async function withDecoyHost<T>(host: OutsideHost, ports: readonly number[], body: (connections: () => Promise<string[]>) => Promise<T>): Promise<T> {
  const record = join(await mkdtemp(join(tmpdir(), "boma-it-decoy-")), "accepted.log");
  const script = `import selectors, socket, sys
selector = selectors.DefaultSelector()
for port in ${JSON.stringify(ports)}:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((${JSON.stringify(host.address)}, port))
    listener.listen(16)
    selector.register(listener, selectors.EVENT_READ)
with open(${JSON.stringify(record)}, "a") as log:
    while True:
        for key, _ in selector.select():
            connection, peer = key.fileobj.accept()
            log.write(f"{peer[0]} -> port {key.fileobj.getsockname()[1]}\\n")
            log.flush()
            connection.close()
`;
  const accepted = async () => (await readFile(record, "utf8").catch(() => "")).split("\n").filter(Boolean);
  const connects = () =>
    new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: host.address, port: ports[0]! }, () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
    });
  // The kernel completes a connection before the decoy accepts it and writes it down: the probe
  // counts as ready once its own line is there, or a line written late would count as the run's.
  const ready = async () => {
    const seen = (await accepted()).length;
    if (!(await connects())) return false;
    for (let wait = 0; wait < 100; wait += 1) {
      if ((await accepted()).length > seen) return true;
      await sleep(100);
    }
    return false;
  };
  return withNamespaceHost(host, ["python3", "-c", script], ready, async () => {
    const before = (await accepted()).length;
    return body(async () => (await accepted()).slice(before));
  });
}

/** A LAN host (RFC 1918, like the real 10.20.x LAN) and an "internet" host (TEST-NET-2, not private). */
export const LAN_HOST: OutsideHost = {
  name: "boma-it-e2e-lan",
  address: "10.20.0.1",
  sandboxAddress: "10.20.0.254",
  address6: "fd20::1",
  sandboxAddress6: "fd20::fe",
};
export const INTERNET_HOST: OutsideHost = { name: "boma-it-e2e-wan", address: "198.51.100.1", sandboxAddress: "198.51.100.254" };
/** A "real host" of the fleet that a hostile repo points Ansible at (an RFC 1918 address, like the LAN's). */
export const DECOY_HOST: OutsideHost = { name: "boma-it-e2e-decoy", address: "10.20.9.88", sandboxAddress: "10.20.9.254" };

/** Whether the VM of a run opens a TCP connection to address:port ("reached" or "blocked"); IPv6 too. */
export async function vmReaches(runId: string, address: string, port: number, env: Record<string, string>): Promise<string> {
  const probe = `timeout 8 bash -c '</dev/tcp/${address}/${port}' 2>/dev/null && echo reached || echo blocked`;
  return (await cli(["ssh", runId, "--", probe], env)).stdout.trim();
}

/** Whether the VM resolves `name` (through its network's DNS): "resolved <address>" or "refused". */
export async function vmResolves(runId: string, name: string, env: Record<string, string>): Promise<string> {
  const probe = `timeout 15 getent ahostsv4 ${name} | awk 'NR==1 {print "resolved " $1; found=1} END {if (!found) print "refused"}'`;
  return (await cli(["ssh", runId, "--", probe], env)).stdout.trim();
}

/** What a run's egress filter recorded as refused (its nftables set, read as root in the sandbox). */
export function blockedByFilter(runId: string): string[] {
  const listed = execFileSync("nft", ["-j", "list", "set", "inet", runId, "blocked"], { encoding: "utf8" });
  const parsed = JSON.parse(listed) as { nftables: { set?: { elem?: { elem: { val: { concat: [string, string, number] } } }[] } }[] };
  return parsed.nftables.flatMap((entry) => entry.set?.elem ?? []).map((element) => element.elem.val.concat.join(" "));
}

/** Whether the VM gets an answer to a DNS query over UDP from its gateway's dnsmasq. */
export async function vmGetsDnsAnswer(runId: string, gateway: string, env: Record<string, string>): Promise<string> {
  const query =
    "python3 -c \"import socket;q=bytes.fromhex('1234010000010000000000000661736b6172690000010001');s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);s.sendto(q,('" +
    gateway +
    "',53));r=s.recv(512);print('dns-answer' if r[:2]==q[:2] else 'dns-garbled')\"";
  const result = await cli(["ssh", runId, "--", query], env);
  return result.stdout.trim() || result.stderr.trim();
}
