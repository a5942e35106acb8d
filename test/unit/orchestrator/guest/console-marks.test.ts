/**
 * Where a machine reads the current boot on the serial console, which holds every boot of the
 * VM's life (appended across reboots): a panic of a boot the run already went past (QEMU's TCG
 * race, reset once) must not end a later wait, for a verb on a kept run (a new process) nor
 * after the guest was restored from a saved state; a panic after the mark still does.
 */
import assert from "node:assert/strict";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { GuestPanicError } from "../../../../orchestrator/guest/machine.ts";
import { fakeDomain, PANICKED_BOOT } from "../../../helpers/fake-domain.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** A console as a run leaves it: a first boot, a reboot whose kernel panicked, the boot after it. */
const CONSOLE = [
  "[    0.000000] Linux version 6.12.57+deb13-cloud-amd64 (first boot)",
  "[  342.738848] reboot: Restarting system",
  "[    0.000000] Linux version 6.12.57+deb13-cloud-amd64 (the reboot)",
  PANICKED_BOOT.trimEnd(),
  "[    0.000000] Linux version 6.12.57+deb13-cloud-amd64 (after the power cycle)",
  "[    5.000000] systemd[1]: Reached target multi-user.target.",
  "",
].join("\r\n");

describe("the current boot on the serial console", () => {
  it("for a machine made for a running VM begins at the last kernel's first line: a panic before it does not count", async () => {
    const tree = await tempTree();
    try {
      const domain = await fakeDomain(tree.dir, { ends: ["restart"], console: CONSOLE });
      // SSH does not answer: the wait polls the console for a panic of the current boot.
      await writeFile(join(tree.dir, "up"), "no\n");
      const unmarked = await domain.machine.waitForSsh(4_000).catch((error: unknown) => error);
      assert.ok(unmarked instanceof GuestPanicError, `read from the start, the old panic ends the wait: ${String(unmarked)}`);
      await domain.machine.markCurrentBoot();
      assert.deepEqual(await domain.machine.currentBootConsole(), [
        "[    0.000000] Linux version 6.12.57+deb13-cloud-amd64 (after the power cycle)",
        "[    5.000000] systemd[1]: Reached target multi-user.target.",
      ]);
      const marked = await domain.machine.waitForSsh(4_000).catch((error: unknown) => error);
      assert.ok(marked instanceof Error && !(marked instanceof GuestPanicError), `marked, the wait runs out on its own: ${String(marked)}`);
    } finally {
      await tree.remove();
    }
  });

  it("after a restore, a panic written since counts, one before does not", async () => {
    const tree = await tempTree();
    try {
      const domain = await fakeDomain(tree.dir, { ends: ["restart"], console: CONSOLE });
      await domain.machine.markNewBoot();
      assert.deepEqual(await domain.machine.currentBootConsole(), []);
      await appendFile(domain.consoleLog, PANICKED_BOOT);
      assert.match((await domain.machine.currentBootConsole()).join("\n"), /Kernel panic - not syncing/);
    } finally {
      await tree.remove();
    }
  });
});
