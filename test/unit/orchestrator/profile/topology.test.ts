import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { join } from "node:path";
import { Runner } from "../../../../infra/runner.ts";
import { BadInputError } from "../../../../orchestrator/errors.ts";
import { loadProfile, profileForHost } from "../../../../orchestrator/profile/load.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const INVENTORY = `all:
  children:
    docker_hosts:
      hosts:
        askari:
          ansible_host: 10.0.0.1
    web_hosts:
      hosts:
        kazi:
          ansible_host: 10.0.0.2
    mesh:
      hosts:
        askari:
        kazi:
    lonely:
      hosts:
        askari:
`;

const REPO = { "repo/inventory/hosts.yml": INVENTORY, "repo/site.yml": "- hosts: all\n  tasks: []\n" };

const MESH = `hosts: [askari, kazi]
repo: repo
inventory: inventory/hosts.yml
playbook: site.yml
vm: { vcpus: 1, memoryMiB: 2048 }
vmFor: { kazi: { memoryMiB: 1024 } }
checks:
  - { name: mesh listens, udp: { port: 51820 } }
  - { name: kazi's site from askari, on: kazi, from: askari, tcp: { port: 8081 } }
  - { name: kazi's site, on: kazi, tcp: { port: 8081 } }
`;

async function load(profile: string, extra: Record<string, string> = {}) {
  const tree = await tempTree({ ...REPO, "p.yml": profile, ...extra });
  after(() => tree.remove());
  return loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
}

async function problemsOf(profile: string, extra: Record<string, string> = {}): Promise<string> {
  try {
    await load(profile, extra);
  } catch (error) {
    assert.ok(error instanceof BadInputError, `expected BadInputError, got ${String(error)}`);
    return error.message;
  }
  assert.fail("the profile was accepted");
}

describe("a profile of several hosts", () => {
  it("loads each host with its inventory host, its own overlay and its VM's shape; the first is the run's host", async () => {
    const profile = await load(MESH, {
      "overrides/askari.yml": "vars: { stub: askari's }\n",
      "overrides/kazi.yml": "vars: { stub: kazi's, token: t0ken }\nsecretVars: [token]\n",
    });
    assert.equal(profile.document.host, "askari");
    assert.deepEqual(
      profile.topology?.map((host) => [host.name, host.inventoryHost.groups, host.overlay.document.vars.stub, host.vm]),
      [
        ["askari", ["all", "docker_hosts", "lonely", "mesh"], "askari's", { vcpus: 1, memoryMiB: 2048, diskGiB: 20 }],
        ["kazi", ["all", "mesh", "web_hosts"], "kazi's", { vcpus: 1, memoryMiB: 1024, diskGiB: 20 }],
      ],
    );
    assert.equal(profile.overlay.document.vars.stub, "askari's", "the profile's own overlay is the first host's");
    const kazi = profileForHost(profile, "kazi");
    assert.equal(kazi.document.host, "kazi");
    assert.deepEqual(kazi.document.vm, { vcpus: 1, memoryMiB: 1024, diskGiB: 20 });
    assert.deepEqual(kazi.overlay.document.secretVars, ["token"]);
    assert.equal(kazi.topology, undefined, "one host's view is one host's profile");
  });

  it("takes every host of a group at once, in the inventory's order", async () => {
    const profile = await load(MESH.replace("hosts: [askari, kazi]", "hosts: { group: mesh }"));
    assert.deepEqual(
      profile.topology?.map((host) => host.name),
      ["askari", "kazi"],
    );
  });

  it("refuses a group it does not have, or one of fewer than two hosts", async () => {
    assert.match(
      await problemsOf(MESH.replace("hosts: [askari, kazi]", "hosts: { group: mesch }")),
      /hosts\.group: group "mesch" is not in the inventory .*\(did you mean "mesh"\?\)/,
    );
    assert.match(
      await problemsOf(MESH.replace("hosts: [askari, kazi]", "hosts: { group: lonely }")),
      /hosts\.group: expected a group of 2 to 16 hosts \(one host: host:\), found 1 in lonely \(askari\)/,
    );
  });

  it("names host or hosts: one of them, never both or neither", async () => {
    assert.match(await problemsOf(`host: askari\n${MESH}`), /host(s)?: expected host .* or hosts .*, found both/);
    assert.match(await problemsOf(MESH.replace("hosts: [askari, kazi]\n", "")), /host: expected host .* or hosts .*, found neither/);
  });

  it("refuses a host the inventory lacks, a host named twice, and an overrides file for several", async () => {
    assert.match(
      await problemsOf(MESH.replace("[askari, kazi]", "[askari, kazi, kazzi]")),
      /hosts: host "kazzi" is not in the inventory .*\(did you mean "kazi"\?\)/,
    );
    assert.match(await problemsOf(MESH.replace("[askari, kazi]", "[askari, askari]")), /hosts: expected each host at most once/);
    assert.match(await problemsOf(`${MESH}overrides: o.yml\n`), /overrides: expected no overrides with hosts: each host's overlay is overrides\/<host>\.yml/);
  });

  it("checks on: and from: against the hosts: from another host only for checks that go to an address", async () => {
    assert.match(
      await problemsOf(MESH.replace("on: kazi, from: askari", "on: kazzi, from: askari")),
      /checks\[1\]\.on: expected one of the hosts \(askari, kazi\), found "kazzi"/,
    );
    assert.match(
      await problemsOf(MESH.replace("on: kazi, from: askari", "on: kazi, from: ubongo")),
      /checks\[1\]\.from: expected "controller" or one of the hosts \(askari, kazi\), found "ubongo"/,
    );
    assert.match(
      await problemsOf(MESH.replace("on: kazi, tcp: { port: 8081 }", "on: kazi, from: askari, unit: kazi-web.service")),
      /checks\[2\]\.from: expected kazi \(a unit check runs on the host it is about; from another host only http, https, tcp\), found "askari"/,
    );
    // A group's hosts are known once the inventory is read: the same check then.
    assert.match(
      await problemsOf(MESH.replace("hosts: [askari, kazi]", "hosts: { group: mesh }").replace("on: kazi, from: askari", "on: kazi, from: ubongo")),
      /checks\[1\]\.from: expected "controller" or one of the hosts \(askari, kazi\), found "ubongo"/,
    );
  });

  it("takes rebootOrder all, rolling or a list of its hosts, a scenario's over the profile's; vmFor and rebootOrder only with several", async () => {
    const rolling = await load(`${MESH}rebootOrder: rolling\nscenarios:\n  green: { rebootOrder: [kazi] }\n`);
    assert.equal(rolling.document.rebootOrder, "rolling");
    assert.deepEqual(rolling.document.scenarios?.green?.rebootOrder, ["kazi"]);
    assert.match(await problemsOf(`${MESH}rebootOrder: [kazi, kazi]\n`), /rebootOrder\[1\]: expected each host at most once, found kazi again/);
    assert.match(await problemsOf(`${MESH}rebootOrder: [ubongo]\n`), /rebootOrder\[0\]: expected one of the hosts \(askari, kazi\), found "ubongo"/);
    assert.match(await problemsOf(`${MESH}rebootOrder: sometimes\n`), /rebootOrder/);
    assert.match(
      await problemsOf(MESH.replace("vmFor: { kazi:", "vmFor: { kazzi:")),
      /vmFor\.kazzi: expected one of the hosts \(askari, kazi\), found "kazzi"/,
    );
    const single = MESH.replace("hosts: [askari, kazi]", "host: askari").replace(/ {2}- \{ name: kazi.*\n/g, "");
    assert.match(await problemsOf(single), /vmFor: expected no vmFor with one host/);
    assert.match(await problemsOf(`${single.replace(/vmFor.*\n/, "")}rebootOrder: all\n`), /rebootOrder: expected no rebootOrder with one host/);
  });

  it("takes links between two of its hosts each, each pair once, and checks over a link only from one end to the other", async () => {
    const linked = await load(`${MESH.replace("from: askari, tcp", "from: askari, over: link, tcp")}links: [[askari, kazi]]\n`);
    assert.deepEqual(linked.document.links, [["askari", "kazi"]]);
    assert.equal(linked.document.checks[1]!.over, "link");
    assert.match(await problemsOf(`${MESH}links: [[askari, kazzi]]\n`), /links\[0\]\[1\]: expected one of the hosts \(askari, kazi\), found "kazzi"/);
    assert.match(await problemsOf(`${MESH}links: [[kazi, kazi]]\n`), /links\[0\]: expected two hosts, found kazi at both ends/);
    assert.match(
      await problemsOf(`${MESH}links: [[askari, kazi], [kazi, askari]]\n`),
      /links\[1\]: expected each pair of hosts at most once, found kazi and askari again/,
    );
    assert.match(await problemsOf(`${MESH}links: [[askari]]\n`), /links\[0\]/);
    assert.match(
      await problemsOf(MESH.replace("from: askari, tcp", "from: askari, over: link, tcp")),
      /checks\[1\]\.over: expected a link between askari and kazi in links: \(none\), found none/,
    );
    assert.match(
      await problemsOf(`${MESH.replace("on: kazi, tcp", "on: kazi, over: link, tcp")}links: [[askari, kazi]]\n`),
      /checks\[2\]\.over: expected over: link only from one host to another \(from: <host>, on: <another>\), found from: \(not set\) and on: kazi$/m,
    );
    assert.match(
      await problemsOf(`${MESH.replace("{ name: mesh listens, udp", "{ name: mesh listens, from: askari, over: link, udp")}links: [[askari, kazi]]\n`),
      /checks\[0\]\.over: .*found from: askari and on: askari \(the first host, as on: is not set\)/,
    );
    // An unknown on: is said once, not as a missing link too.
    const unknownOn = await problemsOf(`${MESH.replace("on: kazi, from: askari, tcp", "on: kazzi, from: askari, over: link, tcp")}links: [[askari, kazi]]\n`);
    assert.match(unknownOn, /checks\[1\]\.on: expected one of the hosts/);
    assert.doesNotMatch(unknownOn, /expected a link between/);
    // The run's DNS names kazi's end of link1 kazi-link1: no host of the profile may be named so.
    const crowded = INVENTORY.replace("    mesh:\n", "        kazi-link1:\n          ansible_host: 10.0.0.3\n    mesh:\n");
    assert.match(
      await problemsOf(`${MESH.replace("[askari, kazi]", "[askari, kazi, kazi-link1]")}links: [[askari, kazi]]\n`, { "repo/inventory/hosts.yml": crowded }),
      /links\[0\]\[1\]: expected no host named kazi-link1 beside a link: the run's DNS names kazi's end of it so/,
    );
    assert.match(await problemsOf(MESH.replace("on: kazi, tcp", "on: kazi, over: wire, tcp")), /checks\[2\]\.over/);
    const single = MESH.replace("hosts: [askari, kazi]", "host: askari")
      .replace(/ {2}- \{ name: kazi.*\n/g, "")
      .replace(/vmFor.*\n/, "");
    const alone = await problemsOf(`${single}links: [[askari, askari], [askari, kazi]]\n`);
    assert.match(alone, /links: expected no links with one host/);
    assert.equal(alone.split("expected no links").length, 2, "said once");
    // A group's hosts are known once the inventory is read: the same checks then.
    assert.match(
      await problemsOf(`${MESH.replace("hosts: [askari, kazi]", "hosts: { group: mesh }")}links: [[askari, ubongo]]\n`),
      /links\[0\]\[1\]: expected one of the hosts \(askari, kazi\), found "ubongo"/,
    );
  });
});

describe("a profile of several hosts at a revision", () => {
  it("keeps its hosts (a group's as found), each with its own overlay from disk; a host it lacks is no host of it", async () => {
    const profile = await load(MESH.replace("hosts: [askari, kazi]", "hosts: { group: mesh }"), {
      "overrides/askari.yml": "vars: { stub: askari's }\n",
      "overrides/kazi.yml": "vars: { stub: kazi's }\n",
    });
    // The checkout of a revision: here the same files, elsewhere.
    const { profileAtRevision } = await import("../../../../orchestrator/profile/revision.ts");
    const atRevision = await profileAtRevision(profile, profile.repoDir, new Runner(), { info: () => undefined });
    assert.deepEqual(
      atRevision.topology?.map((host) => [host.name, host.overlay.document.vars.stub, host.vm.memoryMiB]),
      [
        ["askari", "askari's", 2048],
        ["kazi", "kazi's", 1024],
      ],
    );
    assert.equal(profileForHost(atRevision, "kazi").overlay.document.vars.stub, "kazi's");
    assert.throws(() => profileForHost(profileForHost(profile, "askari"), "kazi"), /kazi is no host of the profile p \(it is askari's alone\)/);
  });
});
