/**
 * A real VM: `up --keep-at boot` boots askari's VM and keeps it as the image made it (what a role
 * sees on genericcloud holds), `ssh` reaches it with the pinned key, a reboot gives a new boot id, a kernel panic ends a wait at once, `down` leaves nothing behind.
 * Then the failure paths that must not leak: Ctrl-C during boot, and a VM that never becomes
 * reachable.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { access, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { StackOutputs } from "../../infra/plan.ts";
import { Runner } from "../../infra/runner.ts";
import { Libvirt } from "../../orchestrator/host/libvirt.ts";
import { isTcgTextPatchRace } from "../../orchestrator/guest/console.ts";
import { GuestPanicError, Machine } from "../../orchestrator/guest/machine.ts";
import { sshTargetOf } from "../../orchestrator/host/ssh.ts";
import type { FirstBoot } from "../../orchestrator/run/provision.ts";
import { silentLog } from "../helpers/fixtures.ts";
import { assertGenericcloudFacts } from "./genericcloud.ts";
import {
  blockedByFilter,
  cli,
  httpServer,
  INTERNET_HOST,
  LAN_HOST,
  leftovers,
  startCli,
  suiteDirs,
  vmGetsDnsAnswer,
  vmReaches,
  vmResolves,
  withListener,
  withOutsideHost,
} from "./helpers.ts";

/** The one name the VM of this suite may reach besides the defaults (the outside host's DNS answers it). */
const ALLOWED_NAME = "mirror.boma-it.test";

describe("a throwaway VM, for real", { timeout: 30 * 60_000 }, () => {
  const dirs = suiteDirs();

  it("two ups at once give one VM and one exit 3; a reap from another stacks dir during its boot leaves it intact; up → ssh → reboot with a new boot id → a kernel panic noticed at once → down, and nothing with the prefix remains", async () => {
    // Started together: the run lock has exactly one holder, the other is refused at once.
    // The VM may reach one name besides the defaults: what the egress allowlist is checked with.
    // Kept right after the boot: what is tested here needs the VM, not the profile applied.
    const upArgs = ["up", "askari", "--keep-at", "boot", "--egress", ALLOWED_NAME, "--json"];
    const both = [startCli(upArgs, dirs.env), startCli(upArgs, dirs.env)];
    const first = await Promise.race(both.map((candidate, index) => candidate.result.then((result) => ({ index, result }))));
    assert.equal(first.result.code, 3, first.result.stderr.slice(-2000));
    assert.match(first.result.stderr, /another boma-it run \(pid \d+, up.*\) holds the run lock/);
    const winner = both[1 - first.index]!;
    await winner.waitForStderr(/created domain/, 120_000);
    // Another checkout's cron'd reap, while the run boots: its stack is not in that stacks dir.
    const other = await cli(["reap"], { ...dirs.env, BOMA_IT_STACKS_DIR: join(dirs.stacksDir, "..", "another-checkout-stacks") });
    assert.equal(other.code, 0, other.stderr.slice(-2000));
    assert.doesNotMatch(other.stdout, /^destroyed /m, "nothing of the booting run is touched");
    assert.match(other.stdout, /spared +(domain|network) +boma-it-askari-/);
    const up = await winner.result;
    assert.equal(up.code, 0, up.stderr.slice(-3000));
    const run = JSON.parse(up.stdout) as { runId: string; host: string; ip: string; ssh: string; runDir: string };
    assert.match(run.runId, /^boma-it-askari-\d{8}-\d{6}$/);
    assert.equal(run.ssh, `npm run boma-it -- ssh ${run.runId}`);

    const upReport = JSON.parse(await readFile(join(run.runDir, "up.json"), "utf8")) as {
      phases: { name: string; seconds: number }[];
      readyLagSeconds: (number | null)[];
      firstBoot: FirstBoot;
    };
    process.stderr.write(
      `    measured: ${upReport.phases.map((phase) => `${phase.name} ${phase.seconds} s`).join(", ")}; readyLag ${upReport.readyLagSeconds.join(", ")} s\n`,
    );
    // Booted (and saved for the next VM), or started from a first boot an earlier VM of the suite saved.
    assert.deepEqual(
      upReport.phases.map((phase) => phase.name),
      upReport.firstBoot.kind === "warm"
        ? ["provision", "SSH", "cloud-init", "reset point"]
        : ["provision", "DHCP lease", "SSH", "cloud-init", "saving the first boot", "reset point"],
      JSON.stringify(upReport.firstBoot),
    );
    assert.deepEqual(
      (await leftovers(dirs.stacksDir)).filter((item) => item.startsWith("ssh ")),
      [],
      "up ended its SSH master connection; the VM lives on",
    );

    const status = await cli(["status", "--json"], dirs.env);
    const live = JSON.parse(status.stdout) as { runId: string; state: string; engine: string; ageSeconds: number }[];
    assert.deepEqual(
      live.map((entry) => [entry.runId, entry.state, entry.engine]),
      [[run.runId, "up", "direct"]],
    );

    // One test VM at a time: a second `up` is refused before it creates anything.
    const second = await cli(["up", "askari"], dirs.env);
    assert.equal(second.code, 3, second.stderr.slice(-2000));
    assert.match(second.stderr, new RegExp(`another test VM is running \\(${run.runId}\\)`));
    const after = JSON.parse((await cli(["status", "--json"], dirs.env)).stdout) as { runId: string; state: string }[];
    assert.deepEqual(
      after.map((entry) => [entry.runId, entry.state]),
      [[run.runId, "up"]],
      "the first run is untouched",
    );

    const hostname = await cli(["ssh", run.runId, "--", "hostname"], dirs.env);
    assert.equal(hostname.code, 0, hostname.stderr);
    assert.equal(hostname.stdout.trim(), "askari");
    await assertGuestIdentity(run, upReport.firstBoot, dirs.env);
    // The VM as the image made it: what a role sees on Debian's genericcloud holds.
    await assertGenericcloudFacts(run.runId, dirs.env);
    // One difference on purpose (docs/genericcloud.md): no page-table isolation, which under TCG
    // empties the emulated TLB at every system call.
    const isolation = await cli(["ssh", run.runId, "--", "cat /proc/cmdline /sys/devices/system/cpu/vulnerabilities/meltdown"], dirs.env);
    assert.equal(isolation.code, 0, isolation.stderr);
    assert.match(isolation.stdout, /\smitigations=off(\s|$)/, "the kernel was booted with mitigations=off");
    assert.doesNotMatch(isolation.stdout, /PTI/, "the kernel isolates no page tables");

    await assertIsolated(run.runId, run.ip, dirs.env);

    const exitCode = await cli(["ssh", run.runId, "--", "exit 7"], dirs.env);
    assert.equal(exitCode.code, 7, "ssh passes the remote exit code through");

    // The pinned host key: a known_hosts entry with a different key must be refused.
    const knownHosts = join(run.runDir, "keys", "known_hosts");
    const pinned = (await readFile(knownHosts, "utf8"))
      .trim()
      .split("\n")
      .map((line) => line.split(" ").slice(0, 2).join(" "));
    assert.deepEqual(
      pinned,
      ["ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519"].map((type) => `${run.runId} ${type}`),
      "every host key type the VM serves is pinned",
    );

    const bootBefore = (await cli(["ssh", run.runId, "--", "cat /proc/sys/kernel/random/boot_id"], dirs.env)).stdout.trim();
    assert.match(bootBefore, /^[0-9a-f-]{36}$/);
    await cli(["ssh", run.runId, "--", "sudo systemctl reboot"], dirs.env);
    const rebootStarted = Date.now();
    let bootAfter = bootBefore;
    while (Date.now() - rebootStarted < 8 * 60_000) {
      const probe = await cli(["ssh", run.runId, "--", "cat /proc/sys/kernel/random/boot_id"], dirs.env);
      if (probe.code === 0 && probe.stdout.trim() !== bootBefore) {
        bootAfter = probe.stdout.trim();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    process.stderr.write(`    measured: reboot to SSH ${Math.round((Date.now() - rebootStarted) / 1000)} s\n`);
    assert.notEqual(bootAfter, bootBefore, "the boot id changed: the VM really rebooted");

    // A guest kernel panic ends the harness's wait at once, named from the serial console
    // (a panicked guest stays "running" for libvirt: without this, the wait sat out its timeout).
    // It is the last thing this VM does before `down`.
    const outputs = JSON.parse(await readFile(join(run.runDir, "run.json"), "utf8")) as StackOutputs;
    const runner = new Runner();
    const machine = new Machine({
      name: "askari",
      target: sshTargetOf(outputs),
      runner,
      log: silentLog(),
      consoleLog: outputs.consoleLog,
      domainState: () => new Libvirt(runner, "qemu:///system").domainState(outputs.domain),
    });
    await machine.markNewBoot();
    await machine.execute("echo c > /proc/sysrq-trigger", { timeoutMs: 60_000 });
    const panicked: unknown = await machine.waitForSsh(10 * 60_000, { notBootId: bootAfter }).then(
      () => "SSH answered",
      (error: unknown) => error,
    );
    assert.ok(panicked instanceof GuestPanicError, `expected the wait to end on the panic, found: ${String(panicked)}`);
    assert.match(panicked.panic.panic, /^Kernel panic - not syncing: sysrq triggered crash/);
    assert.equal(isTcgTextPatchRace(panicked.panic), false, "not mistaken for QEMU's TCG race (which alone earns a reset)");
    assert.match(panicked.message, /the guest kernel panicked/);

    const down = await cli(["down", run.runId], dirs.env);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
    await assert.rejects(access(join(run.runDir, "keys")), "the run's private keys are gone");
    assert.ok((await readFile(join(run.runDir, "console.log"), "utf8")).length > 0, "the console log stays");
  });

  it("refuses --min-free-ram above what is free with exit 3, creating nothing", async () => {
    const result = await cli(["up", "askari", "--min-free-ram", "99999999"], dirs.env);
    assert.equal(result.code, 3, result.stderr.slice(-2000));
    assert.match(result.stderr, /this run needs 99999999 MiB \(--min-free-ram\)/);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("a harness killed with SIGKILL once its VM runs: reap leaves nothing, and never touches a decoy", async () => {
    // A decoy without the prefix (its name merely contains it): defined, never started.
    const decoy = "decoy-boma-it-net";
    execFileSync("sh", [
      "-c",
      `virsh -q -c qemu:///system net-define /dev/stdin <<'EOF'
<network><name>${decoy}</name><bridge name="decoy0"/></network>
EOF`,
    ]);
    try {
      const up = startCli(["up", "askari"], dirs.env);
      await up.waitForStderr(/created domain/, 120_000);
      // While the harness lives, its run is its own: the pid and the start it recorded match.
      const living = await cli(["reap", "--dry-run"], dirs.env);
      assert.equal(living.code, 0, living.stderr);
      assert.match(living.stdout, /spared +stack +boma-it-askari-\S+ +\(its harness \(pid \d+\) is still working on it\)/);
      assert.doesNotMatch(living.stdout, /would destroy +(stack|domain|network|nwfilter|pool|volume|ssh) /);
      up.kill("SIGKILL");
      await up.result;
      assert.notDeepEqual(await leftovers(dirs.stacksDir), [], "the killed harness left its VM behind");
      const dry = await cli(["reap", "--dry-run"], dirs.env);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /would destroy +stack +boma-it-askari-/);
      assert.notDeepEqual(await leftovers(dirs.stacksDir), [], "a dry run touches nothing");

      const reaped = await cli(["reap"], dirs.env);
      assert.equal(reaped.code, 0, reaped.stderr.slice(-2000));
      assert.match(reaped.stdout, /reaped \d+, spared 0, failed 0/);
      assert.deepEqual(await leftovers(dirs.stacksDir), []);
      const networks = execFileSync("virsh", ["-q", "-c", "qemu:///system", "net-list", "--all", "--name"], { encoding: "utf8" });
      assert.match(networks, new RegExp(`^${decoy}$`, "m"), "the decoy is untouched");
    } finally {
      execFileSync("virsh", ["-q", "-c", "qemu:///system", "net-undefine", decoy]);
    }
  });

  it("Ctrl-C during boot exits 130 and leaves nothing behind", async () => {
    const up = startCli(["up", "askari"], dirs.env);
    await up.waitForStderr(/created domain/, 120_000);
    up.kill("SIGINT");
    const result = await up.result;
    assert.equal(result.code, 130, result.stderr.slice(-2000));
    assert.match(result.stderr, /SIGINT received: cleaning up/);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("a VM that never becomes reachable fails with exit 4 and the console tail, leaving nothing", async () => {
    // A blank disk: the firmware finds nothing to boot, so no guest ever answers.
    const blank = join(dirs.runsDir, "..", "blank.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", blank, "1G"]);
    const profile = join(dirs.runsDir, "..", "blank.yml");
    const askari = await readFile(join(import.meta.dirname, "../../profiles/askari.yml"), "utf8");
    await writeFile(
      profile,
      askari
        .replace("repo: ../examples/boma-lab", `repo: ${join(import.meta.dirname, "../../examples/boma-lab")}`)
        .replace("overrides: ../overrides/askari.yml", `overrides: ${join(import.meta.dirname, "../../overrides/askari.yml")}`)
        .replace("image: debian-13-local", `image: file:${blank}`),
    );
    const result = await cli(["up", profile], { ...dirs.env, BOMA_IT_BOOT_TIMEOUT_S: "45" });
    assert.equal(result.code, 4, result.stderr.slice(-2000));
    assert.match(result.stderr, /timed out after \d+ s waiting for askari: (a DHCP lease|SSH)/);
    assert.match(result.stderr, /serial console/);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });
});

/**
 * ADR-025 invariants 3 and 7: a "LAN host" (10.20.0.1 and fd20::1, in a namespace of its own,
 * routed through the sandbox namespace by a veth pair) answers the sandbox, so the routes are
 * sound; the VM cannot reach it over IPv4 or IPv6, nor a service the control host runs on the
 * test network's gateway address (IPv4) or on the bridge (IPv6); of the "internet" (198.51.100.1)
 * it reaches what its egress allowlist names, through NAT, and nothing else; and its gateway's DNS.
 */
async function assertIsolated(runId: string, ip: string, env: Record<string, string>): Promise<void> {
  const gateway = ip.replace(/\.\d+$/, ".1");
  await withOutsideHost(LAN_HOST, async () => {
    assert.equal(await vmReaches(runId, LAN_HOST.address, 80, env), "blocked", "the VM cannot reach the LAN host");
    // IPv6: the bridge gets a ULA the sandbox routes to the LAN host's; the VM is given an address
    // and a route (as a role could), so only the harness's filter stands in the way.
    const bridge = /Bridge:\s+(\S+)/.exec(execFileSync("virsh", ["-q", "-c", "qemu:///system", "net-info", runId], { encoding: "utf8" }))![1]!;
    // libvirt switches IPv6 off on a network without IPv6: on here, so only the filter is left.
    execFileSync("sh", [
      "-c",
      `sysctl -qw net.ipv6.conf.${bridge}.disable_ipv6=0 && ip -6 addr add fd00:beef::1/64 dev ${bridge} nodad && sysctl -qw net.ipv6.conf.all.forwarding=1`,
    ]);
    await withListener(httpServer("fd00:beef::1", 8001), `http://[fd00:beef::1]:8001/`, async () => {
      await cli(["ssh", runId, "--", "sudo ip -6 addr add fd00:beef::10/64 dev eth0 nodad; sudo ip -6 route add fd20::/64 via fd00:beef::1"], env);
      assert.equal(await vmReaches(runId, "fd00:beef::1", 8001, env), "blocked", "the VM cannot reach the control host over IPv6");
      assert.equal(await vmReaches(runId, LAN_HOST.address6!, 80, env), "blocked", "the VM cannot reach the LAN host's ULA");
    });
  });
  // A service of the control host on the gateway's address: only DHCP and DNS are the VM's.
  await withListener(httpServer(gateway, 8000), `http://${gateway}:8000/`, async () => {
    assert.equal(await vmReaches(runId, gateway, 8000, env), "blocked", "the VM cannot reach a service on its gateway");
  });
  // Egress is an allowlist: an address no allowed name gave and a name off the list are refused
  // (and the attempt recorded); an allowed name resolves through the network's DNS and is reached
  // through NAT (the le tiers need that: the positive control of the --no-egress test).
  await withOutsideHost(
    INTERNET_HOST,
    async (requests) => {
      assert.equal(await vmReaches(runId, INTERNET_HOST.address, 80, env), "blocked", "an address no allowed name gave is refused");
      assert.deepEqual(await requests(), [], "the outside host saw nothing of it");
      assert.equal(await vmResolves(runId, "api.telemetry.example", env), "refused", "a name off the allowlist does not resolve");
      assert.equal(await vmResolves(runId, ALLOWED_NAME, env), `resolved ${INTERNET_HOST.address}`, "an allowed name resolves through the network's DNS");
      assert.equal(await vmReaches(runId, ALLOWED_NAME, 80, env), "reached", "and its address is reached through NAT");
      assert.deepEqual(blockedByFilter(runId), [`${INTERNET_HOST.address} tcp 80`], "the refused attempt is recorded by the filter");
    },
    { [ALLOWED_NAME]: INTERNET_HOST.address },
  );
  assert.equal(await vmReaches(runId, gateway, 53, env), "reached", "the VM reaches its gateway's DNS");
  assert.equal(await vmGetsDnsAnswer(runId, gateway, env), "dns-answer", "the VM gets DNS answers from its gateway");
}

/**
 * What a VM started from a saved first boot must show, as one booted for the run does: its clock
 * is now, it holds the run's address, it serves the host keys the run pinned, and cloud-init
 * knows it as the instance it first booted as (the saved run's, on a warm start), so the reboot
 * does not run its first-boot modules again and rotate those keys.
 */
async function assertGuestIdentity(run: { runId: string; ip: string; runDir: string }, firstBoot: FirstBoot, env: Record<string, string>): Promise<void> {
  const asked = Date.now();
  const facts = await cli(
    [
      "ssh",
      run.runId,
      "--",
      // One fact a line, each named: the key file ends without a newline.
      'date +%s; ip -4 -o addr show scope global; echo "hostkey $(cat /etc/ssh/ssh_host_ed25519_key.pub)"; echo "machine-id $(cat /etc/machine-id)"; echo "instance-id $(cat /var/lib/cloud/data/instance-id)"',
    ],
    env,
  );
  const answered = Date.now();
  assert.equal(facts.code, 0, facts.stderr);
  const [clock = "", ...rest] = facts.stdout.trim().split("\n");
  const guestNow = Number(clock) * 1000;
  // The guest's second lies between the ask and the answer (a second of rounding either side).
  assert.ok(
    guestNow >= asked - 2000 && guestNow <= answered + 1000,
    `the guest's clock is now: ${new Date(guestNow).toISOString()}, asked at ${new Date(asked).toISOString()}`,
  );
  const addresses = rest.filter((line) => / inet /.test(line));
  assert.ok(
    addresses.some((line) => line.includes(` inet ${run.ip}/`)),
    `the run's address ${run.ip} is the guest's: ${addresses.join(" | ")}`,
  );
  const fact = (name: string) => (rest.find((line) => line.startsWith(`${name} `)) ?? "").slice(name.length + 1).trim();
  const hostKey = fact("hostkey");
  const pinned = (await readFile(join(run.runDir, "keys", "known_hosts"), "utf8")).split("\n").find((line) => line.includes(" ssh-ed25519 "))!;
  assert.equal(hostKey.split(" ")[1], pinned.split(" ")[2], "the guest serves the ed25519 host key the run pinned");
  const [machineId, instanceId] = [fact("machine-id"), fact("instance-id")];
  assert.match(machineId, /^[0-9a-f]{32}$/, "a machine id of its own first boot");
  assert.equal(instanceId, firstBoot.kind === "warm" ? firstBoot.from : run.runId, "cloud-init's instance is the run whose first boot this is");
}
