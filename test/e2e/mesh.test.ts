/**
 * Several hosts at once, for real: `npm run it -- mesh`. askari and kazi, each on a 1-vCPU VM of
 * its own on one network, applied in one run of Ansible (each one's WireGuard peer is the other,
 * its public key read through hostvars, its endpoint the other VM's address). RED lets the mesh
 * port in through the running ruleset only: after both reboot, each proven by its own boot id,
 * kazi no longer reaches askari through the tunnel, and nothing else fails. GREEN writes the
 * accept as a drop-in and survives. Checks run on kazi, and from askari against kazi; kazi
 * resolves askari by its inventory name. Exit 0, nothing left. Then the dev loop on both hosts as
 * one run (up, reboot, apply, reboot, reset, check, ssh and console --host, down). Then an extra
 * link between them (`links:`): each end's address, checks over it before and after a reboot,
 * no way through it to the control host. In the full suite: eight VMs.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import { cli, fullSuiteOnly, httpServer, leftovers, suiteDirs, withListener } from "./helpers.ts";

const MESH_CHECK = "kazi reaches askari through the mesh";

describe(
  "several hosts at once, for real",
  { timeout: 150 * 60_000, skip: fullSuiteOnly("two VMs per scenario, RED and GREEN, two for the dev loop and two for the link") },
  () => {
    const dirs = suiteDirs();

    it("mesh: RED's mesh accept is lost with the reboot of both hosts and only the tunnel breaks; GREEN survives; each VM proven; exit 0, nothing left", async () => {
      const result = await cli(["run", "mesh", "--json"], dirs.env);
      assert.equal(result.code, 0, result.stderr.slice(-4000));
      const report = JSON.parse(result.stdout) as RunReport;
      assert.equal(report.verdict, "pass");
      const [red, green] = report.scenarios;

      assert.equal(red!.ok, true, red!.outcome);
      assert.match(red!.outcome, new RegExp(`RED is faithful: it passed before the reboot and broke after it exactly as expected \\(${MESH_CHECK}\\)`));
      assert.deepEqual(
        red!.checks.filter((check) => !check.ok).map((check) => [check.name, check.stage]),
        [[MESH_CHECK, "post-reboot"]],
      );
      assert.equal(green!.ok, true, green!.outcome);
      assert.ok(
        green!.checks.every((check) => check.ok),
        JSON.stringify(green!.checks.filter((check) => !check.ok)),
      );

      for (const scenario of [red!, green!]) {
        // Each VM on the one network, each rebooted and proven by its own boot id.
        assert.deepEqual(
          scenario.vms?.map((vm) => vm.host),
          ["askari", "kazi"],
        );
        const [askari, kazi] = scenario.vms!;
        assert.equal(askari!.ip.split(".").slice(0, 3).join("."), kazi!.ip.split(".").slice(0, 3).join("."), "one subnet");
        for (const vm of scenario.vms!) {
          assert.equal(vm.bootIds.length, 2, `${scenario.name} ${vm.host} rebooted`);
          assert.notEqual(vm.bootIds[0], vm.bootIds[1], `${scenario.name} ${vm.host}: a new boot`);
        }
        assert.deepEqual(scenario.bootIds, askari!.bootIds, "the scenario's boot ids are its first host's");
        const from = scenario.checks.find((check) => check.name === "kazi's site from askari" && check.stage === "pre-reboot")!;
        assert.match(from.detail, new RegExp(`GET http://${kazi!.ip.replace(/\./g, "\\.")}:8081/ \\(from askari\\)`));
        const resolved = scenario.checks.find((check) => check.name === "kazi resolves askari by its inventory name" && check.stage === "post-reboot")!;
        assert.ok(resolved.ok && resolved.detail.includes(askari!.ip), resolved.detail);
      }
      assert.equal(report.vm?.vcpus, 1, "two VMs on two cores: one vCPU each");
      // The VMs' traffic to each other is theirs, never egress the allowlist refuses.
      const subnets = new Set(report.scenarios.flatMap((scenario) => scenario.vms!.map((vm) => vm.ip.split(".").slice(0, 3).join("."))));
      assert.deepEqual(
        report.egress.blocked.filter((attempt) => attempt.address !== undefined && subnets.has(attempt.address.split(".").slice(0, 3).join("."))),
        [],
      );
      process.stderr.write(
        `    measured: wall ${report.wallSeconds} s; ${report.scenarios.map((scenario) => `${scenario.name}: ${scenario.phases.map((phase) => `${phase.name} ${phase.seconds}`).join(", ")}`).join(" | ")}\n`,
      );
      assert.deepEqual(await leftovers(dirs.stacksDir), []);
    });
    it("the dev loop on both hosts as one run: up mesh (RED) → reboot breaks the mesh → apply the fix → reboot holds → reset → check → ssh and console --host → down, nothing left", async () => {
      const up = await cli(["up", "mesh", "--scenario", "red", "--json"], dirs.env);
      assert.equal(up.code, 0, up.stderr.slice(-3000));
      const run = JSON.parse(up.stdout) as { runId: string; vms: { host: string; runId: string }[] };
      assert.deepEqual(
        run.vms.map((vm) => vm.host),
        ["askari", "kazi"],
      );
      const kazi = run.vms[1]!.runId;
      const hostname = await cli(["ssh", run.runId, "--host", "kazi", "--", "hostname"], dirs.env);
      assert.equal(hostname.stdout.trim(), "kazi");
      const status = JSON.parse((await cli(["status", "--json"], dirs.env)).stdout) as { runId: string; partOf?: string }[];
      assert.deepEqual(
        status.map((entry) => [entry.runId, entry.partOf]).sort(),
        [
          [run.runId, run.runId],
          [kazi, run.runId],
        ].sort(),
      );

      // Named by kazi's VM, the verb works on the run as a whole.
      const broken = await cli(["reboot", kazi, "--json"], dirs.env);
      assert.equal(broken.code, 1, broken.stderr.slice(-3000));
      const brokenResult = JSON.parse(broken.stdout) as { message: string; details: { vms: { host: string; bootIds: string[] }[] } };
      assert.match(brokenResult.message, new RegExp(`1 of \\d+ checks fail after it: ${MESH_CHECK}$`));
      for (const vm of brokenResult.details.vms) assert.notEqual(vm.bootIds[0], vm.bootIds[1], `${vm.host} rebooted`);

      const fixed = await cli(["apply", run.runId, "-e", "mesh_firewall=drop-in", "--json"], dirs.env);
      assert.equal(fixed.code, 0, fixed.stderr.slice(-3000));
      const survived = await cli(["reboot", run.runId, "--json"], dirs.env);
      assert.equal(survived.code, 0, survived.stderr.slice(-3000));
      assert.match((JSON.parse(survived.stdout) as { message: string }).message, /and every check passes/);

      const reset = await cli(["reset", run.runId, "--json"], dirs.env);
      assert.equal(reset.code, 0, reset.stderr.slice(-3000));
      const resetResult = JSON.parse(reset.stdout) as { details: { vms: { host: string; sameBoot: boolean }[] } };
      assert.deepEqual(
        resetResult.details.vms.map((vm) => [vm.host, vm.sameBoot]),
        [
          ["askari", true],
          ["kazi", true],
        ],
        "each VM back to its own first boot's state",
      );
      // Back before any apply: nothing of the mesh's interface is there.
      const clean = await cli(["ssh", run.runId, "--host", "kazi", "--", "test -e /etc/wireguard/wg0.conf && echo applied || echo clean"], dirs.env);
      assert.equal(clean.stdout.trim(), "clean");
      const consoleOut = await cli(["console", run.runId, "--host", "kazi", "--json"], dirs.env);
      assert.equal(consoleOut.code, 0, consoleOut.stderr.slice(-2000));
      assert.match(consoleOut.stdout, new RegExp(kazi));

      const down = await cli(["down", kazi], dirs.env);
      assert.equal(down.code, 0, down.stderr.slice(-2000));
      assert.deepEqual(await leftovers(dirs.stacksDir), []);
    });

    it("an extra link between askari and kazi: an address of each on it, checks over it before and after a reboot, and no way through it to the control host", async () => {
      // The example repo with a playbook that only reaches each host: the link is the subject.
      const repo = join(dirs.runsDir, "links-repo");
      await cp(join(PROJECT_ROOT, "examples", "boma-lab"), repo, { recursive: true });
      await writeFile(join(repo, "links.yml"), "- hosts: mesh\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n");
      const profile = join(dirs.runsDir, "links.yml");
      await writeFile(
        profile,
        [
          "hosts: [askari, kazi]",
          `repo: ${repo}`,
          "inventory: inventory/hosts.yml",
          "playbook: links.yml",
          "vm: { vcpus: 1, memoryMiB: 1536, diskGiB: 20 }",
          "image: debian-13-local",
          "links: [[askari, kazi]]",
          "checks:",
          "  - { name: kazi over the link from askari, on: kazi, from: askari, over: link, tcp: { port: 22 }, within: 30 }",
          "  - { name: askari resolves kazi's end of the link, dns: { name: kazi-link1 }, within: 30 }",
          "",
        ].join("\n"),
      );
      const up = await cli(["up", profile, "--json"], dirs.env);
      assert.equal(up.code, 0, up.stderr.slice(-3000));
      const run = JSON.parse(up.stdout) as { runId: string; vms: { host: string; runId: string; ip: string }[] };
      const [askari, kazi] = run.vms;
      assert.match(
        up.stderr,
        /link link1 on 10\.234\.\d+\.0\/24: askari 10\.234\.\d+\.10 \(askari-link1\) and kazi 10\.234\.\d+\.11 \(kazi-link1\), nothing else on it/,
      );
      const linkPrefix = /link link1 on (10\.234\.\d+)\.0\/24/.exec(up.stderr)![1]!;
      assert.notEqual(linkPrefix, askari!.ip.split(".").slice(0, 3).join("."), "the link's subnet is not the run network's");

      // In the guest: the link's interface with its fixed address, the other end by its link name.
      const inGuest = await cli(["ssh", run.runId, "--", "ip -4 -o addr show link1; getent hosts kazi-link1"], dirs.env);
      assert.equal(inGuest.code, 0, inGuest.stderr);
      assert.match(inGuest.stdout, new RegExp(`link1\\s+inet ${linkPrefix.replace(/\./g, "\\.")}\\.10/24`));
      assert.match(inGuest.stdout, new RegExp(`^${linkPrefix.replace(/\./g, "\\.")}\\.11\\s+kazi-link1`, "m"));

      const checked = await cli(["check", run.runId, "--json"], dirs.env);
      assert.equal(checked.code, 0, checked.stdout + checked.stderr.slice(-3000));
      assert.match((JSON.parse(checked.stdout) as { message: string }).message, /every check passes \(2\)/);

      // Around the filters to the control host, counted where the control host's IPv4 first sees
      // a packet (prerouting; bridged packets pass there too): a route on askari sends a
      // connection to an address of the control host out of link1 (the control host would answer
      // ARP for it there), and out of a VLAN 0 interface on eth0 to the gateway's MAC (Linux takes
      // such a frame as untagged). Neither may arrive; the same way to kazi does (the count works).
      const controlHost = "10.20.77.254";
      const counted = "e2e-link-probe";
      const probe = Buffer.from(
        [
          "import json, socket, subprocess, sys",
          "target, port, way = sys.argv[1], int(sys.argv[2]), sys.argv[3]",
          "ip = lambda *words: subprocess.run(['ip', *words], capture_output=True, text=True, check=True).stdout",
          "if way == 'vlan0':",
          "    own = ip('-4', '-o', 'addr', 'show', 'eth0').split()[3].split('/')[0]",
          "    gateway = ip('-4', 'route', 'show', 'default').split()[2]",
          "    gateway_mac = json.loads(ip('-j', 'neigh', 'show', gateway))[0]['lladdr']",
          "    ip('link', 'add', 'link', 'eth0', 'name', 'vlan0', 'type', 'vlan', 'id', '0')",
          "    ip('link', 'set', 'vlan0', 'up')",
          "    ip('route', 'replace', target + '/32', 'dev', 'vlan0', 'src', own)",
          "    ip('neigh', 'replace', target, 'lladdr', gateway_mac, 'dev', 'vlan0')",
          "else:",
          "    ip('route', 'replace', target + '/32', 'dev', 'link1')",
          "try:",
          "    socket.create_connection((target, port), timeout=4).close()",
          "    print('connected')",
          "except OSError as error:",
          "    print('no connection:', error)",
          "finally:",
          "    if way == 'vlan0':",
          "        subprocess.run(['ip', 'link', 'del', 'vlan0'])",
          "    else:",
          "        subprocess.run(['ip', 'route', 'del', target + '/32', 'dev', 'link1'])",
        ].join("\n"),
      ).toString("base64");
      const around = async (target: string, port: number, way: "link1" | "vlan0") => {
        const result = await cli(["ssh", run.runId, "--", `echo ${probe} | base64 -d | sudo python3 - ${target} ${port} ${way}`], dirs.env);
        return `${result.stdout.trim()}${result.code === 0 ? "" : ` (exit ${result.code}: ${result.stderr.trim().slice(-400)})`}`;
      };
      const packets = (rule: string) => {
        const listed = execFileSync("nft", ["list", "chain", "inet", counted, "prerouting"], { encoding: "utf8" });
        return Number(new RegExp(`counter packets (\\d+) bytes \\d+ comment "${rule}"`).exec(listed)?.[1] ?? "-1");
      };
      execFileSync("nft", ["-f", "-"], {
        input: `table inet ${counted} {
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    ip daddr ${linkPrefix}.11 tcp dport 22 counter comment "to-kazi"
    iifname != "lo" ip daddr ${controlHost} counter comment "to-control-host"
  }
}
`,
      });
      execFileSync("ip", ["addr", "add", `${controlHost}/32`, "dev", "lo"]);
      try {
        assert.equal(await around(`${linkPrefix}.11`, 22, "link1"), "connected", "the probe's way works to kazi");
        assert.ok(packets("to-kazi") > 0, "the count sees what crosses the link");
        await withListener(httpServer(controlHost, 8099), `http://${controlHost}:8099/`, async () => {
          assert.match(await around(controlHost, 8099, "link1"), /^no connection: timed out$/);
          assert.match(await around(controlHost, 8099, "vlan0"), /^no connection: timed out$/);
        });
        assert.equal(packets("to-control-host"), 0, "nothing reached the control host through the link or a VLAN");
      } finally {
        execFileSync("ip", ["addr", "del", `${controlHost}/32`, "dev", "lo"]);
        execFileSync("nft", ["delete", "table", "inet", counted]);
      }

      // The link comes back with each VM's boot: the checks over it pass after the reboot.
      const rebooted = await cli(["reboot", run.runId, "--json"], dirs.env);
      assert.equal(rebooted.code, 0, rebooted.stdout + rebooted.stderr.slice(-3000));
      assert.match((JSON.parse(rebooted.stdout) as { message: string }).message, /and every check passes/);

      const down = await cli(["down", kazi!.runId], dirs.env);
      assert.equal(down.code, 0, down.stderr.slice(-2000));
      assert.deepEqual(await leftovers(dirs.stacksDir), []);
    });
  },
);
