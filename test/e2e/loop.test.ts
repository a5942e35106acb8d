/**
 * The dev loop on one real VM: `up` of askari without the fix (RED's vars) and without egress
 * (ADR-025's deliberate no-egress scenario: nothing outside is reached), `reboot` (exit 1, the
 * broken check named), `apply -e` with the fix, `reboot` (exit 0), `reset` (back to right after
 * cloud-init: the fix's drop-in gone, the first boot's boot id, no boot), `check` on the reset VM,
 * `console`, `status` from another checkout's stacks dir listing the run, then an apply whose
 * hardening drops the ecdsa host key (re-pinned, `ssh` still works), `down`, nothing left. On the
 * fresh VM first: what a role sees on genericcloud holds (test/e2e/genericcloud.ts; vm.test.ts
 * checks it too, on a VM nothing was applied to). In the full suite: CI's time cannot hold it.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { join } from "node:path";
import { assertGenericcloudFacts } from "./genericcloud.ts";
import { cli, fullSuiteOnly, INTERNET_HOST, leftovers, suiteDirs, vmReaches, withOutsideHost } from "./helpers.ts";

interface VerbJson {
  verb: string;
  runId: string;
  verdict: "pass" | "fail" | "error";
  message: string;
  exitCode: number;
  dir: string;
  details: Record<string, unknown>;
}

describe("the dev loop on a kept VM, for real", { timeout: 60 * 60_000, skip: fullSuiteOnly("one VM through three applies and two reboots") }, () => {
  const dirs = suiteDirs();

  it("up (unfixed) → reboot fails → apply -e the fix → reboot passes → reset → check → console → status from elsewhere → down", async () => {
    // ADR-025's deliberate no-egress scenario: the dev loop needs nothing outside, so its VM gets nothing.
    const up = await cli(["up", "askari", "--scenario", "red", "--no-egress", "--json"], dirs.env);
    assert.equal(up.code, 0, up.stderr.slice(-3000));
    assert.match(up.stderr, /certs: internal \(forced by --no-egress: ACME needs egress\)/);
    assert.match(up.stderr, /\(no egress\)/, "the network was built without forwarding");
    const run = JSON.parse(up.stdout) as { runId: string; runDir: string };
    await withOutsideHost(INTERNET_HOST, async () => {
      assert.equal(await vmReaches(run.runId, INTERNET_HOST.address, 80, dirs.env), "blocked", "without egress the VM reaches nothing outside its network");
    });
    const firstBoot = (await cli(["ssh", run.runId, "--", "cat /proc/sys/kernel/random/boot_id"], dirs.env)).stdout.trim();

    await assertGenericcloudFacts(run.runId, dirs.env);

    const broken = await cli(["reboot", run.runId, "--json"], dirs.env);
    assert.equal(broken.code, 1, broken.stderr.slice(-3000));
    const brokenResult = JSON.parse(broken.stdout) as VerbJson;
    assert.match(brokenResult.message, /^rebooted \(boot id \w{8}… → \w{8}…[^)]*\), and \d+ of \d+ checks fail after it: .*web through the published port/);

    const fixed = await cli(["apply", run.runId, "-e", "docker_host_forward_dropin=true", "--json"], dirs.env);
    assert.equal(fixed.code, 0, fixed.stderr.slice(-3000));
    assert.match((JSON.parse(fixed.stdout) as VerbJson).message, /^applied .*site\.yml: askari : ok=\d+/);

    const survived = await cli(["reboot", run.runId, "--json"], dirs.env);
    assert.equal(survived.code, 0, survived.stderr.slice(-3000));
    assert.match((JSON.parse(survived.stdout) as VerbJson).message, /and every check passes/);

    const started = Date.now();
    const reset = await cli(["reset", run.runId, "--json"], dirs.env);
    assert.equal(reset.code, 0, reset.stderr.slice(-3000));
    const resetResult = JSON.parse(reset.stdout) as VerbJson;
    process.stderr.write(`    measured: reset ${Math.round((Date.now() - started) / 1000)} s\n`);
    assert.equal(resetResult.details.bootId, firstBoot, "the first boot's state: no boot was needed");
    const dropIn = await cli(
      [
        "ssh",
        run.runId,
        "--",
        "test -e /etc/nftables.d/docker-forward.nft && echo present || echo gone; test -e /etc/nftables.conf && grep -q 'policy drop' /etc/nftables.conf && echo applied || echo clean",
      ],
      dirs.env,
    );
    assert.deepEqual(dropIn.stdout.trim().split("\n"), ["gone", "clean"], "before any apply: neither the fix nor the base role is there");

    const check = await cli(["check", run.runId, "--json"], dirs.env);
    assert.equal(check.code, 1, "nothing applied: the profile's checks fail");
    assert.match((JSON.parse(check.stdout) as VerbJson).message, /checks fail/);

    const consoleOut = await cli(["console", run.runId], dirs.env);
    assert.equal(consoleOut.code, 0, consoleOut.stderr);
    assert.match(consoleOut.stdout, /Linux version/, "the current boot's console");
    const all = await cli(["console", run.runId, "--all", "--json"], dirs.env);
    // A VM started from a saved first boot has no first boot on its console.
    const { firstBoot: began } = JSON.parse(await readFile(join(run.runDir, "up.json"), "utf8")) as { firstBoot: { kind: string } };
    assert.ok((JSON.parse(all.stdout) as { boots: number }).boots >= (began.kind === "warm" ? 2 : 3), `the first boot (${began.kind}) and two reboots`);

    // Another checkout: its own stacks dir has no ledger of this run; libvirt and the run's record tell.
    const elsewhere = await cli(["status", "--json"], { ...dirs.env, BOMA_IT_STACKS_DIR: join(dirs.stacksDir, "..", "other-checkout") });
    const listed = (JSON.parse(elsewhere.stdout) as { runId: string; stackLives: string; lastAction: string }[]).find((entry) => entry.runId === run.runId);
    assert.ok(listed, elsewhere.stdout);
    assert.equal(listed.stackLives, dirs.stacksDir);
    assert.match(listed.lastAction, /^check \(fail, /);

    // A hardening that keeps rsa and ed25519 host keys only: the harness follows, `ssh` still gets in.
    const hardened = await cli(["apply", run.runId, "-e", '{"base_ssh_host_key_types": ["rsa", "ed25519"]}', "--json"], dirs.env);
    assert.equal(hardened.code, 0, hardened.stderr.slice(-3000));
    const hardenedResult = JSON.parse(hardened.stdout) as VerbJson;
    assert.deepEqual((hardenedResult.details.hostKeyChange as { removed: string[] } | undefined)?.removed, ["ecdsa-sha2-nistp256"], hardened.stdout);
    const keysNow = await cli(["ssh", run.runId, "--", "ls /etc/ssh/ | grep '^ssh_host_.*_key$' | sort | tr '\\n' ' '"], dirs.env);
    assert.equal(keysNow.code, 0, keysNow.stderr);
    assert.equal(keysNow.stdout.trim(), "ssh_host_ed25519_key ssh_host_rsa_key");

    const down = await cli(["down", run.runId], { ...dirs.env, BOMA_IT_STACKS_DIR: join(dirs.stacksDir, "..", "other-checkout") });
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await leftovers(dirs.stacksDir), [], "the reset point went with the run");
  });
});
