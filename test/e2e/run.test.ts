/**
 * ADR-025 §4, the acceptance, for real: `npm run it -- askari-full` (askari with every kind of
 * check, the repo's verify playbook, idempotence and survival checks) reproduces the 2026-06-17
 * incident (RED breaks after the reboot) and shows the fix surviving it (GREEN), side by side
 * where the cores allow, exit 0. Then a scenario that must fail: exit 1, the VM kept, a complete diagnostics bundle, and
 * `down`.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { access, readFile, readdir, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { WITHHELD_TOKEN } from "../../orchestrator/ansible/certs.ts";
import { IDEMPOTENCE_CHECK } from "../../orchestrator/run/scenario.ts";
import {
  cli,
  fullSuiteOnly,
  startCli,
  DECOY_HOST,
  HOSTILE_REPO_SECRETS,
  hostileRepoCopy,
  INTERNET_HOST,
  leftovers,
  profileVariant,
  suiteDirs,
  treeHash,
  vmGetsDnsAnswer,
  vmReaches,
  withDecoyHost,
  withOutsideHost,
} from "./helpers.ts";

describe("apply → reboot → assert, for real", { timeout: 60 * 60_000 }, () => {
  const dirs = suiteDirs();

  it("askari (askari-full: written checks of every kind, the repo's verify playbook, idempotence, survival): RED is faithful exactly as expected, GREEN survives the reboot, exit 0, nothing left", async () => {
    const result = await cli(["run", "askari-full", "--json"], dirs.env);
    assert.equal(result.code, 0, result.stderr.slice(-4000));
    const report = JSON.parse(result.stdout) as RunReport;
    assert.equal(report.verdict, "pass");
    assert.equal(report.exitCode, 0);
    // The profile's tier, said in one line and recorded; internal needs nothing outside.
    assert.equal(report.certs, "internal");
    assert.match(result.stderr, /certs: internal \(the profile's default\)/);
    assert.deepEqual(
      report.scenarios.map((scenario) => scenario.certificate),
      [null, null],
    );
    assert.deepEqual(
      report.scenarios.map((scenario) => [scenario.name, scenario.expect, scenario.ok]),
      [
        ["red", "fail", true],
        ["green", "pass", true],
      ],
    );

    const [red, green] = report.scenarios;
    assert.equal(red!.faithful, true);
    // RED breaks exactly where the forward-chain bug cuts: three written checks and two of the
    // verify playbook's asserts; the site over TLS, the mesh and the rest hold.
    assert.match(red!.outcome, /broke after it exactly as expected/, red!.outcome);
    // The sandbox gives the suite a fresh cache, and these are its first VMs. One at a time: RED's
    // VM booted and saved its first boot, GREEN's started from it. Side by side: each booted and
    // saved a first boot of its own (a shape's two slots), for the next run's two VMs.
    assert.equal(red!.firstBoot?.kind, "cold", JSON.stringify(red!.firstBoot));
    assert.ok(red!.firstBoot?.kind === "cold" && red!.firstBoot.saved, "RED saved its first boot");
    if (report.scenariosAtOnce === 2) {
      assert.ok(green!.firstBoot?.kind === "cold" && green!.firstBoot.saved, JSON.stringify(green!.firstBoot));
      // Which VM takes which slot is whichever claims first.
      assert.deepEqual([red!.firstBoot.saved, green!.firstBoot.saved].map((saved) => /-2$/.test(saved)).sort(), [false, true], "each in a slot of its own");
    } else {
      assert.deepEqual(green!.firstBoot?.kind === "warm" && green!.firstBoot.from, red!.stack, JSON.stringify(green!.firstBoot));
      assert.ok(!green!.phases.some((phase) => phase.name === "DHCP lease"), "GREEN did not boot before its apply");
      assert.match(result.stderr, /starting from the first boot boma-it-askari-\d{8}-\d{6} saved at/);
    }
    assert.ok(
      red!.checks.filter((check) => check.stage === "pre-reboot").every((check) => check.ok),
      "RED passes before the reboot",
    );
    const redBroken = red!.checks.filter((check) => check.stage === "post-reboot" && !check.ok).map((check) => check.name);
    assert.ok(redBroken.includes("web through the published port"), `RED breaks the published port after the reboot (broken: ${redBroken})`);
    assert.ok(!redBroken.includes("docker active"), "Docker itself is up: only a reboot shows the outage");
    for (const scenario of [red!, green!]) {
      assert.equal(scenario.bootIds.length, 2);
      assert.notEqual(scenario.bootIds[0], scenario.bootIds[1], "a real reboot: the boot id changed");
      assert.ok(scenario.snapshotDiff, "a before/after snapshot diff");
    }
    assert.ok(
      green!.checks.every((check) => check.ok),
      `GREEN passes every check before and after: ${JSON.stringify(green!.checks.filter((check) => !check.ok))}`,
    );
    const written = (parse(await readFile(join(import.meta.dirname, "../../profiles/askari-full.yml"), "utf8")) as { checks: unknown[] }).checks.length;
    const writtenResults = green!.checks.filter(
      (check) => !check.name.startsWith("verify: ") && !check.name.startsWith("survives: ") && check.name !== IDEMPOTENCE_CHECK,
    );
    assert.equal(writtenResults.length, 2 * written, "each of the profile's checks, before and after the reboot");
    // The cert tier asserted, not only configured: Caddy's internal CA, read from the VM, trusted.
    const site = green!.checks.find((check) => check.name === "the site over TLS, its certificate from the internal tier" && check.stage === "post-reboot");
    assert.match(
      site!.detail,
      /^GET https:\/\/app\.test\.boma-lab\.example:443\/ \(at [\d.]+\): HTTP 200 .*issuer .*Caddy Local Authority.*; valid \d+ h \d+ min more$/,
      site!.detail,
    );
    // The verify playbook's asserts, before and after the reboot, each a check.
    for (const stage of ["pre-reboot", "post-reboot"] as const) {
      assert.deepEqual(
        green!.checks.filter((check) => check.stage === stage && check.name.startsWith("verify: ")).map((check) => check.name),
        [
          "verify: the forward chain accepts Docker's bridge",
          "verify: the containers reach each other",
          "verify: Docker, Caddy and the mesh run",
          "verify: the mesh listens on UDP 51820",
        ],
        stage,
      );
    }
    const redVerify = red!.checks.filter((check) => check.stage === "post-reboot" && check.name.startsWith("verify: ") && !check.ok);
    assert.match(
      redVerify.find((check) => check.name === "verify: the forward chain accepts Docker's bridge")?.detail ?? "",
      /^no accept for docker0 in the forward chain/,
    );
    // Idempotence: GREEN's second apply changed nothing (strict: a check); RED had none (its override).
    assert.deepEqual({ ...green!.idempotence!, seconds: 0 }, { mode: "strict", changed: [], seconds: 0 });
    assert.ok(green!.checks.some((check) => check.name === IDEMPOTENCE_CHECK && check.ok));
    assert.equal(red!.idempotence ?? null, null);
    // Survival took the https endpoint it found: Caddy's 443 answered a TLS handshake before and after.
    assert.ok(
      green!.checks.some((check) => check.name === "survives: TLS on port 443 (caddy.service) answers from the host" && check.ok),
      JSON.stringify(green!.survival),
    );
    // The reboot lost the live accept in RED: the ruleset diff shows it.
    assert.ok(
      red!.snapshotDiff!["nft ruleset"]!.removed.some((line) => /iifname "docker0" accept/.test(line)),
      JSON.stringify(red!.snapshotDiff),
    );

    assert.equal(report.kept, null);
    assert.equal(report.diagnostics, null);
    // Side by side where the cores hold both VMs (each line then says whose it is): under TCG on
    // fewer than 4 cores with fewer vCPUs each than the profile's 2, said in one line; on one
    // core one at a time.
    const cores = availableParallelism();
    const sideBySide = report.accel === "kvm" || cores >= 2;
    assert.equal(report.scenariosAtOnce, sideBySide ? 2 : 1);
    if (sideBySide) {
      assert.match(result.stderr, /^red {3}│ {3}✓ reboot \(/m);
      assert.match(result.stderr, /^green │ {3}✓ reboot \(/m);
      const fewer = report.accel === "tcg" && cores < 4;
      assert.deepEqual(report.vm, { vcpus: fewer ? Math.floor(cores / 2) : 2, memoryMiB: 3072, diskGiB: 20 });
      if (fewer)
        assert.match(result.stderr, /side by side with 1 vCPU per VM instead of the profile's 2: under software emulation 2 VMs of 2 vCPUs need 4 cores/);
    } else assert.match(result.stderr, /scenarios one at a time: under software emulation 2 VMs of 2 vCPUs need 4 cores, and this machine has \d+/);
    assert.notEqual(report.scenarios[0]!.stack, report.scenarios[1]!.stack);
    // The run's page is written with its report.
    assert.match(await readFile(join(report.runDir, "report.html"), "utf8"), /<title>PASS: askari-full<\/title>[\s\S]*GREEN survived the reboot/);
    const junit = await readFile(join(report.runDir, "junit.xml"), "utf8");
    assert.match(junit, /<testsuite name="askari-full\.red" tests="\d+" failures="0"/);
    // A case per check and stage, and the reboot's proof.
    assert.match(junit, new RegExp(`<testsuite name="askari-full\\.green" tests="${green!.checks.length + 1}" failures="0"`));
    assert.match(junit, /<testcase classname="askari\.green\.post-reboot" name="verify: the mesh listens on UDP 51820"/);
    process.stderr.write(
      `    measured: wall ${report.wallSeconds} s; ${report.scenarios.map((scenario) => `${scenario.name}: ${scenario.phases.map((phase) => `${phase.name} ${phase.seconds}`).join(", ")}`).join(" | ")}; readyLag ${report.readyLagSeconds.join(", ")}\n`,
    );
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it(
    "RED whose domain the host destroys during its reboot: exit 4, verdict error, never a pass; nothing left",
    { skip: fullSuiteOnly("a VM booted and applied for a reboot that is cut short") },
    async () => {
      const run = startCli(["run", "askari", "--scenario", "red", "--json"], dirs.env);
      await run.waitForStderr(/askari: rebooting \(boot id/, 20 * 60_000);
      const stack = execFileSync("virsh", ["-q", "-c", "qemu:///system", "list", "--name"], { encoding: "utf8" })
        .split("\n")
        .find((name) => name.startsWith("boma-it-askari-"));
      assert.ok(stack, "RED's VM runs");
      execFileSync("virsh", ["-q", "-c", "qemu:///system", "destroy", stack]);
      const result = await run.result;
      assert.equal(result.code, 4, result.stderr.slice(-3000));
      const report = JSON.parse(result.stdout) as RunReport;
      assert.equal(report.verdict, "error");
      assert.equal(report.scenarios[0]!.faithful, false, "RED is not called faithful");
      assert.match(report.error!.message, /the domain was shut off \(destroyed\) from the host: that says nothing about the change under test; run it again/);
      assert.match(await readFile(join(report.runDir, "run.log"), "utf8"), /rebooting/);
      assert.deepEqual(await leftovers(dirs.stacksDir), []);
    },
  );

  it("a hostile repo's scenario that must fail: Ansible reaches only the VM, the VM only its allowlist, the repo stays byte-identical, no secret is seen, exit 1, the VM kept, a complete diagnostics bundle, then down", async () => {
    // A sentinel secret in the overlay's vault (a role writes it on the VM and a check prints it)
    // and one in a secret overlay var (passed as an extra var): neither may appear in the run dir.
    const sentinel = "boma-sentinel-7f3a9c2e";
    const secretVar = "boma-secret-var-41d8e0";
    const vaultFile = join(dirs.runsDir, "..", "askari.vault.yml");
    const passwordFile = join(dirs.runsDir, "..", "vault-password");
    await writeFile(passwordFile, "e2e-vault-password\n", { mode: 0o600 });
    // The DNS provider's token is in the vault too; with --certs internal it must never reach the VM.
    const dnsToken = "boma-dns-token-5b1e77c0";
    await writeFile(vaultFile, `mesh_setup_key: ${sentinel}\ndns_provider_token: ${dnsToken}\n`);
    execFileSync("ansible-vault", ["encrypt", "--vault-password-file", passwordFile, vaultFile], { stdio: "ignore" });
    const overlay = join(dirs.runsDir, "..", "askari-overlay.yml");
    await writeFile(
      overlay,
      `${await readFile(join(import.meta.dirname, "../../overrides/askari.yml"), "utf8")}\nsecretVars: [api_token]\nvault: ${vaultFile}\n`.replace(
        "vars:\n",
        `vars:\n  api_token: ${secretVar}\n`,
      ),
    );

    // The repo as a real one is: its connection vars point at the real host (a decoy that records
    // every connection), its ansible.cfg turns host key checking off, it keeps secrets of its own.
    const hostileRepo = await hostileRepoCopy(join(dirs.runsDir, ".."), DECOY_HOST, passwordFile);
    // GREEN publishes the web service on another port than the profile checks: it fails before
    // the reboot (no reboot is spent on a test of what Ansible and the VM can reach).
    const profile = await profileVariant(dirs.runsDir, "askari", "askari-misport.yml", (yaml) =>
      yaml
        .replace(
          "green: { vars: { docker_host_forward_dropin: true } }",
          "green: { vars: { docker_host_forward_dropin: true, docker_host_published_port: 8081 } }",
        )
        .replace(/^overrides: .+$/m, `overrides: ${overlay}`)
        .replace(/^repo: .+$/m, `repo: ${hostileRepo}`)
        .replace(
          "checks:\n",
          `checks:\n  - { name: the setup key arrived, run: "cat /etc/boma-lab/mesh-setup-key" }\n  - { name: the DNS token is withheld, run: "cat /etc/boma-lab/dns-provider-token" }\n`,
        ),
    );
    // The repo byte for byte before the run: its fact cache, junit callback and plugins must leave it so.
    const repoBefore = await treeHash(hostileRepo);
    // The default allowlist: the API the repo calls from "localhost" (an outside host) is not on it.
    const result = await withOutsideHost(INTERNET_HOST, (apiRequests) =>
      withDecoyHost(DECOY_HOST, [22, 2222], async (connections) => {
        const run = await cli(["run", profile, "--scenario", "green", "--json"], { ...dirs.env, ANSIBLE_VAULT_PASSWORD_FILE: passwordFile });
        assert.deepEqual(await connections(), [], "the real host (the decoy) saw no connection");
        assert.deepEqual(await apiRequests(), [], "the API outside the allowlist saw no request");
        return run;
      }),
    );
    assert.equal(result.code, 1, result.stderr.slice(-4000));
    assert.equal(await treeHash(hostileRepo), repoBefore, "the repo is byte-identical: no facts cached, no junit file, no bytecode");
    assert.equal(
      await access("/etc/boma-lab-delegated").then(
        () => "on the controller",
        () => "not here",
      ),
      "not here",
      "the delegated task did not run on the controller",
    );
    assert.match(result.stderr, /\(NAT to the allowlist\)/, "the network allows only its allowlist");
    assert.match(
      result.stderr,
      new RegExp(`green: the change tried to reach ${INTERNET_HOST.address.replaceAll(".", "\\.")}:80: blocked`),
      "the blocked call is said",
    );
    const report = JSON.parse(result.stdout) as RunReport;
    assert.equal(report.egress.mode, "allowlist");
    assert.ok(
      report.egress.blocked.some((attempt) => attempt.address === INTERNET_HOST.address && attempt.port === 80 && attempt.scenario === "green"),
      JSON.stringify(report.egress),
    );
    assert.equal(report.verdict, "fail");
    assert.match(report.scenarios[0]!.outcome, /^GREEN failed before the reboot: .*web through the published port/);
    assert.match(result.stderr, /skipping the reboot: the scenario failed before it/);
    assert.ok(report.kept, "the VM is kept");
    assert.match(result.stderr, new RegExp(`npm run boma-it -- ssh ${report.kept!.run}`));

    const bundle = report.diagnostics!;
    const files = await readdir(bundle);
    for (const expected of [
      "nft-ruleset.txt",
      "docker-ps.txt",
      "ss-tlnp.txt",
      "journal.txt",
      "critical-chain.txt",
      "cloud-init.log",
      "domain.xml",
      "console.log",
      "INDEX.txt",
    ]) {
      assert.ok(files.includes(expected), `diagnostics has ${expected} (has: ${files.join(", ")})`);
    }
    assert.doesNotMatch(await readFile(join(bundle, "INDEX.txt"), "utf8"), /MISSED/);
    assert.match(await readFile(join(bundle, "nft-ruleset.txt"), "utf8"), /policy drop/);
    assert.match(await readFile(join(bundle, "docker-ps.txt"), "utf8"), /web/);

    const setupKey = report.scenarios[0]!.checks.find((check) => check.name === "the setup key arrived")!;
    assert.equal(setupKey.ok, true, "the vault's secret reached the VM");
    assert.match(setupKey.detail, /\[redacted\]/);
    const token = report.scenarios[0]!.checks.find((check) => check.name === "the DNS token is withheld" && check.stage === "pre-reboot")!;
    assert.match(token.detail, new RegExp(WITHHELD_TOKEN), "the VM got the placeholder, not the token");
    assert.equal(report.certs, "internal");
    for (const secret of [sentinel, secretVar, dnsToken, HOSTILE_REPO_SECRETS.vaulted, HOSTILE_REPO_SECRETS.inline]) {
      const found = spawnSync("grep", ["-r", "-l", "-F", secret, report.runDir], { encoding: "utf8" });
      assert.equal(found.status, 1, `${secret} appears in: ${found.stdout}`);
      assert.doesNotMatch(result.stdout + result.stderr, new RegExp(secret));
    }

    const kept = await cli(["ssh", report.kept!.run, "--", "systemctl is-active docker"], dirs.env);
    assert.equal(kept.stdout.trim(), "active", "the kept VM can be reached");
    const delegated = await cli(["ssh", report.kept!.run, "--", "cat /etc/boma-lab-delegated"], dirs.env);
    assert.equal(delegated.stdout.trim(), "delegated", "delegate_to: localhost ran on the VM");
    const synced = await cli(["ssh", report.kept!.run, "--", "cat /etc/boma-lab-synced/motd"], dirs.env);
    assert.equal(synced.stdout.trim(), "synced by rsync", "synchronize reached the VM through the run's connection");
    const facts = await cli(["ssh", report.kept!.run, "--", "cat /etc/boma-lab-facts"], dirs.env);
    assert.doesNotMatch(facts.stdout, /192\.0\.2\.77|askari-real/, "the real host's cached facts were not the VM's");
    // One line, as `ssh` hands it back (a trailing blank is not the VM's).
    assert.match(facts.stdout.trim(), /^10\.234\.\d+\.10 askari$/, "the VM's own facts were");
    // Off the allowlist, a host outside that answers the sandbox is out of the VM's reach; the VM
    // still has its own network's gateway and DNS.
    const ip = (JSON.parse((await cli(["status", "--json"], dirs.env)).stdout) as { runId: string; ip: string }[]).find(
      (run) => run.runId === report.kept!.run,
    )!.ip;
    await withOutsideHost(INTERNET_HOST, async () => {
      assert.equal(await vmReaches(report.kept!.run, INTERNET_HOST.address, 80, dirs.env), "blocked", "the VM cannot reach what its allowlist does not name");
    });
    assert.equal(await vmGetsDnsAnswer(report.kept!.run, ip.replace(/\.\d+$/, ".1"), dirs.env), "dns-answer", "its own network still works");
    const down = await cli(["down", report.kept!.run], dirs.env);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
    await access(join(report.runDir, "report.json"));
  });
});
