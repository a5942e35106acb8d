/** `--engine auto|pulumi|direct`: which engine runs, the one line that says why, and refusals. */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { chooseEngine } from "../../../../orchestrator/host/engine-choice.ts";
import { Runner } from "../../../../infra/runner.ts";
import { runCli } from "../../../helpers/cli.ts";
import { tempTree } from "../../../helpers/tmp.ts";

describe("engine choice", () => {
  it("auto picks pulumi when a pulumi CLI is on PATH, direct when none is, and says which and why", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "pulumi", "bin");
      await mkdir(bin, { recursive: true });
      await copyFile(new URL("../../../helpers/fake-pulumi.py", import.meta.url).pathname, join(bin, "pulumi"));
      await chmod(join(bin, "pulumi"), 0o755);
      const withCli = await chooseEngine("auto", new Runner({ env: { PATH: `${bin}:/usr/bin:/bin` } }), join(tree.dir, "stacks"));
      assert.equal(withCli.engine.name, "pulumi");
      assert.equal(withCli.reason, `engine: pulumi (auto: a pulumi CLI is on PATH: ${join(bin, "pulumi")})`);
      const without = await chooseEngine("auto", new Runner({ env: { PATH: "/usr/bin:/bin" } }), join(tree.dir, "stacks"));
      assert.equal(without.engine.name, "direct");
      assert.equal(without.reason, "engine: direct (auto: no pulumi CLI on PATH)");
      const direct = await chooseEngine("direct", new Runner({ env: { PATH: `${bin}:/usr/bin:/bin` } }), join(tree.dir, "stacks"));
      assert.equal(direct.engine.name, "direct");
    } finally {
      await tree.remove();
    }
  });

  it("--engine pulumi without a CLI is refused (exit 3) before libvirt is touched, with the offline install", async () => {
    const result = await runCli(["run", "askari", "--engine", "pulumi"], {
      PATH: `${join(process.execPath, "..")}:/usr/bin:/bin`,
      LIBVIRT_DEFAULT_URI: "test:///nonexistent",
    });
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /--engine pulumi: no pulumi CLI on PATH/);
    assert.match(result.stderr, /pulumi plugin install resource command 4\.5\.0 --file /);
    assert.match(result.stderr, /or run with --engine direct/);
    assert.doesNotMatch(result.stderr, /libvirt/i);
  });
});
