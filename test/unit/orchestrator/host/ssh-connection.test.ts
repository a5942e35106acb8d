/**
 * One SSH master connection per boot: commands share it, a reboot ends it before the guest goes
 * down (its TCP connection would hang on the dead boot) and the next boot's first login starts a
 * new one; the owner ends it when done. The fake `ssh` plays the master: a command with
 * ControlMaster=auto creates the socket file when there is none, `-O exit` removes it.
 */
import assert from "node:assert/strict";
import { appendFile, chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { Machine } from "../../../../orchestrator/guest/machine.ts";
import { controlPathFor, ensureMaster, prepareControlSocketDir, sshCommandArgs, type SshTarget } from "../../../../orchestrator/host/ssh.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const TARGET: SshTarget = { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "boma-it-askari-20261130-101010" };

/** The value of `-o Name=value` in an argv, if given. */
function option(argv: readonly string[], name: string): string | undefined {
  const given = argv.find((arg, index) => argv[index - 1] === "-o" && arg.startsWith(`${name}=`));
  return given?.slice(name.length + 1);
}

describe("SSH master connection", () => {
  it("commands go through the run's socket; a command that ends the boot and a target without one make their own connection", () => {
    const shared = sshCommandArgs({ ...TARGET, controlPath: "/tmp/boma-it-ssh-0/run" }, "true");
    assert.equal(option(shared, "ControlMaster"), "auto");
    assert.equal(option(shared, "ControlPath"), "/tmp/boma-it-ssh-0/run");
    assert.ok(Number(option(shared, "ControlPersist")) > 0, "an idle master ends by itself");

    for (const own of [
      sshCommandArgs({ ...TARGET, controlPath: "/tmp/boma-it-ssh-0/run" }, "systemctl reboot", { multiplex: false }),
      sshCommandArgs(TARGET, "true"),
    ]) {
      // Explicit, so a user's ssh_config cannot multiplex it either.
      assert.equal(option(own, "ControlMaster"), "no");
      assert.equal(option(own, "ControlPath"), "none");
    }
  });

  it("the socket path is the run id in a short folder, or none when a socket could not hold it", () => {
    assert.equal(controlPathFor(TARGET.alias, "/tmp/boma-it-ssh-0"), `/tmp/boma-it-ssh-0/${TARGET.alias}`);
    assert.equal(controlPathFor(`boma-it-${"a".repeat(63)}-20261130-101010`, "/tmp/boma-it-ssh-0"), undefined, "108 bytes minus ssh's temporary suffix");
  });

  it("uses the socket folder only when it is this user's alone", async () => {
    const tree = await tempTree();
    try {
      const fresh = join(tree.dir, "fresh");
      assert.equal(await prepareControlSocketDir(fresh), true);
      assert.equal((await stat(fresh)).mode & 0o777, 0o700);
      const shared = join(tree.dir, "shared");
      await mkdir(shared);
      await chmod(shared, 0o777);
      assert.equal(await prepareControlSocketDir(shared), false, "others could put a socket of theirs in it");
    } finally {
      await tree.remove();
    }
  });

  it("a reboot ends the master before the guest goes down; the new boot's first login starts the next; closing ends it", async () => {
    const tree = await tempTree();
    try {
      const { machine, controlPath, log } = await fakeMasterGuest(tree.dir);
      await machine.execute("true");
      assert.ok(await exists(controlPath), "the first command started the master");

      const proof = await machine.reboot(60_000);
      assert.notEqual(proof.bootIdAfter, proof.bootIdBefore);
      const calls = (await fakeCalls(log)).map(describeCall);
      const rebootAt = calls.indexOf("direct: sudo systemctl reboot");
      assert.ok(rebootAt > 0, `the reboot command runs on a connection of its own: ${calls.join(" | ")}`);
      assert.equal(calls[rebootAt - 1], "exit master", "the master is ended right before it");
      // The restart powered the VM off and the harness started it: the first probe is the new boot's.
      assert.deepEqual(calls.slice(rebootAt + 1), ["shared: probe (new boot)"]);
      assert.ok(await exists(controlPath), "the new boot's first login started a master");

      await machine.closeConnection();
      assert.equal(await exists(controlPath), false);
      const before = (await fakeCalls(log)).length;
      await machine.closeConnection();
      assert.equal((await fakeCalls(log)).length, before, "closing twice runs nothing");
    } finally {
      await tree.remove();
    }
  });

  it("before a play, the master is made to answer when it does not (the jail's gate reaches the VM through it alone); one that answers is left as it is", async () => {
    const tree = await tempTree();
    try {
      const { controlPath, runner, log } = await fakeMasterGuest(tree.dir);
      const target = { ...TARGET, controlPath };
      assert.equal(await ensureMaster(runner, target), true);
      assert.equal(await exists(controlPath), true, "a master listens");
      const made = (await fakeCalls(log)).filter((call) => call.at(-1) === "true").length;
      assert.equal(made, 1, "one command started it");
      assert.equal(await ensureMaster(runner, target), true);
      assert.equal((await fakeCalls(log)).filter((call) => call.at(-1) === "true").length, made, "a master that answers is not started again");
      assert.equal(await ensureMaster(runner, TARGET), false, "a target without a socket has no master to make");
    } finally {
      await tree.remove();
    }
  });

  it("a socket nobody answers on any more is removed, so the next command starts a new master", async () => {
    const tree = await tempTree();
    try {
      const { machine, controlPath } = await fakeMasterGuest(tree.dir, { deadMaster: true });
      await writeFile(controlPath, "");
      await machine.closeConnection();
      assert.equal(await exists(controlPath), false);
    } finally {
      await tree.remove();
    }
  });
});

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** A logged fake-ssh call in a word or two. */
function describeCall(argv: readonly string[]): string {
  if (argv.includes("-O")) return "exit master";
  const how = option(argv, "ControlPath") === "none" ? "direct" : "shared";
  const command = argv.at(-1) ?? "";
  if (command.includes("systemctl reboot")) return `${how}: sudo systemctl reboot`;
  // The fake marks which boot answered a probe at the end of its logged command.
  if (command.includes("/proc/uptime")) return `${how}: probe${/ \((?:old|new) boot\)$/.exec(command)?.[0] ?? ""}`;
  return `${how}: ${command}`;
}

/**
 * A Machine whose `ssh` plays a guest and its master connection: boot id 1 until `systemctl
 * reboot`, whose restart powers the VM off; boot id 2 once the harness started it again. Which
 * boot answered a probe is appended to that probe's logged command.
 */
async function fakeMasterGuest(dir: string, options: { deadMaster?: boolean } = {}) {
  const controlPath = join(dir, "sockets", TARGET.alias);
  await mkdir(join(dir, "sockets"), { recursive: true, mode: 0o700 });
  const log = join(dir, "log");
  const state = join(dir, "state");
  const consoleLog = join(dir, "console.log");
  await writeFake(
    join(dir, "bin"),
    "ssh",
    `
args="$*"
path=$(printf '%s\\n' "$@" | sed -n 's/^ControlPath=//p' | head -n1)
if [[ "$args" == *"-O exit"* ]]; then
  ${options.deadMaster ? 'echo "Control socket connect($path): Connection refused" >&2; exit 255' : 'rm -f "$path"; exit 0'}
fi
if [[ "$args" == *ControlMaster=auto* && ! -e "$path" ]]; then : > "$path"; fi
cmd="\${@: -1}"
case "$cmd" in
  *"systemctl reboot"*) echo rebooting > "${state}"; exit 255 ;;
  *boot_id*)
    if [[ "$cmd" == *uptime* ]]; then
      if [[ "$(cat "${state}" 2>/dev/null)" == new ]]; then
        sed -i '$ s/"\\]$/ (new boot)"]/' "$FAKE_LOG"
        printf '30.00 1.00\\n29000000\\nboot-2\\n'
      else printf '500.00 1.00\\n99000000\\nboot-1\\n'; fi
    elif [[ "$(cat "${state}" 2>/dev/null)" == new ]]; then echo boot-2; else echo boot-1; fi ;;
esac
exit 0
`,
  );
  let now = 0;
  const runner = new Runner({ env: { PATH: `${join(dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: log } });
  const machine = new Machine({
    name: "askari",
    target: { ...TARGET, controlPath },
    runner,
    log: silentLog(),
    consoleLog,
    // The reboot's restart powers the VM off (the console says so); starting it brings boot 2.
    domainState: async () => {
      const guest = await readFile(state, "utf8").catch(() => "");
      if (guest === "rebooting\n") {
        await appendFile(consoleLog, "[  222.2] reboot: Restarting system\r\n");
        await writeFile(state, "off\n");
      }
      return guest === "rebooting\n" || guest === "off\n" ? "shut off (shutdown)" : "running";
    },
    power: {
      powerOffOnReset: async () => undefined,
      restartOnReset: async () => undefined,
      start: async () => writeFile(state, "new\n"),
      powerCycle: async () => undefined,
    },
    clock: { now: () => now, sleep: async (ms: number) => void (now += ms) },
    banner: async () => true,
  });
  return { machine, controlPath, log, runner };
}
