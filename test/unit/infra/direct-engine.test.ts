import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { join } from "node:path";
import { DirectEngine } from "../../../infra/engines/direct.ts";
import { ProvisionError, TeardownError } from "../../../infra/errors.ts";
import { planStack, type Plan } from "../../../infra/plan.ts";
import { Runner } from "../../../infra/runner.ts";
import { fakeCalls, writeFake } from "../../helpers/fakes.ts";
import { FIXED_KEYS, fixedSpec } from "../../helpers/fixtures.ts";
import { tempTree } from "../../helpers/tmp.ts";

/** A fake virsh: fails the subcommand named in $FAKE_VIRSH_FAIL; "not found" for $FAKE_VIRSH_ABSENT. */
const FAKE_VIRSH = `
sub=""
for arg in "$@"; do case "$arg" in -q|-c|qemu:*) ;; *) sub="$arg"; break ;; esac; done
[ -n "\${FAKE_VIRSH_SLEEP_ON:-}" ] && [ "$sub" = "$FAKE_VIRSH_SLEEP_ON" ] && exec sleep 30
[ "$sub" = "\${FAKE_VIRSH_FAIL:-}" ] && { echo "error: $sub exploded" >&2; exit 1; }
[ "$sub" = "\${FAKE_VIRSH_ABSENT:-}" ] && { echo "error: Network not found: no network with matching name" >&2; exit 1; }
cat > /dev/null
exit 0
`;

async function setup(env: Record<string, string> = {}) {
  const tree = await tempTree();
  const bin = join(tree.dir, "bin");
  await writeFake(bin, "virsh", FAKE_VIRSH);
  await writeFake(bin, "genisoimage", "exit 0");
  await writeFake(bin, "nft", '[ "$1" = -f ] && cat > /dev/null; exit 0');
  const log = join(tree.dir, "calls.log");
  const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log, ...env } });
  const engine = new DirectEngine(runner, join(tree.dir, "stacks"));
  const plan: Plan = planStack(fixedSpec({ runDir: join(tree.dir, "run"), dnsmasqDir: join(tree.dir, "dnsmasq") }), FIXED_KEYS);
  return { tree, runner, engine, plan, calls: () => fakeCalls(log) };
}

/** virsh's subcommands and nft's first words, in order. */
function subcommands(calls: string[][]): string[] {
  return calls.flatMap((call) => {
    if (call[0] === "nft") return [`nft ${call.slice(1, 3).join(" ")}`];
    if (call[0] !== "virsh") return [];
    return [call.find((arg, index) => index > 0 && !["-q", "-c"].includes(arg) && !arg.startsWith("qemu:"))!];
  });
}

describe("DirectEngine", () => {
  it("creates in order, keeps a ledger, lists the stack, and deletes in reverse", async () => {
    const { tree, engine, plan, calls } = await setup();
    try {
      const outputs = await engine.up(plan);
      assert.equal(outputs.runId, plan.stack);
      assert.deepEqual(subcommands(await calls()), [
        "nft -f -",
        "net-create",
        "nwfilter-define",
        "pool-define-as",
        "pool-build",
        "pool-start",
        "vol-create",
        "vol-create-as",
        "vol-upload",
        "define",
        "start",
      ]);
      const ledger = await engine.read(plan.stack);
      assert.equal(ledger?.state, "up");
      assert.deepEqual(
        ledger?.resources.map((resource) => `${resource.name}:${resource.state}`),
        ["egress:created", "network:created", "isolation:created", "pool:created", "overlay:created", "seed:created", "domain:created"],
      );
      assert.doesNotMatch(JSON.stringify(ledger), /SECRET-HOST-KEY/, "the ledger never holds stdin");
      assert.deepEqual(
        (await engine.list()).map((stack) => stack.stack),
        [plan.stack],
      );

      const before = (await calls()).length;
      await engine.destroy(plan.stack);
      assert.deepEqual(subcommands((await calls()).slice(before)), [
        "destroy",
        "undefine",
        "vol-delete",
        "vol-delete",
        "pool-refresh",
        "vol-list",
        "pool-destroy",
        "pool-delete",
        "pool-undefine",
        "nwfilter-undefine",
        "net-destroy",
        "nft delete table",
      ]);
      assert.equal(await engine.read(plan.stack), undefined, "the ledger is gone");
      assert.deepEqual(await engine.list(), []);
    } finally {
      await tree.remove();
    }
  });

  it("rolls back what it made when a step fails, and says which", async () => {
    const { tree, engine, plan, calls } = await setup({ FAKE_VIRSH_FAIL: "start" });
    try {
      await assert.rejects(engine.up(plan), (error: unknown) => {
        assert.ok(error instanceof ProvisionError);
        assert.equal(error.rolledBack, true);
        assert.match(
          error.message,
          /creating domain failed; everything created so far was deleted again: `virsh .* start boma-it-askari-20261122-034000` exited with 1/,
        );
        return true;
      });
      const virsh = subcommands(await calls());
      assert.deepEqual(virsh.slice(virsh.indexOf("start") + 1), [
        "destroy",
        "undefine",
        "vol-delete",
        "vol-delete",
        "pool-refresh",
        "vol-list",
        "pool-destroy",
        "pool-delete",
        "pool-undefine",
        "nwfilter-undefine",
        "net-destroy",
        "nft delete table",
      ]);
      assert.equal(await engine.read(plan.stack), undefined);
    } finally {
      await tree.remove();
    }
  });

  it("never deletes an object it did not make: a network of the same name that already exists stays", async () => {
    const { tree, engine, plan, calls } = await setup({ FAKE_VIRSH_FAIL: "net-create" });
    try {
      await assert.rejects(engine.up(plan), (error: unknown) => {
        assert.ok(error instanceof ProvisionError);
        assert.match(error.message, /^creating network failed; everything created so far was deleted again/);
        return true;
      });
      assert.deepEqual(
        subcommands(await calls()),
        ["nft -f -", "net-create", "nft delete table"],
        "no net-destroy of somebody else's network; the run's own egress table goes",
      );
      assert.equal(await engine.read(plan.stack), undefined);
    } finally {
      await tree.remove();
    }
  });

  it("treats an object that is already gone as deleted", async () => {
    const { tree, engine, plan } = await setup({ FAKE_VIRSH_ABSENT: "net-destroy" });
    try {
      await engine.up(plan);
      await engine.destroy(plan.stack);
      assert.equal(await engine.read(plan.stack), undefined);
    } finally {
      await tree.remove();
    }
  });

  it("keeps the ledger of what it could not delete and reports each item", async () => {
    const { tree, engine, plan } = await setup();
    try {
      await engine.up(plan);
      const failing = new DirectEngine(
        new Runner({
          env: { ...process.env, PATH: `${join(tree.dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "calls.log"), FAKE_VIRSH_FAIL: "vol-delete" },
        }),
        join(tree.dir, "stacks"),
      );
      await assert.rejects(failing.destroy(plan.stack), (error: unknown) => {
        assert.ok(error instanceof TeardownError);
        assert.equal(error.failures.length, 2, "both volumes fail; the domain, pool and network go");
        assert.match(error.failures[0]!, /^seed boma-it-askari-20261122-034000-seed\.iso: `virsh .*vol-delete/);
        return true;
      });
      const ledger = await engine.read(plan.stack);
      assert.deepEqual(
        ledger?.resources.map((resource) => resource.name),
        ["overlay", "seed"],
        "only what is left stays listed",
      );
    } finally {
      await tree.remove();
    }
  });

  it("stops on abort, rolls back, and says it was interrupted", async () => {
    const { tree, engine, plan } = await setup({ FAKE_VIRSH_SLEEP_ON: "start" });
    try {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 500);
      await assert.rejects(engine.up(plan, { signal: controller.signal }), (error: unknown) => {
        assert.ok(error instanceof ProvisionError);
        assert.equal(error.aborted, true);
        assert.equal(error.rolledBack, true);
        assert.match(error.message, /^creation was interrupted; everything created so far was deleted again/);
        return true;
      });
      assert.equal(await engine.read(plan.stack), undefined);
    } finally {
      await tree.remove();
    }
  });
});
