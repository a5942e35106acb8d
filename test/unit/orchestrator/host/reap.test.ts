import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, readdir, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { DirectEngine } from "../../../../infra/engines/direct.ts";
import { processStart } from "../../../../infra/process.ts";
import { Runner } from "../../../../infra/runner.ts";
import { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import { acquireRunLock, runLockHolder } from "../../../../orchestrator/host/lock.ts";
import { createdAtOf, reap, reapInTurn } from "../../../../orchestrator/host/reap.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** A virsh that lists what $FAKE_* say and accepts every change. */
const FAKE_VIRSH = `
args=(); for a in "$@"; do case "$a" in -q|-c|qemu:*) ;; *) args+=("$a") ;; esac; done
case "\${args[0]}" in
  list) tr ' ' '\\n' <<< "$FAKE_DOMAINS" ;;
  net-list) tr ' ' '\\n' <<< "$FAKE_NETWORKS" ;;
  pool-list) tr ' ' '\\n' <<< "$FAKE_POOLS" ;;
  nwfilter-list) for f in \${FAKE_FILTERS:-}; do echo "0000-uuid $f"; done ;;
  vol-list) for v in $FAKE_VOLS; do [ "\${v%%:*}" = "\${args[1]}" ] && echo "\${v#*:} /somewhere/\${v#*:}"; done ;;
  # FAKE_META: name=pid or name=pid@start (the owner's start, recorded since pid reuse mattered).
  metadata) for m in $FAKE_META; do
      [ "\${m%%=*}" = "\${args[1]}" ] || continue
      owner="\${m#*=}"; pid="\${owner%%@*}"; start=""
      [ "$owner" != "$pid" ] && start=" pidStart=\\"\${owner#*@}\\""
      echo "<run pid=\\"$pid\\"$start/>"
    done ;;
  domstate) echo running ;;
esac
exit 0
`;

const silent = silentLog();

async function setup(env: Record<string, string>) {
  const tree = await tempTree();
  const bin = join(tree.dir, "bin");
  await writeFake(bin, "virsh", FAKE_VIRSH);
  // A master that answers `-O exit` by going away with its socket.
  await writeFake(bin, "ssh", `rm -f "$(printf '%s\\n' "$@" | sed -n 's/^ControlPath=//p')"`);
  const log = join(tree.dir, "calls.log");
  const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log, ...env } });
  const images = join(tree.dir, "images");
  const nvram = join(tree.dir, "nvram");
  const sockets = join(tree.dir, "sockets");
  const dnsmasq = join(tree.dir, "dnsmasq");
  await mkdir(images);
  await mkdir(nvram);
  await mkdir(sockets);
  await mkdir(dnsmasq);
  // nft lists the tables $FAKE_NFT_TABLES names (inet ones); rm is the real one (on the test's files).
  await writeFake(
    bin,
    "nft",
    `case "$*" in
  "-j list tables") printf '{"nftables": [{"metainfo": {}}'; for t in \${FAKE_NFT_TABLES:-}; do printf ', {"table": {"family": "inet", "name": "%s", "handle": 1}}' "$t"; done; printf ', {"table": {"family": "ip", "name": "filter", "handle": 2}}]}\n' ;;
esac`,
  );
  // The folders and root of a reap here: root is "as this process" (the fakes decide what happens).
  const places = { libvirtImagesDir: images, libvirtNvramDir: nvram, controlSocketDir: sockets, libvirtDnsmasqDir: dnsmasq, rootCommand: async () => [] };
  return { tree, runner, images, nvram, sockets, dnsmasq, places, libvirt: new Libvirt(runner, "qemu:///system"), calls: () => fakeCalls(log) };
}

/** A reap of every run whose owner is dead, in the places and runs folder of a test's setup; `overrides` over those defaults. */
function reapDead(context: Awaited<ReturnType<typeof setup>>, overrides: Partial<Parameters<typeof reap>[0]> = {}) {
  return reap({
    engines: [],
    libvirt: context.libvirt,
    runner: context.runner,
    log: silent,
    runsDir: join(context.tree.dir, "runs"),
    dryRun: false,
    olderThanSeconds: undefined,
    ...context.places,
    isAlive: () => false,
    ...overrides,
  });
}

const OLD = "boma-it-askari-20200101-000000";
const DECOYS = "default my-boma-it-vm boma-itx bomait-askari-20200101-000000";

function changes(calls: string[][]): string[] {
  const readOnly = new Set(["list", "net-list", "pool-list", "vol-list", "nwfilter-list", "metadata", "domstate", "version", "nft -j list tables"]);
  return calls
    .map((call) =>
      call.filter((arg) => !["virsh", "-q", "-c", "qemu:///system"].includes(arg)).map((arg) => arg.replace(/^ControlPath=.*\//, "ControlPath=…/")),
    )
    .filter((call) => !readOnly.has(call[0]!) && !readOnly.has(call.join(" ")))
    .map((call) => call.join(" "));
}

describe("reap", () => {
  it("destroys prefixed objects nobody owns and never touches others", async () => {
    const env = {
      FAKE_DOMAINS: `${OLD} ${DECOYS}`,
      FAKE_NETWORKS: `${OLD} ${DECOYS}`,
      FAKE_POOLS: `${OLD} default`,
      FAKE_VOLS: `default:${OLD}-overlay.qcow2 default:precious.qcow2 default:my-boma-it-disk.qcow2`,
      FAKE_META: `${OLD}=999999`,
      FAKE_FILTERS: `${OLD}-isolation clean-traffic boma-it`,
    };
    const { tree, runner, images, nvram, sockets, places, libvirt, calls } = await setup(env);
    try {
      await writeFile(join(sockets, OLD), "");
      await writeFile(join(sockets, "someone-elses"), "");
      await mkdir(join(images, OLD));
      await mkdir(join(images, "not-ours"));
      await writeFile(join(nvram, `${OLD}_VARS.fd`), "");
      await writeFile(join(nvram, "other_VARS.fd"), "");
      const runs = join(tree.dir, "runs");
      await mkdir(join(runs, "20200101-000000-askari", "keys"), { recursive: true });
      // Its warm start's copy of a saved state, never restored.
      await writeFile(join(runs, "20200101-000000-askari", ".warm-start.save"), "LibvirtQemudSave");
      const items = await reap({
        engines: [new DirectEngine(runner, join(tree.dir, "stacks"))],
        libvirt,
        runner,
        log: silent,
        runsDir: runs,
        dryRun: false,
        olderThanSeconds: undefined,
        ...places,
        isAlive: () => false,
      });
      assert.deepEqual(changes(await calls()), [
        `destroy ${OLD}`,
        `undefine ${OLD} --nvram`,
        `net-destroy ${OLD}`,
        `net-undefine ${OLD}`,
        `pool-refresh ${OLD}`,
        `pool-destroy ${OLD}`,
        `pool-delete ${OLD}`,
        `pool-undefine ${OLD}`,
        `nwfilter-undefine ${OLD}-isolation`,
        `ssh -o ControlPath=…/${OLD} -O exit boma-it-master`,
      ]);
      assert.deepEqual(await readdir(sockets), ["someone-elses"], "the dead run's SSH master is ended, nothing else");
      assert.deepEqual(await readdir(images), ["not-ours"]);
      assert.deepEqual(await readdir(nvram), ["other_VARS.fd"]);
      assert.deepEqual(await readdir(join(runs, "20200101-000000-askari")), [], "the dead run's keys and its copy of a saved state are gone");
      assert.deepEqual(
        items.filter((item) => item.action !== "destroyed"),
        [],
      );
      assert.deepEqual(
        items.map((item) => item.kind).sort(),
        ["domain", "file", "file", "file", "keys", "network", "nwfilter", "pool", "ssh"],
        "every object of the dead run is an item",
      );
    } finally {
      await tree.remove();
    }
  });

  it("touches only what boma-it made: decoys with the prefix, a run's name without boma-it's metadata, volumes outside a run's pool, folders of other shapes", async () => {
    const shaped = "boma-it-web-20200101-000000";
    const env = {
      FAKE_DOMAINS: `boma-it-prod ${shaped} ${OLD}`,
      FAKE_NETWORKS: "boma-it-prod boma-it-lab-net",
      FAKE_POOLS: `default boma-it-data ${OLD}`,
      FAKE_VOLS: `default:boma-it-base.qcow2 default:${OLD}-overlay.qcow2 boma-it-data:${OLD}-seed.iso ${OLD}:${OLD}-overlay.qcow2 ${OLD}:${OLD}-reset.mem ${OLD}:${OLD}-top.qcow2`,
      FAKE_META: `${OLD}=999999`,
      FAKE_FILTERS: "boma-it-strict clean-traffic",
      FAKE_NFT_TABLES: `boma-it-prod ${OLD} firewalld`,
    };
    const { tree, runner, images, nvram, sockets, dnsmasq, places, libvirt, calls } = await setup(env);
    try {
      await mkdir(join(images, "boma-it-isos"));
      await mkdir(join(images, OLD));
      await writeFile(join(nvram, "boma-it-prod_VARS.fd"), "");
      await writeFile(join(sockets, "boma-it-tunnel"), "");
      for (const log of [`${OLD}.queries.log`, "boma-it-prod.queries.log", "default.conf"]) await writeFile(join(dnsmasq, log), "");
      const runs = join(tree.dir, "runs");
      for (const folder of [
        "boma-it-notes/keys",
        "notes/keys",
        "20200101-000000-askari/keys",
        "20200101-000000-fleet-web/20200101-000001-kazi/keys",
        "20200101-000000-fleet-web/docs/keys",
        "bench-20200101-000000/keys",
      ])
        await mkdir(join(runs, folder), { recursive: true });
      const items = await reap({
        engines: [],
        libvirt,
        runner,
        log: silent,
        runsDir: runs,
        dryRun: false,
        olderThanSeconds: 1,
        now: new Date("2026-12-02T12:00:00Z"),
        ...places,
        isAlive: () => false,
      });
      assert.deepEqual(
        changes(await calls()),
        [
          `destroy ${OLD}`,
          `undefine ${OLD} --nvram`,
          `pool-refresh ${OLD}`,
          `vol-delete ${OLD}-overlay.qcow2 --pool ${OLD}`,
          `vol-delete ${OLD}-reset.mem --pool ${OLD}`,
          `vol-delete ${OLD}-top.qcow2 --pool ${OLD}`,
          `pool-destroy ${OLD}`,
          `pool-delete ${OLD}`,
          `pool-undefine ${OLD}`,
          `nft delete table inet ${OLD}`,
        ],
        "only the dead run's own domain, volumes, pool and egress table",
      );
      assert.deepEqual((await readdir(dnsmasq)).sort(), ["boma-it-prod.queries.log", "default.conf"], "only the dead run's DNS query log goes");
      assert.deepEqual(
        items.filter((item) => item.action === "spared").map((item) => `${item.kind} ${item.name}: ${item.detail}`),
        [`domain ${shaped}: no boma-it metadata: not made by boma-it`],
      );
      assert.deepEqual((await readdir(images)).sort(), ["boma-it-isos"]);
      assert.deepEqual(await readdir(nvram), ["boma-it-prod_VARS.fd"]);
      assert.deepEqual(await readdir(sockets), ["boma-it-tunnel"]);
      for (const kept of ["boma-it-notes/keys", "notes/keys", "20200101-000000-fleet-web/docs/keys", "bench-20200101-000000/keys"])
        assert.ok((await readdir(join(runs, kept))).length === 0 && (await readdir(join(runs, kept, ".."))).includes("keys"), `${kept} stays`);
      assert.deepEqual(await readdir(join(runs, "20200101-000000-askari")), [], "a run folder's keys go");
      assert.deepEqual(await readdir(join(runs, "20200101-000000-fleet-web", "20200101-000001-kazi")), [], "and a fleet's run's");
    } finally {
      await tree.remove();
    }
  });

  it("takes a dead topology's link networks and link filters as its run's, and leaves names of any other shape", async () => {
    const env = {
      FAKE_DOMAINS: "",
      FAKE_NETWORKS: `${OLD} ${OLD}-link1 ${OLD}-link8 ${OLD}-link9 ${OLD}-linkx`,
      FAKE_POOLS: "",
      FAKE_VOLS: "",
      FAKE_META: "",
      FAKE_FILTERS: `${OLD}-isolation ${OLD}-links ${OLD}-linked`,
    };
    const context = await setup(env);
    const { tree, runner, calls } = context;
    try {
      await reapDead(context, { engines: [new DirectEngine(runner, join(tree.dir, "stacks"))] });
      const changed = changes(await calls());
      for (const name of [OLD, `${OLD}-link1`, `${OLD}-link8`]) assert.ok(changed.includes(`net-destroy ${name}`), `${name} destroyed: ${changed.join("; ")}`);
      for (const name of [`${OLD}-isolation`, `${OLD}-links`]) assert.ok(changed.includes(`nwfilter-undefine ${name}`), `${name} undefined`);
      for (const name of [`${OLD}-link9`, `${OLD}-linkx`, `${OLD}-linked`])
        assert.ok(!changed.some((call) => call.endsWith(` ${name}`)), `${name} is nobody's to boma-it`);
    } finally {
      await tree.remove();
    }
  });

  it("a run's pool that holds a volume boma-it does not make is left, with that volume", async () => {
    const context = await setup({
      FAKE_DOMAINS: "",
      FAKE_NETWORKS: "",
      FAKE_POOLS: OLD,
      FAKE_VOLS: `${OLD}:${OLD}-overlay.qcow2 ${OLD}:thesis.pdf`,
      FAKE_META: "",
    });
    const { tree, calls } = context;
    try {
      const items = await reapDead(context);
      assert.deepEqual(changes(await calls()), [`pool-refresh ${OLD}`, `vol-delete ${OLD}-overlay.qcow2 --pool ${OLD}`]);
      assert.match(items.find((item) => item.kind === "pool")!.detail, /it holds volumes boma-it does not make \(thesis\.pdf\)/);
    } finally {
      await tree.remove();
    }
  });

  it("lists without touching anything in a dry run", async () => {
    const context = await setup({
      FAKE_DOMAINS: OLD,
      FAKE_NETWORKS: OLD,
      FAKE_POOLS: "",
      FAKE_VOLS: "",
      FAKE_META: `${OLD}=999999`,
    });
    const { tree, images, sockets, calls } = context;
    try {
      await mkdir(join(images, OLD));
      await writeFile(join(sockets, OLD), "");
      const items = await reapDead(context, { dryRun: true });
      assert.deepEqual(changes(await calls()), []);
      assert.deepEqual(
        items.map((item) => `${item.action} ${item.kind}`),
        ["would destroy domain", "would destroy network", "would destroy file", "would destroy ssh"],
      );
      assert.deepEqual(await readdir(images), [OLD]);
    } finally {
      await tree.remove();
    }
  });

  it("spares runs of a living harness and runs younger than --older-than", async () => {
    const young = "boma-it-askari-20991231-235959";
    const { tree, runner, images, nvram, sockets, places, libvirt, calls } = await setup({
      FAKE_DOMAINS: `${OLD} ${young}`,
      FAKE_NETWORKS: young,
      FAKE_POOLS: "",
      FAKE_VOLS: "",
      FAKE_META: `${OLD}=4242 ${young}=999999`,
      FAKE_FILTERS: `${OLD}-isolation`,
    });
    try {
      // The living run's files: its NVRAM and its pool dir must survive.
      await writeFile(join(nvram, `${OLD}_VARS.fd`), "");
      await mkdir(join(images, OLD));
      await writeFile(join(sockets, OLD), "");
      await writeFile(join(sockets, young), "");
      const items = await reap({
        engines: [],
        libvirt,
        runner,
        log: silent,
        runsDir: join(tree.dir, "runs"),
        dryRun: false,
        olderThanSeconds: 7200,
        now: new Date("2099-12-31T23:59:59Z"),
        ...places,
        isAlive: (pid) => pid === 4242,
      });
      assert.deepEqual(changes(await calls()), []);
      assert.deepEqual(
        items.map((item) => `${item.action} ${item.name}`),
        [`spared ${OLD}`],
      );
      assert.deepEqual(await readdir(nvram), [`${OLD}_VARS.fd`]);
      assert.deepEqual(await readdir(images), [OLD]);
      assert.deepEqual((await readdir(sockets)).sort(), [OLD, young].sort(), "their SSH masters too");
    } finally {
      await tree.remove();
    }
  });

  it("takes a recorded owner whose pid another process now holds (the host rebooted, pids wrapped) for dead", async () => {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const reused = "boma-it-askari-20200101-000001";
    try {
      const start = processStart(child.pid!);
      assert.match(start ?? "", /^[0-9a-f-]{36}\/\d+$/);
      const { tree, runner, places, libvirt, calls } = await setup({
        FAKE_DOMAINS: `${OLD} ${reused}`,
        FAKE_NETWORKS: "",
        FAKE_POOLS: "",
        FAKE_VOLS: "",
        FAKE_META: `${OLD}=${child.pid}@${start} ${reused}=${child.pid}@00000000-0000-0000-0000-000000000000/1`,
      });
      try {
        // No isAlive given: the real check, against a real process.
        const items = await reap({
          engines: [],
          libvirt,
          runner,
          log: silent,
          runsDir: join(tree.dir, "runs"),
          dryRun: false,
          olderThanSeconds: undefined,
          ...places,
        });
        assert.deepEqual(
          items.map((item) => `${item.action} ${item.kind} ${item.name}`),
          [`spared domain ${OLD}`, `destroyed domain ${reused}`],
        );
        assert.deepEqual(changes(await calls()), [`destroy ${reused}`, `undefine ${reused} --nvram`]);
      } finally {
        await tree.remove();
      }
    } finally {
      child.kill();
    }
  });

  it("spares keys a living harness that holds the run lock made before its stack was recorded", async () => {
    const { tree, runner, places, libvirt } = await setup({ FAKE_DOMAINS: "", FAKE_NETWORKS: "", FAKE_POOLS: "", FAKE_VOLS: "", FAKE_META: "" });
    try {
      const runs = join(tree.dir, "runs");
      const dead = join(runs, "20200101-000000-askari", "keys");
      const starting = join(runs, "20991231-235959-askari", "green", "keys");
      await mkdir(dead, { recursive: true });
      const runLock = join(tree.dir, "run.lock");
      const lock = await acquireRunLock(runLock, "run");
      await mkdir(starting, { recursive: true });
      // The dead run's keys were made long before the lock was taken.
      await utimes(dead, new Date("2020-01-01T00:00:00Z"), new Date("2020-01-01T00:00:00Z"));
      const options = {
        engines: [],
        libvirt,
        runner,
        log: silent,
        runsDir: runs,
        dryRun: false,
        olderThanSeconds: undefined,
        ...places,
        runLock,
        isAlive: () => false,
      };
      const items = await reap(options);
      assert.deepEqual(
        items.map((item) => `${item.action} ${item.kind} ${item.name}`),
        [`destroyed keys ${dead}`],
      );
      assert.deepEqual(await readdir(join(runs, "20991231-235959-askari", "green")), ["keys"], "the starting run keeps its keys");
      // Once the lock is free, they are a dead run's keys like any other.
      await lock.release();
      const after = await reap(options);
      assert.deepEqual(
        after.map((item) => `${item.action} ${item.kind} ${item.name}`),
        [`destroyed keys ${starting}`],
      );
    } finally {
      await tree.remove();
    }
  });

  it("never touches a run that another process is provisioning from another stacks dir (no domain yet, no ledger here)", async () => {
    // The other harness: a real process that holds the machine's run lock. Its run's objects are
    // named after a time after it took the lock; a dead run's are older.
    const tree = await tempTree();
    const runLock = join(tree.dir, "run.lock");
    const holder = spawn(process.execPath, [join(import.meta.dirname, "../../../helpers/lock-taker.ts"), runLock, "60000"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise<void>((resolve) => holder.stdout.once("data", () => resolve()));
      const stamp = new Date(Date.now() + 1000).toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
      const provisioning = `boma-it-askari-${stamp}`;
      const { runner, images, places, libvirt, calls } = await setup({
        FAKE_DOMAINS: "",
        FAKE_NETWORKS: `${provisioning} ${OLD}`,
        FAKE_POOLS: provisioning,
        FAKE_VOLS: `${provisioning}:${provisioning}-overlay.qcow2`,
        FAKE_META: "",
        FAKE_FILTERS: `${provisioning}-isolation`,
        FAKE_NFT_TABLES: provisioning,
      });
      await mkdir(join(images, provisioning));
      const options = {
        engines: [new DirectEngine(runner, join(tree.dir, "my-stacks"))],
        libvirt,
        runner,
        log: silent,
        runsDir: join(tree.dir, "runs"),
        dryRun: false,
        olderThanSeconds: undefined,
        ...places,
        runLock,
      };
      const items = await reap(options);
      assert.deepEqual(changes(await calls()), [`net-destroy ${OLD}`, `net-undefine ${OLD}`], "only the dead run's network");
      assert.deepEqual(
        items
          .filter((item) => item.action === "spared")
          .map((item) => `${item.kind} ${item.name}`)
          .sort(),
        [
          `network ${provisioning}`,
          `pool ${provisioning}`,
          `volume ${provisioning}/${provisioning}-overlay.qcow2`,
          `nwfilter ${provisioning}-isolation`,
          `file ${join(images, provisioning)}`,
          `nft ${provisioning}`,
        ].sort(),
      );
      assert.match(
        items.find((item) => item.kind === "network" && item.name === provisioning)!.detail,
        /its harness \(pid \d+, test\) holds the run lock and made it/,
      );
      holder.kill("SIGKILL");
      await new Promise((resolve) => holder.once("exit", resolve));
      // The kernel frees the lock within a second of the holder's death; then the run is a dead one's.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const after = await reap(options);
      const ofIt = after.filter((item) => item.name.includes(provisioning));
      assert.deepEqual(
        ofIt.map((item) => `${item.action} ${item.kind}`).sort(),
        ["destroyed file", "destroyed network", "destroyed nft", "destroyed nwfilter", "destroyed pool", "destroyed volume"],
        JSON.stringify(after),
      );
    } finally {
      holder.kill("SIGKILL");
      await tree.remove();
    }
  });

  it("two reaps at once both finish cleanly: what one destroyed, the other finds gone", async () => {
    const gone = `
args=(); for a in "$@"; do case "$a" in -q|-c|qemu:*) ;; *) args+=("$a") ;; esac; done
case "\${args[0]}" in
  net-list) echo ${OLD} ;;
  net-destroy|net-undefine) echo "error: failed to get network '${OLD}'" >&2; echo "error: Network not found: no network with matching name '${OLD}'" >&2; exit 1 ;;
esac
exit 0`;
    const { tree, runner, places, libvirt } = await setup({});
    try {
      await writeFake(join(tree.dir, "bin"), "virsh", gone);
      const items = await reap({
        engines: [],
        libvirt,
        runner,
        log: silent,
        runsDir: join(tree.dir, "runs"),
        dryRun: false,
        olderThanSeconds: undefined,
        ...places,
      });
      assert.deepEqual(
        items.map((item) => `${item.action} ${item.kind} ${item.name} ${item.detail}`),
        [`destroyed network ${OLD} already gone`],
      );
    } finally {
      await tree.remove();
    }
  });

  it("holds the run lock while it destroys, so a run cannot begin under the sweep, and then clears half-made images, half-saved first boots and Ansible's private folders", async () => {
    const { tree, runner, places, libvirt } = await setup({ FAKE_NETWORKS: OLD });
    try {
      // Destroying the network takes a while: long enough to see who holds the run lock.
      await writeFake(
        join(tree.dir, "bin"),
        "virsh",
        FAKE_VIRSH.replace("  domstate) echo running ;;", "  domstate) echo running ;;\n  net-destroy) sleep 2 ;;"),
      );
      const lock = join(tree.dir, "run.lock");
      // A killed image build left its work folder; the finished image next to it stays.
      const cache = join(tree.dir, "cache");
      await mkdir(join(cache, ".build-Xy12Ab", "root"), { recursive: true });
      await writeFile(join(cache, "debian-13-local.qcow2"), "image");
      // A harness killed twice left an apply's private folders; what is not boma-it's stays.
      const shm = join(tree.dir, "shm");
      for (const folder of ["boma-it-tasks-a1B2c3", "boma-it-learnt-Z9y8X7", "boma-it-tasks-elsewhere", "someone-else-x1y2z3"]) {
        await mkdir(join(shm, folder), { recursive: true });
      }
      await writeFile(join(shm, "boma-it-learnt-Z9y8X7", "secrets.jsonl"), '["hunter2"]\n');
      // A run killed while saving its first boot left the guest's memory; a whole saved state stays.
      const states = join(tree.dir, "states");
      await mkdir(join(states, ".saving-boma-it-askari-20261205-010000"), { recursive: true });
      await writeFile(join(states, ".saving-boma-it-askari-20261205-010000", "memory.save"), "guest memory");
      await mkdir(join(states, "askari-0123456789abcdef"), { recursive: true });
      const reaping = reapInTurn({
        engines: [],
        libvirt,
        runner,
        log: silent,
        runsDir: join(tree.dir, "runs"),
        runLock: lock,
        imageDir: cache,
        privateTempDir: shm,
        stateCacheDir: states,
        dryRun: false,
        olderThanSeconds: undefined,
        ...places,
      });
      let seen: string | undefined;
      for (let tries = 0; tries < 50 && !seen; tries += 1) {
        seen = (await runLockHolder(lock))?.purpose;
        if (!seen) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(seen, "reap", "a run starting now is refused: the reap holds the run lock");
      const items = await reaping;
      assert.ok(
        items.some((item) => item.kind === "network" && item.name === OLD && item.action === "destroyed"),
        JSON.stringify(items),
      );
      assert.equal(await runLockHolder(lock), undefined, "and lets go of it");
      assert.deepEqual(await readdir(cache), ["debian-13-local.qcow2"], "the half-made image went, the image stayed");
      assert.deepEqual((await readdir(shm)).sort(), ["boma-it-tasks-elsewhere", "someone-else-x1y2z3"], "the apply's private folders went, nothing else");
      assert.deepEqual(await readdir(states), ["askari-0123456789abcdef"], "the half-saved first boot went, the saved one stayed");
    } finally {
      await tree.remove();
    }
  });

  it("leaves half-made images, half-saved first boots and Ansible's private folders alone while a run holds the run lock (it may be using them)", async () => {
    const { tree, runner, places, libvirt } = await setup({});
    try {
      const lock = join(tree.dir, "run.lock");
      const cache = join(tree.dir, "cache");
      await mkdir(join(cache, ".pull-Ab12Cd"), { recursive: true });
      const shm = join(tree.dir, "shm");
      await mkdir(join(shm, "boma-it-tasks-a1B2c3"), { recursive: true });
      const states = join(tree.dir, "states");
      await mkdir(join(states, ".saving-boma-it-askari-20261205-010000"), { recursive: true });
      const run = await acquireRunLock(lock, "run");
      try {
        await reapInTurn({
          engines: [],
          libvirt,
          runner,
          log: silent,
          runsDir: join(tree.dir, "runs"),
          runLock: lock,
          imageDir: cache,
          privateTempDir: shm,
          stateCacheDir: states,
          dryRun: false,
          olderThanSeconds: undefined,
          ...places,
        });
      } finally {
        await run.release();
      }
      assert.deepEqual(await readdir(states), [".saving-boma-it-askari-20261205-010000"], "a first boot being saved stays");
      assert.deepEqual(await readdir(cache), [".pull-Ab12Cd"]);
      assert.deepEqual(await readdir(shm), ["boma-it-tasks-a1B2c3"], "a running apply's task records stay");
    } finally {
      await tree.remove();
    }
  });

  it("reads the creation time from a run id", () => {
    assert.equal(createdAtOf("boma-it-askari-20261122-034000")?.toISOString(), "2026-11-22T03:40:00.000Z");
    assert.equal(createdAtOf("boma-it-weird"), undefined);
  });
});
