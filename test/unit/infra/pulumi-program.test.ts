/**
 * The pulumi engine's program, without a Pulumi CLI (none can be installed here): under
 * `pulumi.runtime.setMocks` it must declare exactly the plan the direct engine runs, and the
 * shell scripts it gives `local.Command` must make the same calls as the direct engine does.
 * This proves the mapping, not that a real Pulumi engine runs it: that needs a host with the CLI.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { DirectEngine } from "../../../infra/engines/direct.ts";
import { planStack } from "../../../infra/plan.ts";
import { Runner } from "../../../infra/runner.ts";
import { createScript, deleteScript } from "../../../infra/shell.ts";
import { fakeCalls, writeFake } from "../../helpers/fakes.ts";
import { FIXED_KEYS, fixedSpec } from "../../helpers/fixtures.ts";
import { tempTree } from "../../helpers/tmp.ts";

const registered: pulumi.runtime.MockResourceArgs[] = [];
await pulumi.runtime.setMocks(
  {
    newResource: (args) => {
      registered.push(args);
      return { id: `${args.name}-id`, state: args.inputs };
    },
    call: (args) => args.inputs,
  },
  "boma-it",
  "boma-it-askari-20261122-034000",
);
const { declareStack } = await import("../../../infra/engines/pulumi-program.ts");

function settled<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((value) => resolve(value)));
}

describe("pulumi program", () => {
  it("declares one local.Command per plan resource, with the plan's commands and dependencies", async () => {
    const plan = planStack(fixedSpec(), FIXED_KEYS);
    const { resources, declared } = declareStack(plan);
    await Promise.all([...resources.values()].map((resource) => settled(resource.urn)));

    assert.deepEqual(
      declared.map((resource) => resource.name),
      plan.resources.map((resource) => resource.name),
    );
    assert.deepEqual(
      declared.map((resource) => resource.dependsOn),
      plan.resources.map((resource) => resource.dependsOn),
    );
    assert.deepEqual(
      registered.map((args) => args.type),
      plan.resources.map(() => "command:local:Command"),
    );
    for (const resource of plan.resources) {
      const args = registered.find((candidate) => candidate.name === resource.name)!;
      assert.equal(args.inputs.create, createScript(resource.create).script);
      assert.equal(args.inputs.delete, deleteScript(resource.delete).script);
      assert.deepEqual(args.inputs.interpreter, ["/bin/sh", "-c"]);
    }
    // The seed's user-data holds the VM's private host key: secret, and never in a script.
    const seed = declared.find((resource) => resource.name === "seed")!;
    assert.deepEqual(Object.values(seed.environment), [{ secret: true }]);
    assert.doesNotMatch(JSON.stringify(declared.map((resource) => [resource.create, resource.delete])), /SECRET-HOST-KEY/);
  });

  it("its scripts make exactly the calls the direct engine makes, create and delete", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      await writeFake(bin, "virsh", 'cat > /dev/null\ncase " $* " in *" net-destroy "*) echo "error: Network not found" >&2; exit 1 ;; esac\nexit 0');
      await writeFake(bin, "genisoimage", "exit 0");
      await writeFake(bin, "nft", '[ "$1" = -f ] && cat > /dev/null; exit 0');
      const plan = planStack(fixedSpec({ runDir: join(tree.dir, "run"), dnsmasqDir: join(tree.dir, "dnsmasq") }), FIXED_KEYS);
      const env = (log: string) => ({ PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, log) });

      const engine = new DirectEngine(new Runner({ env: env("direct.log") }), join(tree.dir, "stacks"));
      await engine.up(plan);
      await engine.destroy(plan.stack);

      for (const resource of plan.resources) {
        const create = createScript(resource.create);
        execFileSync("/bin/sh", ["-c", create.script], {
          env: { ...env("scripts.log"), ...Object.fromEntries(Object.entries(create.environment).map(([name, { value }]) => [name, value])) },
        });
      }
      for (const resource of [...plan.resources].reverse()) {
        // net-destroy answers "not found" here: ignoreAbsent must hold in the script as in the engine.
        execFileSync("/bin/sh", ["-c", deleteScript(resource.delete).script], { env: env("scripts.log") });
      }
      assert.deepEqual(await fakeCalls(join(tree.dir, "scripts.log")), await fakeCalls(join(tree.dir, "direct.log")));
      assert.ok((await fakeCalls(join(tree.dir, "direct.log"))).length > 15);
    } finally {
      await tree.remove();
    }
  });
});
