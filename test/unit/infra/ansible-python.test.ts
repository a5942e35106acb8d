/**
 * The Python that runs Ansible's modules on the VM (infra/guest/ansible_python.py), run here by
 * the real python3 against a real zip payload: it keeps the compile of a payload's source and
 * uses it again, names the payload's own file in a traceback, compiles afresh when a kept
 * entry is unreadable, and is python3 itself for anything but a program on stdin or a file.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { GUEST_ANSIBLE_PYTHON, seedFiles } from "../../../infra/seed.ts";
import { FIXED_KEYS, fixedSpec } from "../../helpers/fixtures.ts";
import { pyyamlLoad } from "../../helpers/pyyaml.ts";
import { tempTree } from "../../helpers/tmp.ts";

const SOURCE = join(import.meta.dirname, "..", "..", "..", "infra", "guest", "ansible_python.py");

/** The wrapper with its cache in `dir`, a payload zip holding `mod.py`, and a way to run a program through it. */
async function setup(dir: string) {
  const cache = join(dir, "cache");
  const wrapper = join(dir, "python3");
  await writeFile(wrapper, (await readFile(SOURCE, "utf8")).replace("/var/cache/boma-it/ansible-modules", cache), { mode: 0o755 });
  // A payload as AnsiballZ makes one: a zip in a folder of its own for each task.
  const payload = async (task: string) => {
    const folder = join(dir, `ansible_ping_payload_${task}`);
    await mkdir(folder);
    const zip = join(folder, "ansible_ping_payload.zip");
    const make = `import zipfile\nwith zipfile.ZipFile(${JSON.stringify(zip)}, "w") as z:\n    z.writestr("mod.py", "X = 1\\ndef boom():\\n    raise ValueError('boom')\\n")\n`;
    execFileSync("python3", ["-c", make]);
    return zip;
  };
  const run = (program: string, args: string[] = []) => spawnSync("python3", [wrapper, ...args], { input: program, encoding: "utf8" });
  return { cache, wrapper, payload, run };
}

describe("the Python that runs Ansible's modules on the VM", () => {
  it("is in the seed, root's and executable, where the confinement points Ansible", () => {
    const user = pyyamlLoad(seedFiles(fixedSpec(), FIXED_KEYS).userData) as { write_files: Record<string, string>[] };
    const file = user.write_files.find((entry) => entry.path === GUEST_ANSIBLE_PYTHON);
    assert.equal(file?.path, GUEST_ANSIBLE_PYTHON);
    assert.equal(file?.owner, "root:root");
    assert.equal(file?.permissions, "0755");
    assert.match(file?.content ?? "", /^#!\/usr\/bin\/python3\n/);
  });

  it("keeps the compile of a payload's source and uses it for the next payload of the same source", async (t) => {
    const tree = await tempTree();
    t.after(() => tree.remove());
    const { cache, payload, run } = await setup(tree.dir);
    const program = (zip: string) => `import sys; sys.path.insert(0, ${JSON.stringify(zip)}); import mod; print(mod.X, __name__, sys.argv)`;
    const first = run(program(await payload("a")));
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, "1 __main__ ['']\n", "a program on stdin runs as python3 runs it");
    const kept = await readdir(cache);
    assert.equal(kept.length, 1);
    // The kept entry is what runs next: made to say 2, the next task's import says 2.
    execFileSync("python3", ["-c", `import marshal; marshal.dump(compile("X = 2", "mod.py", "exec"), open(${JSON.stringify(join(cache, kept[0]!))}, "wb"))`]);
    assert.equal(run(program(await payload("b"))).stdout, "2 __main__ ['']\n");
    // Unreadable, it is compiled afresh.
    await writeFile(join(cache, kept[0]!), "not marshal data");
    assert.equal(run(program(await payload("c"))).stdout, "1 __main__ ['']\n");
  });

  it("names the payload's own file in a traceback, passes exit codes, and is python3 itself for other arguments", async (t) => {
    const tree = await tempTree();
    t.after(() => tree.remove());
    const { payload, run } = await setup(tree.dir);
    run(`import sys; sys.path.insert(0, ${JSON.stringify(await payload("a"))}); import mod`);
    const second = await payload("b");
    const failed = run(`import sys; sys.path.insert(0, ${JSON.stringify(second)}); import mod; mod.boom()`);
    assert.equal(failed.status, 1);
    assert.match(failed.stderr, new RegExp(`File "${second.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/mod\\.py", line 3, in boom\\nValueError: boom`));
    assert.equal(run("import sys; sys.exit(3)").status, 3);
    const passed = run("", ["-c", "import sys; print(sys.argv)", "a"]);
    assert.equal(passed.stdout, "['-c', 'a']\n");
    const script = join(tree.dir, "module.py");
    await writeFile(script, "import sys; print(__name__, sys.argv, sys.path[0])\n");
    assert.equal(run("", [script, "args"]).stdout, `__main__ ['${script}', 'args'] ${tree.dir}\n`);
  });
});
