import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { PROJECT_ROOT } from "../../../orchestrator/host/paths.ts";

/** The package names of the `apt-get install` command of the toolchain (the one with QEMU) in a shell text, continuations joined. */
function aptInstallPackages(text: string, where: string): string[] {
  const joined = text.replace(/\\\n\s*/g, " ");
  const line = joined.split("\n").find((candidate) => /\bapt-get install\b.*\bqemu-system-x86\b/.test(candidate));
  assert.ok(line, `${where} has an apt-get install line`);
  return line
    .slice(line.indexOf("apt-get install") + "apt-get install".length)
    .split(/\s+/)
    .filter((word) => word !== "" && !word.startsWith("-") && !word.startsWith(">"));
}

function ansiblePlaybook(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("ansible-playbook", args, { cwd: PROJECT_ROOT, timeout: 300_000, env: { ...process.env, ANSIBLE_NOCOLOR: "1" } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe("the control host's toolchain", () => {
  it("is one package list: the README's apt line, .ci/run's and the integration_test role's", async () => {
    const readme = aptInstallPackages(await readFile(join(PROJECT_ROOT, "README.md"), "utf8"), "README.md");
    const ci = aptInstallPackages(await readFile(join(PROJECT_ROOT, ".ci/run"), "utf8"), ".ci/run");
    const role = (
      parse(await readFile(join(PROJECT_ROOT, "setup/roles/integration_test/defaults/main.yml"), "utf8")) as { integration_test_packages: string[] }
    ).integration_test_packages;
    assert.deepEqual([...readme].sort(), [...role].sort(), "README.md against the role");
    assert.deepEqual([...ci].sort(), [...role].sort(), ".ci/run against the role");
    for (const needed of ["qemu-system-x86", "ovmf", "libvirt-daemon-system", "ansible-core", "git", "nftables", "python3", "openssl"]) {
      assert.ok(role.includes(needed), `${needed} is in the list`);
    }
  });

  it("is installed by a role whose playbook passes ansible-playbook --syntax-check", async () => {
    const result = await ansiblePlaybook(["-i", "localhost,", "-c", "local", "setup/control-host.yml", "--syntax-check"]);
    assert.equal(result.code, 0, result.stderr);
  });

  it("applies in check mode to this machine without a failure", { skip: process.getuid?.() !== 0 && "check mode of apt and user needs root" }, async () => {
    const result = await ansiblePlaybook(["-i", "localhost,", "-c", "local", "setup/control-host.yml", "--check"]);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0/);
    assert.match(result.stdout, /TASK \[integration_test : The Debian packages boma-it runs\]/);
  });
});
