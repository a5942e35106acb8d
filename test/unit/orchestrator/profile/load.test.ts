import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { join } from "node:path";
import { Runner } from "../../../../infra/runner.ts";
import { BadInputError } from "../../../../orchestrator/errors.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import { PROJECT_ROOT } from "../../../../orchestrator/host/paths.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const GOOD = `host: askari
repo: repo
inventory: inventory/hosts.yml
playbook: site.yml
checks:
  - { name: docker active, unit: docker.service }
`;

const REPO = {
  "repo/inventory/hosts.yml": "all:\n  children:\n    docker_hosts:\n      hosts:\n        askari:\n          ansible_host: 10.0.0.1\n",
  "repo/site.yml": "- hosts: all\n  tasks: []\n",
};

async function problemsFor(profile: string, extra: Record<string, string> = {}): Promise<{ error: BadInputError; dir: string }> {
  const tree = await tempTree({ ...REPO, "p.yml": profile, ...extra });
  try {
    await loadProfile(join(tree.dir, "p.yml"), { profilesDir: join(tree.dir, "profiles"), overridesDir: join(tree.dir, "overrides") }, new Runner());
  } catch (error) {
    assert.ok(error instanceof BadInputError, `expected BadInputError, got ${String(error)}`);
    return { error, dir: tree.dir };
  } finally {
    await tree.remove();
  }
  assert.fail("the profile was accepted");
}

describe("loadProfile", () => {
  it("accepts a good profile and finds the host's groups", async () => {
    const tree = await tempTree({ ...REPO, "p.yml": GOOD });
    after(() => tree.remove());
    const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
    assert.equal(profile.document.host, "askari");
    assert.deepEqual(profile.inventoryHost.groups, ["all", "docker_hosts"]);
    assert.deepEqual(profile.document.vm, { vcpus: 2, memoryMiB: 3072, diskGiB: 20 });
    assert.equal(profile.document.certs, "internal");
    assert.equal(profile.overlay.file, undefined);
    assert.equal(profile.document.checks[0]?.within, 60, "a check may take a minute unless the profile says otherwise");
  });

  it("takes a check's own `within` and refuses one outside 1..3600 s", async () => {
    const tree = await tempTree({ ...REPO, "p.yml": GOOD.replace("unit: docker.service", "unit: docker.service, within: 15") });
    after(() => tree.remove());
    const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
    assert.equal(profile.document.checks[0]?.within, 15);
    const { error } = await problemsFor(GOOD.replace("unit: docker.service", "unit: docker.service, within: 0"));
    assert.match(error.message, /p\.yml:6:\d+: checks\[0\]\.within: expected a number at least 1, found 0$/);
  });

  it("names file, line, path, expected and found for a missing required field", async () => {
    const { error, dir } = await problemsFor(GOOD.replace("playbook: site.yml\n", ""));
    assert.equal(error.problems.length, 1);
    assert.equal(error.message, `${join(dir, "p.yml")}:1:1: playbook: missing required field; expected a string`);
  });

  it("reports a wrong type with what was found", async () => {
    const { error } = await problemsFor(GOOD.replace("unit: docker.service", "tcp: { port: http }"));
    assert.match(error.message, /p\.yml:6:\d+: checks\[0\]\.tcp\.port: expected a number, found "http"/);
  });

  it("rejects an unknown key and suggests the likely meaning", async () => {
    const { error } = await problemsFor(`${GOOD}scenaros: {}\n`);
    assert.match(error.message, /p\.yml:7:1: scenaros: unknown key "scenaros"; expected one of host, repo, .* \(did you mean "scenarios"\?\)/);
  });

  it("rejects an unknown key inside a check", async () => {
    const { error } = await problemsFor(GOOD.replace("unit: docker.service", "unit: docker.service, tiemout: 3"));
    assert.match(
      error.message,
      /checks\[0\]\.tiemout: unknown key "tiemout"; expected one of name, http, https, tcp, unit, listen, run, udp, dns, command, file, sysctl, nft, container, from, on, over, within$/,
    );
  });

  it("reports invalid YAML with line and column", async () => {
    const { error } = await problemsFor("host: askari\nrepo: [unclosed\n");
    assert.equal(error.problems.length >= 1, true);
    assert.match(error.message, /p\.yml:\d+:\d+: invalid YAML: /);
  });

  it("refuses a host that is not in the inventory, listing the hosts it has", async () => {
    const { error } = await problemsFor(GOOD.replace("host: askari", "host: simba"));
    assert.match(error.message, /p\.yml:1:7: host: host "simba" is not in the inventory .*hosts\.yml; expected one of askari/);
  });

  it("refuses a missing repo, inventory or playbook path", async () => {
    const repo = await problemsFor(GOOD.replace("repo: repo", "repo: nowhere"));
    assert.match(repo.error.message, /p\.yml:2:7: repo: expected a directory \(the infrastructure repo\), found nothing at .*nowhere/);
    const both = await problemsFor(GOOD.replace("inventory/hosts.yml", "inventory/none.yml").replace("site.yml", "none.yml"));
    assert.equal(both.error.problems.length, 2);
    assert.match(both.error.message, /inventory: expected an inventory \(a file or a folder\) inside repo, found nothing at .*none\.yml/);
    assert.match(both.error.message, /playbook: expected a playbook file inside repo, found nothing at .*none\.yml/);
  });

  it("takes a verify playbook inside the repo and idempotence, a scenario's over the profile's; RED may expect a verify task to fail only when there is a verify playbook", async () => {
    const withVerify = `${GOOD}verify: molecule/default/verify.yml
idempotence: true
scenarios:
  red: { idempotence: strict, expectFailing: ["verify: the port answers", docker active] }
`;
    const tree = await tempTree({ ...REPO, "repo/molecule/default/verify.yml": "- hosts: all\n  tasks: []\n", "p.yml": withVerify });
    after(() => tree.remove());
    const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
    assert.equal(profile.verifyFile, join(tree.dir, "repo/molecule/default/verify.yml"));
    assert.equal(profile.document.idempotence, true);
    assert.equal(profile.document.scenarios?.red?.idempotence, "strict");

    const missing = await problemsFor(withVerify);
    assert.match(missing.error.message, /p\.yml:7:9: verify: expected a playbook file inside repo, found nothing at .*molecule\/default\/verify\.yml/);
    const absolute = await problemsFor(withVerify.replace("verify: molecule/default/verify.yml", "verify: /etc/verify.yml"));
    assert.match(absolute.error.message, /verify: expected a playbook in the repo \(a relative \.yml or \.yaml path\)/);
    const noVerify = await problemsFor(withVerify.replace("verify: molecule/default/verify.yml\n", ""));
    assert.match(
      noVerify.error.message,
      /scenarios\.red\.expectFailing\[0\]: expected the name of one of the checks \(docker active\), found "verify: the port answers"/,
    );
    // Idempotence is decided before the reboot: RED failing it proves no reboot bug, so it is no expected failure.
    const idempotent = await problemsFor(withVerify.replace("docker active]", 'docker active, "idempotence: a second apply changes nothing"]'), {
      "repo/molecule/default/verify.yml": "- hosts: all\n  tasks: []\n",
    });
    assert.match(idempotent.error.message, /expectFailing\[2\]: .*found "idempotence: a second apply changes nothing"/);
    const wrong = await problemsFor(withVerify.replace("idempotence: true", "idempotence: always"), { "repo/molecule/default/verify.yml": "" });
    assert.match(wrong.error.message, /idempotence: /);
  });

  it("takes reboot kinds, one or a list, a scenario's over the profile's; an unknown kind or one twice is named with its place", async () => {
    const tree = await tempTree({ ...REPO, "p.yml": `${GOOD}reboot: [clean, power-loss, soft]\nscenarios:\n  red: { reboot: power-loss }\n` });
    after(() => tree.remove());
    const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
    assert.deepEqual(profile.document.reboot, ["clean", "power-loss", "soft"]);
    assert.deepEqual(profile.document.scenarios?.red?.reboot, ["power-loss"]);
    const plain = await tempTree({ ...REPO, "p.yml": GOOD });
    after(() => plain.remove());
    const defaults = await loadProfile(join(plain.dir, "p.yml"), { profilesDir: plain.dir, overridesDir: join(plain.dir, "overrides") }, new Runner());
    assert.deepEqual(defaults.document.reboot, ["clean"]);

    const unknown = await problemsFor(`${GOOD}reboot: [clean, power-cut]\n`);
    assert.match(unknown.error.message, /p\.yml:7:\d+: reboot\[1\]: expected one of "clean", "power-loss", "soft", found "power-cut"/);
    const scalar = await problemsFor(`${GOOD}reboot: hard\n`);
    assert.match(scalar.error.message, /p\.yml:7:\d+: reboot(\[0\])?: expected one of "clean", "power-loss", "soft", found "hard"/);
    const twice = await problemsFor(`${GOOD}reboot: [soft, soft]\n`);
    assert.match(twice.error.message, /reboot: .*expected each kind at most once/);
  });

  it("takes RED's expectFailing per kind of reboot (none: RED must survive it), naming only checks and kinds RED has", async () => {
    const perKind = `${GOOD}scenarios:\n  red: { reboot: [clean, power-loss], expectFailing: { clean: [], power-loss: [docker active] } }\n`;
    const tree = await tempTree({ ...REPO, "p.yml": perKind });
    after(() => tree.remove());
    const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
    assert.deepEqual(profile.document.scenarios?.red?.expectFailing, { clean: [], "power-loss": ["docker active"] });
    const unknownCheck = await problemsFor(perKind.replace("power-loss: [docker active]", "power-loss: [dokcer active]"));
    assert.match(
      unknownCheck.error.message,
      /scenarios\.red\.expectFailing\.power-loss\[0\]: expected the name of one of the checks \(docker active\), found "dokcer active"/,
    );
    const notRebooted = await problemsFor(perKind.replace("clean: []", "soft: []"));
    assert.match(
      notRebooted.error.message,
      /scenarios\.red\.expectFailing\.soft: expected one of the kinds RED reboots by \(clean, power-loss\), found "soft"/,
    );
    const unknownKind = await problemsFor(perKind.replace("clean: []", "hard: []"));
    assert.match(unknownKind.error.message, /scenarios\.red\.expectFailing\.hard: unknown key "hard"; expected one of clean, power-loss, soft/);
    const wrongShape = await problemsFor(perKind.replace("expectFailing: { clean: [], power-loss: [docker active] }", "expectFailing: docker active"));
    assert.match(wrongShape.error.message, /scenarios\.red\.expectFailing: expected a list or a mapping, found "docker active"/);
  });

  it("refuses an overlay that is not a mapping", async () => {
    const { error } = await problemsFor(`${GOOD}overrides: o.yml\n`, { "o.yml": "- just\n- a list\n" });
    assert.match(error.message, /o\.yml:1:1: expected a mapping, found a list of 2/);
  });

  it("refuses a missing explicit overlay", async () => {
    const { error } = await problemsFor(`${GOOD}overrides: missing.yml\n`);
    assert.match(error.message, /overrides: expected an overlay YAML file, found nothing at .*missing\.yml/);
  });

  it("refuses le-prod-wildcard as a profile default", async () => {
    const { error } = await problemsFor(`${GOOD}certs: le-prod-wildcard\n`);
    assert.match(error.message, /p\.yml:7:8: certs: le-prod-wildcard is refused as a profile default: it is only used when asked for on the command line/);
  });

  it("requires exactly one probe per check", async () => {
    const none = await problemsFor(GOOD.replace(", unit: docker.service", ""));
    assert.match(
      none.error.message,
      /checks\[0\]: expected exactly one probe \(one of http, https, tcp, unit, listen, run, udp, dns, command, file, sysctl, nft, container\), found none/,
    );
    const two = await problemsFor(GOOD.replace("unit: docker.service", 'unit: docker.service, run: "true"'));
    assert.match(two.error.message, /found unit and run/);
  });

  it("requires at least one check, unless survival checks are derived", async () => {
    const { error } = await problemsFor(GOOD.replace(/checks:\n.*\n/, "checks: []\n"));
    assert.match(error.message, /checks: expected at least one check \(or survival: true\), found none/);
  });

  it("refuses an enum value it does not know", async () => {
    const { error } = await problemsFor(`${GOOD}image: ubuntu\n`);
    assert.match(error.message, /image: expected one of debian-13-genericcloud, debian-13-local or file:\/absolute\/path\.qcow2/);
  });

  it("names a profile it cannot find, listing those it has", async () => {
    await assert.rejects(
      loadProfile("simba", { profilesDir: join(PROJECT_ROOT, "profiles"), overridesDir: join(PROJECT_ROOT, "overrides") }, new Runner()),
      /no profile named "simba" in .*profiles; expected one of askari/,
    );
  });
});
