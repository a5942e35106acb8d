import assert from "node:assert/strict";
import { mkdir, readdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { Runner } from "../../../../infra/runner.ts";
import { bridgeFor, newRunIdentity } from "../../../../infra/spec.ts";
import { chooseWarmStart, releaseWarmChoice, type ProvisionOptions } from "../../../../orchestrator/run/provision.ts";
import { readSaveImage } from "../../../../infra/save-image.ts";
import {
  findWarmState,
  prepareWarmStart,
  pruneWarmStates,
  renameSaveImage,
  renameSavedDomain,
  saveWarmState,
  warmStateCapBytes,
  warmStateKey,
  warmStateSlotKey,
  type WarmStateKeyInputs,
  type WarmStateMeta,
} from "../../../../orchestrator/host/warm-states.ts";
import { runCli } from "../../../helpers/cli.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const FROM = { runId: "boma-it-askari-20261203-170620", runDir: "/tmp/e2e-a/runs/20261203-170620-askari/red" };
const TO = { runId: "boma-it-askari-20261203-172110", runDir: "/tmp/e2e-a/runs/20261203-170620-askari/green" };

/** A saved domain's XML as libvirt writes it into a save image (trimmed to what names the run). */
const SAVED_XML = `<domain type='qemu'>
  <name>${FROM.runId}</name>
  <uuid>6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b</uuid>
  <metadata>
    <boma:run xmlns:boma="https://boma-it.dev/run" host="askari" created="2026-12-03T17:06:20.663Z" pid="111" runDir="${FROM.runDir}"/>
  </metadata>
  <os firmware='efi'><nvram>/var/lib/libvirt/qemu/nvram/${FROM.runId}_VARS.fd</nvram></os>
  <devices>
    <disk type='volume' device='disk'><source pool='${FROM.runId}' volume='${FROM.runId}-overlay.qcow2'/></disk>
    <interface type='network'><source network='${FROM.runId}' bridge='${bridgeFor(FROM.runId)}'/><filterref filter='${FROM.runId}-isolation'/></interface>
    <serial type='pty'><log file='${FROM.runDir}/console.log' append='on'/></serial>
  </devices>
</domain>
`;

/** A state.json as saving writes it, for askari's saved run. */
function savedMeta(fields: Partial<WarmStateMeta> = {}): WarmStateMeta {
  return {
    format: 2,
    key: "askari-0123456789abcdef",
    savedAt: "s",
    fromRun: FROM.runId,
    fromRunDir: FROM.runDir,
    host: "askari",
    uuid: "u",
    mac: "m",
    subnet: {} as never,
    bootId: "b",
    ...fields,
  };
}

function saveImageBytes(xml: string): Buffer {
  const header = Buffer.alloc(92);
  header.write("LibvirtQemudSave", 0, "latin1");
  header.writeUInt32LE(2, 16);
  header.writeUInt32LE(16384, 20);
  header.writeUInt32LE(Buffer.byteLength(xml) + 1, 32);
  const data = Buffer.alloc(16384);
  data.write(`${xml}\0<cookie/>\0`, 0, "utf8");
  return Buffer.concat([header, data, Buffer.from("QEVM stream")]);
}

async function tree(t: TestContext) {
  const made = await tempTree();
  t.after(made.remove);
  return made.dir;
}

describe("saved first boots", () => {
  const inputs = async (dir: string): Promise<WarmStateKeyInputs> => {
    const golden = join(dir, "debian-13-local.qcow2");
    await writeFile(golden, "golden");
    return {
      goldenImage: golden,
      emulator: join(dir, "qemu"),
      accel: "tcg",
      vm: { vcpus: 2, memoryMiB: 2048, diskGiB: 20 },
      host: "askari",
      egressMode: "allowlist",
      templates: "seed+domain",
    };
  };

  it("keys a state by everything that shapes the VM up to cloud-init: the same inputs the same key, any change another", async (t) => {
    const dir = await tree(t);
    const base = await inputs(dir);
    const key = await warmStateKey(base);
    assert.match(key, /^askari-[0-9a-f]{16}$/);
    assert.equal(await warmStateKey({ ...base }), key);
    const others = [
      { ...base, accel: "kvm" },
      { ...base, vm: { ...base.vm, memoryMiB: 3072 } },
      { ...base, host: "simba" },
      { ...base, egressMode: "none" },
      { ...base, templates: "seed+domain, one line more" },
    ];
    for (const other of others) assert.notEqual(await warmStateKey(other), key, JSON.stringify(other));
    // A golden image made again is another image, even at the same path.
    await utimes(base.goldenImage, new Date(), new Date(Date.now() + 60_000));
    assert.notEqual(await warmStateKey(base), key, "a rebuilt golden image");
  });

  it("finds only a whole state of its key", async (t) => {
    const dir = await tree(t);
    const state = join(dir, "askari-0123456789abcdef");
    await mkdir(join(state, "keys"), { recursive: true });
    for (const file of ["memory.save", "disk.qcow2", "seed.iso"]) await writeFile(join(state, file), "x");
    const meta = savedMeta({ savedAt: "2026-12-03T17:10:00.000Z" });
    await writeFile(join(state, "state.json"), JSON.stringify(meta));
    assert.equal(await findWarmState(dir, "askari-0123456789abcdef"), undefined, "no UEFI variables: not whole");
    await writeFile(join(state, "VARS.fd"), "x");
    assert.equal((await findWarmState(dir, "askari-0123456789abcdef"))?.meta.fromRun, FROM.runId);
    assert.equal(await findWarmState(dir, "askari-fedcba9876543210"), undefined, "another key");
    await writeFile(join(state, "state.json"), JSON.stringify({ ...meta, format: 0 }));
    assert.equal(await findWarmState(dir, "askari-0123456789abcdef"), undefined, "an older format");
  });

  it("renames every object of the saved run to this run's and gives the domain this run's owner", () => {
    const metadata = `<metadata><boma:run xmlns:boma="https://boma-it.dev/run" host="askari" created="2026-12-03T17:21:10.000Z" pid="222" runDir="${TO.runDir}"/></metadata>`;
    const renamed = renameSavedDomain(SAVED_XML, FROM, TO, metadata);
    assert.ok(!renamed.includes(FROM.runId) && !renamed.includes(FROM.runDir) && !renamed.includes(bridgeFor(FROM.runId)), renamed);
    assert.match(renamed, new RegExp(`<name>${TO.runId}</name>`));
    assert.match(renamed, new RegExp(`volume='${TO.runId}-overlay.qcow2'`));
    assert.match(renamed, new RegExp(`<log file='${TO.runDir}/console.log'`));
    assert.match(renamed, new RegExp(`bridge='${bridgeFor(TO.runId)}'`));
    assert.match(renamed, /pid="222"/);
    assert.doesNotMatch(renamed, /pid="111"/, "the reaper judges the new owner, never the saved run's");
    assert.match(renamed, /<uuid>6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b<\/uuid>/, "the UUID stays: libvirt restores into no other");
  });

  it("renames a runs dir libvirt wrote as XML text (an & in the path) too", () => {
    const from = { runId: FROM.runId, runDir: "/srv/r&d/runs/20261203-170620-askari/red" };
    const to = { runId: TO.runId, runDir: "/srv/r&d/runs/20261203-170620-askari/green" };
    const xml = `<domain><name>${FROM.runId}</name><metadata/><serial><log file='/srv/r&amp;d/runs/20261203-170620-askari/red/console.log'/></serial></domain>`;
    const renamed = renameSavedDomain(xml.replace("<metadata/>", "<metadata></metadata>"), from, to, "<metadata></metadata>");
    assert.match(renamed, /<log file='\/srv\/r&amp;d\/runs\/20261203-170620-askari\/green\/console\.log'\/>/);
  });

  it("saves a running VM's state and brings it back from the very file kept; the copies are private and named in state.json", async (t) => {
    const dir = await tree(t);
    const runDir = join(dir, "run");
    await mkdir(join(runDir, "keys"), { recursive: true });
    for (const file of ["id_ed25519", "id_ed25519.pub", "known_hosts"]) await writeFile(join(runDir, "keys", file), file);
    const nvram = join(dir, "nvram", `${FROM.runId}_VARS.fd`);
    await mkdir(join(dir, "nvram"));
    await writeFile(nvram, "uefi variables");
    const bin = join(dir, "bin");
    const log = join(dir, "calls.log");
    // virsh as libvirt answers: save writes the image, vol-download the volume's bytes.
    await writeFake(
      bin,
      "virsh",
      `case "$4" in
  save) printf 'LibvirtQemudSave' > "$6" ;;
  vol-download) printf 'volume %s' "$5" > "$6" ;;
esac`,
    );
    const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log } });
    const cacheDir = join(dir, "states");
    const outputs = { runId: FROM.runId, domain: FROM.runId, runDir, host: "askari", mac: "52:54:00:12:34:56" } as StackOutputs;
    const result = await saveWarmState(
      { runner, uri: "qemu:///system", asRoot: [] },
      {
        cache: { dir: cacheDir, kept: 4, maxBytes: 2 ** 30 },
        key: "askari-0123456789abcdef",
        outputs,
        uuid: "6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b",
        subnet: { cidr: "10.234.77.0/24", gateway: "10.234.77.1", guestIp: "10.234.77.10", dhcpStart: "10.234.77.100", dhcpEnd: "10.234.77.200" } as never,
        nvram,
        volumes: { pool: FROM.runId, overlay: `${FROM.runId}-overlay.qcow2`, seed: `${FROM.runId}-seed.iso` },
        bootId: "a89953a1",
      },
    );
    const kept = join(cacheDir, "askari-0123456789abcdef");
    assert.deepEqual(result, { saved: true, dir: kept });
    const virsh = (await fakeCalls(log)).filter((call) => call[0] === "virsh").map((call) => call[4]);
    assert.deepEqual(virsh, ["save", "vol-download", "vol-download", "restore"]);
    const restore = (await fakeCalls(log)).find((call) => call[4] === "restore")!;
    assert.equal(restore[5], join(kept, "memory.save").replace(kept, join(cacheDir, `.saving-${FROM.runId}`)), "restored before the folder is moved in place");
    assert.deepEqual((await readdir(kept)).sort(), ["VARS.fd", "disk.qcow2", "keys", "memory.save", "seed.iso", "state.json"]);
    assert.deepEqual((await readdir(join(kept, "keys"))).sort(), ["id_ed25519", "id_ed25519.pub"], "the saved run's known_hosts is not the state's");
    assert.equal(await readFile(join(kept, "VARS.fd"), "utf8"), "uefi variables");
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700);
    const state = await findWarmState(cacheDir, "askari-0123456789abcdef");
    assert.equal(state?.meta.bootId, "a89953a1");
    assert.equal(state?.meta.subnet.cidr, "10.234.77.0/24");
  });

  it("restores the VM and keeps nothing when the copying fails, and says why", async (t) => {
    const dir = await tree(t);
    const bin = join(dir, "bin");
    const log = join(dir, "calls.log");
    await writeFake(bin, "virsh", `case "$4" in save) printf x > "$6" ;; vol-download) echo "error: no space left" >&2; exit 1 ;; esac`);
    const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log } });
    const cacheDir = join(dir, "states");
    const nvram = join(dir, "VARS.fd");
    await writeFile(nvram, "v");
    const result = await saveWarmState(
      { runner, uri: "qemu:///system", asRoot: [] },
      {
        cache: { dir: cacheDir, kept: 4, maxBytes: 2 ** 30 },
        key: "askari-0123456789abcdef",
        outputs: { runId: FROM.runId, domain: FROM.runId, runDir: join(dir, "run") } as StackOutputs,
        uuid: "u",
        subnet: {} as never,
        nvram,
        volumes: { pool: FROM.runId, overlay: "o", seed: "s" },
        bootId: "b",
      },
    );
    assert.equal(result.saved, false);
    assert.match((result as { why: string }).why, /copying the state failed: .*no space left/);
    assert.deepEqual(
      (await fakeCalls(log)).map((call) => call[4]),
      ["save", "vol-download", "restore"],
      "the VM goes on",
    );
    assert.deepEqual(await readdir(cacheDir), [], "no half state");
  });

  it("prepares this run's own copy of the state, renamed, and the keys the saved guest trusts", async (t) => {
    const dir = await tree(t);
    const state = join(dir, "states", "askari-0123456789abcdef");
    await mkdir(join(state, "keys"), { recursive: true });
    await writeFile(join(state, "memory.save"), saveImageBytes(SAVED_XML));
    await writeFile(join(state, "keys", "id_ed25519"), "the saved run's login key");
    const runDir = join(dir, "run");
    await mkdir(runDir);
    const found = {
      dir: state,
      meta: savedMeta({ uuid: "6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b", mac: "52:54:00:12:34:56" }),
    };
    const spec = await prepareWarmStart(found, { runDir, keysDir: join(runDir, "keys"), runner: new Runner() });
    assert.equal(spec.saveImage, join(runDir, ".warm-start.save"));
    assert.equal((await stat(spec.saveImage)).mode & 0o777, 0o600);
    assert.equal(await readFile(join(runDir, "keys", "id_ed25519"), "utf8"), "the saved run's login key");
    const domainXml = `<domain><name>${TO.runId}</name><metadata><boma:run pid="222"/></metadata></domain>`;
    await renameSaveImage(found, { runId: TO.runId, runDir: TO.runDir, saveImage: spec.saveImage, domainXml });
    assert.match((await readSaveImage(spec.saveImage)).xml, new RegExp(`<name>${TO.runId}</name>[\\s\\S]*pid="222"`));
    assert.equal((await readSaveImage(join(state, "memory.save"))).xml, SAVED_XML, "the kept state is never renamed");
  });

  it("keeps the newest states and drops a half-saved one whose saver died", async (t) => {
    const dir = await tree(t);
    for (const [name, hoursAgo] of [
      ["a", 5],
      ["b", 4],
      ["c", 3],
      [".saving-dead", 2],
      [".saving-busy", 0],
    ] as const) {
      await mkdir(join(dir, name));
      const at = new Date(Date.now() - hoursAgo * 3_600_000);
      await utimes(join(dir, name), at, at);
    }
    const removed = await pruneWarmStates({ dir, kept: 2, maxBytes: 2 ** 30 });
    assert.deepEqual((await readdir(dir)).sort(), [".saving-busy", "b", "c"]);
    assert.deepEqual(removed.sort(), [".saving-dead", "a"]);
  });

  it("holds the cache under its size cap, oldest out first, and says when a state alone is over it", async (t) => {
    const dir = await tree(t);
    const mib = 1024 * 1024;
    // Newest first: c (3 MiB), b (3 MiB), a (1 MiB). A 6.5 MiB cap holds c and b; a, the oldest, goes
    // although it would fit, so that no older state outlives a newer one.
    for (const [name, hoursAgo, size] of [
      ["a", 5, 1],
      ["b", 4, 3],
      ["c", 3, 3],
    ] as const) {
      await mkdir(join(dir, name));
      await writeFile(join(dir, name, "memory.save"), Buffer.alloc(size * mib, 1));
      const at = new Date(Date.now() - hoursAgo * 3_600_000);
      await utimes(join(dir, name), at, at);
    }
    assert.deepEqual(await pruneWarmStates({ dir, kept: 4, maxBytes: 6.5 * mib }), ["a"]);
    assert.deepEqual((await readdir(dir)).sort(), ["b", "c"]);
    assert.deepEqual(await pruneWarmStates({ dir, kept: 4, maxBytes: 2 * mib }), ["c", "b"], "even the newest, when it alone is over the cap");

    assert.equal(warmStateCapBytes({}), 8 * 2 ** 30);
    assert.equal(warmStateCapBytes({ BOMA_IT_STATE_CACHE_MAX_GIB: "2.5" }), 2.5 * 2 ** 30);
    assert.equal(warmStateCapBytes({ BOMA_IT_STATE_CACHE_MAX_GIB: "0" }), 0);
    assert.throws(
      () => warmStateCapBytes({ BOMA_IT_STATE_CACHE_MAX_GIB: "8G" }),
      (error: Error) => /\$BOMA_IT_STATE_CACHE_MAX_GIB: expected a number of GiB, 0 or more \(e\.g\. 8 or 2\.5\), found "8G"/.test(error.message),
    );
  });

  it("keeps no state that alone is over the cap, and says so; the VM goes on", async (t) => {
    const dir = await tree(t);
    const bin = join(dir, "bin");
    await writeFake(bin, "virsh", `case "$4" in save) head -c 2097152 /dev/zero | tr '\\0' x > "$6" ;; vol-download) printf v > "$6" ;; esac`);
    const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(dir, "calls.log") } });
    const runDir = join(dir, "run");
    await mkdir(join(runDir, "keys"), { recursive: true });
    const nvram = join(dir, "VARS.fd");
    await writeFile(nvram, "v");
    const cacheDir = join(dir, "states");
    const result = await saveWarmState(
      { runner, uri: "qemu:///system", asRoot: [] },
      {
        cache: { dir: cacheDir, kept: 4, maxBytes: 1024 * 1024 },
        key: "askari-0123456789abcdef",
        outputs: { runId: FROM.runId, domain: FROM.runId, runDir } as StackOutputs,
        uuid: "u",
        subnet: {} as never,
        nvram,
        volumes: { pool: FROM.runId, overlay: "o", seed: "s" },
        bootId: "b",
      },
    );
    assert.deepEqual(result, { saved: false, why: "the state alone is larger than the cache's cap of 0.0 GiB ($BOMA_IT_STATE_CACHE_MAX_GIB)" });
    assert.deepEqual(await readdir(cacheDir), []);
    assert.deepEqual(
      (await fakeCalls(join(dir, "calls.log"))).map((call) => call[4]),
      ["save", "vol-download", "vol-download", "restore"],
      "the VM goes on",
    );
  });
});

describe("choosing a saved first boot", () => {
  const SUBNETS = ["10.234.77.0/24", "10.234.78.0/24"];
  /** States of askari's VM in `cacheDir` (one per slot given), under the keys `chooseWarmStart` computes, and what a provision needs to choose. */
  async function setup(dir: string, libvirt: { used: string[]; defined: (uuid: string) => boolean }, slots: number[] = [1]) {
    const golden = join(dir, "debian-13-local.qcow2");
    await writeFile(golden, "golden");
    const options = {
      profile: { document: { vm: { vcpus: 2, memoryMiB: 2048, diskGiB: 20 } } },
      accel: { accel: "tcg" },
      egress: { spec: { mode: "allowlist", names: [], upstreams: [] }, asRoot: [] },
      runner: new Runner(),
      libvirt: { usedSubnets: async () => libvirt.used, hasDomain: async (uuid: string) => libvirt.defined(uuid) },
      subnetsInUse: new Set<string>(),
    } as unknown as ProvisionOptions;
    const base = { identity: newRunIdentity("askari", new Date("2026-12-03T19:00:00Z")), runDir: join(dir, "run"), golden, phases: [] };
    const cacheDir = join(dir, "states");
    const cache = { dir: cacheDir, kept: 4, maxBytes: 2 ** 30 };
    const probe = await chooseWarmStart(options, base, cache);
    releaseWarmChoice(probe);
    for (const slot of slots) {
      const key = warmStateSlotKey(probe.key, slot);
      const state = join(cacheDir, key);
      await mkdir(join(state, "keys"), { recursive: true });
      for (const file of ["memory.save", "disk.qcow2", "seed.iso", "VARS.fd"]) await writeFile(join(state, file), "x");
      const cidr = SUBNETS[slot - 1]!;
      const prefix = cidr.slice(0, -5);
      const subnet = { cidr, gateway: `${prefix}.1`, guestIp: `${prefix}.10`, dhcpStart: `${prefix}.100`, dhcpEnd: `${prefix}.199` };
      await writeFile(join(state, "state.json"), JSON.stringify(savedMeta({ key, subnet, uuid: `uuid-of-slot-${slot}` })));
    }
    return { options, base, cache, key: probe.key };
  }
  const nothingDefined = () => false;

  it("gives each VM made beside another a slot of its own: the first starts from slot 1, the next boots and saves slot 2, a third saves nothing; released, they are free again", async (t) => {
    const dir = await tree(t);
    const { options, base, cache, key } = await setup(dir, { used: [], defined: nothingDefined });
    const choices = await Promise.all([0, 1, 2].map(() => chooseWarmStart(options, base, cache)));
    // Whichever claims first takes slot 1, the next slot 2.
    const first = choices.find((choice) => choice.key === key);
    const second = choices.find((choice) => choice.key === `${key}-2`);
    const third = choices.find((choice) => choice !== first && choice !== second);
    assert.ok(first && second && third, JSON.stringify(choices.map((choice) => choice.key)));
    assert.equal(first!.state?.meta.subnet.cidr, "10.234.77.0/24");
    assert.equal(second!.state, undefined);
    assert.equal(second!.why, undefined, "it saves its first boot in slot 2");
    assert.equal(second!.claimed, true);
    assert.equal(third!.state, undefined);
    assert.match(third!.why ?? "", /another VM of this run is starting from or saving each of the 2 first boots of this VM's shape/);
    assert.deepEqual([...options.subnetsInUse!], ["10.234.77.0/24"], "slot 1's subnet is the first VM's from the choice on");
    for (const choice of [first!, second!, third!]) releaseWarmChoice(choice);
    options.subnetsInUse!.clear();
    const again = await chooseWarmStart(options, base, cache);
    assert.ok(again.state, "free again");
    assert.equal(again.key, key);
    releaseWarmChoice(again);
  });

  it("starts two VMs side by side from two slots, each on its own saved network", async (t) => {
    const dir = await tree(t);
    const { options, base, cache, key } = await setup(dir, { used: [], defined: nothingDefined }, [1, 2]);
    const both = await Promise.all([chooseWarmStart(options, base, cache), chooseWarmStart(options, base, cache)]);
    assert.deepEqual(both.map((choice) => choice.key).sort(), [key, `${key}-2`]);
    assert.deepEqual(both.map((choice) => choice.state?.meta.subnet.cidr).sort(), SUBNETS);
    assert.deepEqual([...options.subnetsInUse!].sort(), SUBNETS);
    both.forEach(releaseWarmChoice);
  });

  it("passes over a state whose network overlaps one in use, or whose UUID is defined, says why, and takes the next slot", async (t) => {
    const dir = await tree(t);
    for (const [libvirt, why] of [
      [{ used: ["10.234.77.1/24"], defined: nothingDefined }, /its network 10\.234\.77\.0\/24 is in use/],
      [{ used: [], defined: (uuid: string) => uuid === "uuid-of-slot-1" }, /a VM started from it is still defined/],
    ] as const) {
      const case_ = join(dir, `case-${libvirt.used.length}`);
      await mkdir(case_);
      const { options, base, cache, key } = await setup(case_, { used: [...libvirt.used], defined: libvirt.defined });
      const choice = await chooseWarmStart(options, base, cache);
      assert.equal(choice.state, undefined);
      assert.equal(choice.key, `${key}-2`, "slot 2, empty: this VM boots and saves it");
      assert.equal(choice.why, undefined);
      assert.match(choice.passedOver?.join("\n") ?? "", new RegExp(`^${key}: ${why.source}`));
      assert.deepEqual([...options.subnetsInUse!], [], "the passed-over state's network is not held");
      releaseWarmChoice(choice);
    }
  });

  it("lets go of a slot and its network when asking libvirt about it fails", async (t) => {
    const dir = await tree(t);
    let failing = true;
    const { options, base, cache, key } = await setup(dir, { used: [], defined: nothingDefined });
    const libvirt = options.libvirt as unknown as { usedSubnets: () => Promise<string[]> };
    libvirt.usedSubnets = async () => {
      if (failing) throw new Error("libvirt went away");
      return [];
    };
    await assert.rejects(chooseWarmStart(options, base, cache), /libvirt went away/);
    assert.deepEqual([...options.subnetsInUse!], [], "the state's network is not held");
    failing = false;
    const again = await chooseWarmStart(options, base, cache);
    assert.equal(again.key, key, "slot 1 is free again");
    assert.ok(again.state);
    releaseWarmChoice(again);
  });

  it("with every slot passed over, boots and saves nothing, and says why", async (t) => {
    const dir = await tree(t);
    const { options, base, cache } = await setup(dir, { used: ["10.234.0.0/16"], defined: nothingDefined }, [1, 2]);
    const choice = await chooseWarmStart(options, base, cache);
    assert.equal(choice.state, undefined);
    assert.equal(choice.claimed, undefined, "no slot held");
    assert.match(
      choice.why ?? "",
      /no slot of this VM's shape is free \(askari-[0-9a-f]{16}: its network 10\.234\.77\.0\/24 is in use; askari-[0-9a-f]{16}-2: its network 10\.234\.78\.0\/24 is in use/,
    );
  });
});

describe("image ls and image prune", () => {
  it("list the saved first boots with their size and origin, and prune removes them all, a half one too", async (t) => {
    const dir = await tree(t);
    const states = join(dir, "states");
    const whole = join(states, "askari-0123456789abcdef");
    await mkdir(join(whole, "keys"), { recursive: true });
    await writeFile(join(whole, "memory.save"), Buffer.alloc(3 * 1024 * 1024, 1));
    const meta = savedMeta({ savedAt: "2026-12-03T19:12:53.305Z" });
    await writeFile(join(whole, "state.json"), JSON.stringify(meta));
    await mkdir(join(states, "kazi-fedcba9876543210"));
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(whole, hourAgo, hourAgo);
    const env = { BOMA_IT_STATE_CACHE: states, BOMA_IT_IMAGE_DIR: join(dir, "images") };
    const ls = await runCli(["image", "ls"], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(
      ls.stdout,
      new RegExp(
        // Newest first: the half one is the newer.
        `saved first boots in ${states} \\(the newest 8 within 8\\.0 GiB are kept\\):\\n  kazi-fedcba9876543210 +\\(not whole: \`image prune\` removes it\\)\\n  askari-0123456789abcdef +3 MiB  saved 2026-12-03T19:12:53.305Z by ${FROM.runId}`,
      ),
    );
    const prune = await runCli(["image", "prune"], env);
    assert.equal(prune.code, 0, prune.stderr);
    assert.match(prune.stdout, /removed 2 saved first boot\(s\)/);
    assert.deepEqual(await readdir(states), []);
    assert.match((await runCli(["image", "ls"], env)).stdout, /saved first boots in .*:\n {2}none \(the next VM of a shape saves one\)/);
    assert.equal((await runCli(["image", "prune", "debian-13-local"], env)).code, 2, "prune takes no image name");
  });
});
